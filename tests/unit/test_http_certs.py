"""The per-install certificate looks like the persona's own: IIS self-signed or Debian snakeoil."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from muscipula import certs
from muscipula import config as configmod
from muscipula.persona import resolve


def cert_for(preset: str, tmp_path) -> tuple[x509.Certificate, str]:
    persona = resolve(configmod.load(extra={"persona": {"preset": preset}}), tmp_path)
    _key, path = certs.ensure(persona)
    return x509.load_pem_x509_certificate(path.read_bytes()), persona.fqdn


def test_windows_cert_is_iis_self_signed(tmp_path):
    cert, fqdn = cert_for("windows-2008r2", tmp_path)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == fqdn and cn.startswith("WIN-") and cert.issuer == cert.subject
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 365
    assert cert.public_key().key_size == 2048
    ext = {e.oid._name: e for e in cert.extensions}
    assert "subjectAltName" not in ext
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    # a Windows server certificate's a0: what GnuTLS needs for ECDHE, nothing for a CA
    assert ku.digital_signature and ku.key_encipherment
    assert not (ku.data_encipherment or ku.key_cert_sign or ku.crl_sign or ku.key_agreement)


def test_debian_cert_is_snakeoil_like(tmp_path):
    cert, fqdn = cert_for("debian-12", tmp_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == fqdn
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 3650
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [fqdn]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.value.ca is False and bc.critical is False
    text = cert.subject.rfc4514_string() + cert.issuer.rfc4514_string()
    for giveaway in ("dionaea", "Nepenthes", "muscipula", "localhost", "Internet Widgits"):
        assert giveaway not in text


def _reissue(path, key_path, usage: x509.KeyUsage | None) -> bytes:
    """The kept certificate re-signed with `usage` (None: no KeyUsage), as an older release."""
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(cert.public_key()).serial_number(cert.serial_number)
               .not_valid_before(cert.not_valid_before_utc)
               .not_valid_after(cert.not_valid_after_utc))
    if usage is not None:
        builder = builder.add_extension(usage, False)
    pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    return pem


def _usage(signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(signature, False, True, True, False, False, False, False, False)


def test_old_windows_cert_without_signature_usage_is_made_again(tmp_path, caplog):
    persona = resolve(configmod.load(extra={"persona": {"preset": "windows-2008r2"}}),
                      tmp_path)
    key_path, path = certs.ensure(persona)
    old = _reissue(path, key_path, _usage(False))  # the 0x30 an older release made
    assert certs.unusable(key_path, path) == "its KeyUsage lacks digitalSignature"
    with caplog.at_level("WARNING", logger="muscipula.certs"):
        certs.ensure(persona)
    assert "made again: its KeyUsage lacks digitalSignature" in caplog.text
    new = x509.load_pem_x509_certificate(path.read_bytes())
    assert path.read_bytes() != old
    assert new.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    # renewed now, not backdated: a scanner that saw the old one sees a fresh issue
    age = dt.datetime.now(dt.UTC) - new.not_valid_before_utc
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=5)
    assert certs.unusable(key_path, path) is None


def test_usable_kept_certs_are_never_remade(tmp_path, caplog):
    persona = resolve(configmod.load(extra={"persona": {"preset": "windows-2008r2"}}),
                      tmp_path)
    key_path, path = certs.ensure(persona)
    for usage in (None, _usage(True)):  # no KeyUsage at all, or one allowing signatures
        kept = _reissue(path, key_path, usage)
        with caplog.at_level("WARNING", logger="muscipula.certs"):
            certs.ensure(persona)
        assert path.read_bytes() == kept and "made again" not in caplog.text


def test_unreadable_or_mismatched_cert_is_made_again(tmp_path):
    persona = resolve(configmod.load(extra={"persona": {"preset": "debian-12"}}), tmp_path)
    key_path, path = certs.ensure(persona)
    other_key, _ = certs.ensure(resolve(configmod.load(
        extra={"persona": {"preset": "debian-12"}}), tmp_path / "other"))
    key_path.write_bytes(other_key.read_bytes())
    assert certs.unusable(key_path, path) == "key does not match the certificate"
    certs.ensure(persona)
    assert certs.unusable(key_path, path) is None
    path.write_bytes(b"garbage")
    assert certs.unusable(key_path, path).startswith("unreadable")
    certs.ensure(persona)
    assert certs.unusable(key_path, path) is None


def test_an_operators_ecdsa_cert_is_kept_and_odd_files_never_crash_the_start(tmp_path):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    persona = resolve(configmod.load(extra={"persona": {"preset": "debian-12"}}), tmp_path)
    key_path, path = certs.ensure(persona)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.org")])
    now = dt.datetime.now(dt.UTC)
    mine = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=90)).sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    path.write_bytes(mine)
    assert certs.unusable(key_path, path) is None
    certs.ensure(persona)
    assert path.read_bytes() == mine
    # two KeyUsage extensions: cryptography raises DuplicateExtension, not ValueError
    usage = _usage(True)
    rsa_key, _ = certs.ensure(resolve(configmod.load(
        extra={"persona": {"preset": "debian-12"}}), tmp_path / "other"))
    signer = serialization.load_pem_private_key(rsa_key.read_bytes(), None)
    twice = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(signer.public_key()).serial_number(8).not_valid_before(now)
             .not_valid_after(now + dt.timedelta(days=90)).add_extension(usage, False))
    twice._extensions.append(twice._extensions[0])  # the builder itself refuses a second
    key_path.write_bytes(rsa_key.read_bytes())
    path.write_bytes(twice.sign(signer, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM))
    assert certs.unusable(key_path, path).startswith("unreadable")
    certs.ensure(persona)
    assert certs.unusable(key_path, path) is None
