"""Per-service TLS: MySQL 8 shows mysqld's own certificates and suites, not the web server's."""

from __future__ import annotations

import ssl
import subprocess
import warnings

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from muscipula import certs, tls_native
from muscipula import config as configmod
from muscipula.persona import resolve

MYSQL_TLS12 = [
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES256-CCM",
    "ECDHE-ECDSA-AES128-CCM", "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES256-CCM", "DHE-RSA-AES128-CCM", "DHE-RSA-CHACHA20-POLY1305",
]
MYSQL_TLS13 = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
               "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256"]


def persona(tmp_path, preset: str = "debian-12"):
    return resolve(configmod.load(extra={"persona": {"preset": preset}}), tmp_path)


def cn(name: x509.Name) -> str:
    return name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_profiles_per_service(tmp_path):
    deb = persona(tmp_path / "d")
    assert certs.profile_for(deb, "mysql")["identity"] == "mysql"
    assert certs.profile_for(deb, "mysql")["version"] == "8.0.40"
    # vsftpd and nginx on one Debian host both use the host's snakeoil certificate
    assert certs.profile_for(deb, "ftp") == certs.profile_for(deb, "http") == deb.facts["tls"]
    win = persona(tmp_path / "w", "windows-2008r2")
    for service in ("ftp", "http", "mysql"):
        assert certs.profile_for(win, service) == win.facts["tls"]


def test_one_context_per_distinct_profile(tmp_path):
    tls = certs.Contexts(persona(tmp_path))
    http, ftp, mysql = (tls.for_service(s) for s in ("http", "ftp", "mysql"))
    assert http is ftp and mysql is not http and len(tls) == 2
    assert tls.for_service("mysql") is mysql and tls.getter("mysql")() is mysql


def test_mysql_auto_generated_chain(tmp_path):
    p = persona(tmp_path)
    key_path, cert_path, ca_path = certs.ensure_mysql(p, "8.0.40")
    server, ca = load(cert_path), load(ca_path)
    assert cn(ca.subject) == cn(ca.issuer) == "MySQL_Server_8.0.40_Auto_Generated_CA_Certificate"
    assert cn(server.subject) == "MySQL_Server_8.0.40_Auto_Generated_Server_Certificate"
    assert server.issuer == ca.subject
    # mysqld numbers them 1 and 2 on every install; version 3, CN only
    assert (ca.serial_number, server.serial_number) == (1, 2)
    assert server.version == x509.Version.v3 and len(server.subject) == 1
    for cert in (server, ca):
        assert cert.public_key().key_size == 2048
        assert cert.signature_hash_algorithm.name == "sha256"
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 3650
        [ext] = list(cert.extensions)  # basicConstraints only, critical
        assert ext.critical and isinstance(ext.value, x509.BasicConstraints)
    assert ca.extensions[0].value.ca and not server.extensions[0].value.ca
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes, padding.PKCS1v15(),
                           server.signature_hash_algorithm)
    # the same files on the next start; other keys on another install
    again = certs.ensure_mysql(p, "8.0.40")
    assert again == (key_path, cert_path, ca_path) and load(cert_path) == server
    other = load(certs.ensure_mysql(persona(tmp_path / "other"), "8.0.40")[1])
    assert other.public_key() != server.public_key()
    assert len(server.public_bytes(Encoding.DER)) == 779  # as mysqld's


def test_long_version_drops_suffix():
    assert certs.mysql_names("8.0.40-0ubuntu0.24.04.1-with-a-very-long-suffix") == (
        "MySQL_Server_Auto_Generated_CA_Certificate",
        "MySQL_Server_Auto_Generated_Server_Certificate")


def test_mysql_context_offers_mysqld_suites(tmp_path):
    ctx = certs.Contexts(persona(tmp_path)).for_service("mysql")
    names = [c["name"] for c in ctx.get_ciphers()]
    assert names == MYSQL_TLS13 + MYSQL_TLS12
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_OPTIONAL  # asks for a client certificate, as mysqld
    host = certs.Contexts(persona(tmp_path)).for_service("http")
    assert [c["name"] for c in host.get_ciphers()][:3] == [
        "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]


def test_ffdhe2048_is_the_named_group(tmp_path):
    path = certs.ensure_dh(persona(tmp_path), "ffdhe2048")
    out = subprocess.run(["openssl", "dhparam", "-in", str(path), "-noout", "-text"],
                         capture_output=True, text=True, timeout=10)
    assert "GROUP: ffdhe2048" in out.stdout, out.stdout + out.stderr
    for group in certs.FFDHE:  # byte for byte what openssl dhparam writes for the group
        pem = certs.dh_params_pem(group)
        again = subprocess.run(["openssl", "dhparam", "-outform", "PEM"], input=pem,
                               capture_output=True, timeout=10)
        assert again.stdout == pem, again.stderr
    assert path.read_bytes() == certs.dh_params_pem("ffdhe2048")


def test_contexts_use_no_deprecated_crypto(tmp_path):
    # cryptography's finite-field DH warns (CryptographyDeprecationWarning is a UserWarning,
    # so -W error::DeprecationWarning alone would not see it): every context builds silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for preset in ("debian-12", "windows-2008r2"):
            tls = certs.Contexts(persona(tmp_path / preset, preset))
            for service in ("http", "ftp", "mysql"):
                tls.for_service(service)
    dhe = certs.Contexts(persona(tmp_path / "debian-12")).for_service("mysql")
    assert "DHE-RSA-AES128-GCM-SHA256" in [c["name"] for c in dhe.get_ciphers()]


def test_native_setters_apply_and_refuse_bad_input():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert tls_native.set_groups(ctx, "P-256:P-384")
    assert tls_native.set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256")
    assert next(c["name"] for c in ctx.get_ciphers()) == "TLS_AES_128_GCM_SHA256"
    assert not tls_native.set_groups(ctx, "no-such-group")
