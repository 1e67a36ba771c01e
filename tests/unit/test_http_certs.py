"""The per-install certificate looks like the persona's own: IIS self-signed or Debian snakeoil."""

from __future__ import annotations

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
    assert ku.key_encipherment and ku.data_encipherment and not ku.digital_signature


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
