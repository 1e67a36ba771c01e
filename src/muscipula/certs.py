"""The per-install TLS certificate, made at first start to look like the persona's own.

Windows makes a one-year self-signed certificate named after the host; Debian's
ssl-cert makes a ten-year "snakeoil" one, also named after the host. Serial,
key and dates are random per install so no two sensors share a fingerprint.
"""

from __future__ import annotations

import datetime as dt
import secrets
import ssl
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from muscipula.persona import PersonaView
from muscipula.secrets import atomic_write


def _make(persona: PersonaView, key_path: Path, cert_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, persona.fqdn)])
    # Made some weeks to months ago, as an installed host's certificate would be.
    age = dt.timedelta(days=20 + secrets.randbelow(200), seconds=secrets.randbelow(86400))
    not_before = dt.datetime.now(dt.UTC).replace(microsecond=0) - age
    days = int(persona.facts.get("cert_validity_days", 365))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
    )
    if persona.os_family == "windows":
        # IIS Manager's "Create Self-Signed Certificate": no SAN, key and data
        # encipherment, server authentication only
        builder = builder.add_extension(
            x509.KeyUsage(False, False, True, True, False, False, False, False, False), False
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False
        )
    else:
        # make-ssl-cert (Debian ssl-cert): CA:FALSE, the host name as SAN, OpenSSL's key id
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), False
        ).add_extension(
            x509.SubjectAlternativeName([x509.DNSName(persona.fqdn)]), False
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    cert = builder.sign(key, hashes.SHA256())
    key_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure(persona: PersonaView) -> tuple[Path, Path]:
    """(key, cert) paths, generating them on first start."""
    folder = persona.state_dir / "tls"
    key_path, cert_path = folder / "server.key", folder / "server.crt"
    if not (key_path.exists() and cert_path.exists()):
        _make(persona, key_path, cert_path)
    return key_path, cert_path


def server_context(persona: PersonaView) -> ssl.SSLContext:
    """A server context offering what the persona's own TLS stack offers.

    The library's defaults (TLS 1.3, a short ECDHE-only list) are a fingerprint of
    their own: an IIS 7.5 host must look like SChannel on 2008 R2, a Debian host like
    nginx over the system OpenSSL (`tls` in personas.yaml).
    """
    key_path, cert_path = ensure(persona)
    profile = dict(persona.facts.get("tls") or {})
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # ciphers first: the security level they set decides which versions may be enabled
    ciphers = profile.get("ciphers")
    if ciphers:
        ctx.set_ciphers(ciphers if isinstance(ciphers, str) else ":".join(ciphers))
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: a 2008 R2 host still has them
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion[profile.get("min_version", "TLSv1_2")]
        ctx.maximum_version = ssl.TLSVersion[profile.get("max_version", "MAXIMUM_SUPPORTED")]
    if profile.get("curve"):
        ctx.set_ecdh_curve(profile["curve"])
    ctx.load_cert_chain(cert_path, key_path)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if not profile.get("session_tickets", True):
        ctx.options |= ssl.OP_NO_TICKET
    return ctx
