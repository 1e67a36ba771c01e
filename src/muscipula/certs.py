"""Per-install TLS certificates and the server contexts each service offers.

A real host does not show one TLS face on every port: nginx on 443 and vsftpd's
AUTH TLS use the host's own certificate (Windows: a one-year self-signed one
named after the host; Debian: ssl-cert's ten-year "snakeoil", also named after
the host), while MySQL 8 serves the CA and server certificates it generated in
its data directory on first start, with its own built-in cipher list. So each
service's product in personas.yaml may carry a `tls_profile`; a service without
one gets the host's (`tls` at the persona's top level).

Keys, serials and dates are made once per install under the state dir `tls/`
and reused, so no two sensors share a fingerprint and restarts keep it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from muscipula import tls_native
from muscipula.persona import PersonaView
from muscipula.secrets import atomic_write

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ identities


def _key_bytes(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _installed_ago() -> dt.datetime:
    """Made some weeks to months ago, as an installed host's files would be."""
    age = dt.timedelta(days=20 + secrets.randbelow(200), seconds=secrets.randbelow(86400))
    return dt.datetime.now(dt.UTC).replace(microsecond=0) - age


def _make(persona: PersonaView, key_path: Path, cert_path: Path,
          not_before: dt.datetime | None = None) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, persona.fqdn)])
    not_before = not_before or _installed_ago()
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
        # a Windows server certificate (IIS self-signed, AD CS "Web Server"): no SAN,
        # digital signature and key encipherment, server authentication only. Without
        # digitalSignature GnuTLS clients refuse the ECDHE suites SChannel prefers.
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=True, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False), False
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
    atomic_write(key_path, _key_bytes(key))
    atomic_write(cert_path, _pem(cert), 0o644)


def unusable(key_path: Path, cert_path: Path) -> str | None:
    """Why a kept host certificate cannot serve the handshakes its profile offers, or None.

    An expired or otherwise odd certificate is kept (a real host keeps serving its
    own), and so is one of another kind than ours (an operator's ECDSA one). One that
    does not parse, does not match its key, or whose KeyUsage forbids signatures is
    not: strict clients (GnuTLS) abort every ECDHE, DHE and TLS 1.3 handshake with the
    last, as certificates made by older releases for Windows did. A file that cannot be
    read for lack of permission is an error, not a reason to make a new one.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        public = cert.public_key()
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except PermissionError:
        raise
    except x509.ExtensionNotFound:
        usage = None
    except Exception as exc:  # cryptography raises several kinds for odd files
        return f"unreadable ({exc.__class__.__name__})"
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != public.public_bytes(*raw):
        return "key does not match the certificate"
    if usage is not None and not usage.digital_signature:
        return "its KeyUsage lacks digitalSignature"
    return None


def ensure(persona: PersonaView) -> tuple[Path, Path]:
    """(key, cert) paths of the host's own certificate, generating them on first start.

    A kept one is reused as is unless `unusable`: then it is made again, dated now (a
    host whose certificate was just renewed), and the reason logged.
    """
    folder = persona.state_dir / "tls"
    key_path, cert_path = folder / "server.key", folder / "server.crt"
    if not (key_path.exists() and cert_path.exists()):
        _make(persona, key_path, cert_path)
    elif (why := unusable(key_path, cert_path)) is not None:
        log.warning("host certificate %s made again: %s", cert_path, why)
        _make(persona, key_path, cert_path, dt.datetime.now(dt.UTC).replace(microsecond=0))
    return key_path, cert_path


def mysql_names(version: str) -> tuple[str, str]:
    """(CA, server) common names mysqld gives its auto-generated certificates.

    Past 64 characters the server drops the version, as mysqld does.
    """
    ca = f"MySQL_Server_{version}_Auto_Generated_CA_Certificate"
    server = f"MySQL_Server_{version}_Auto_Generated_Server_Certificate"
    if len(ca) > 64 or len(server) > 64:
        return ("MySQL_Server_Auto_Generated_CA_Certificate",
                "MySQL_Server_Auto_Generated_Server_Certificate")
    return ca, server


def _mysql_cert(cn: str, serial: int, key: rsa.RSAPrivateKey, not_before: dt.datetime,
                issuer: x509.Certificate | None, signer: rsa.RSAPrivateKey) -> x509.Certificate:
    # mysqld's X509_gen: v3, CN only, ten years of 365 days from generation, one critical
    # basicConstraints extension and nothing else, sha256WithRSAEncryption
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        .sign(signer, hashes.SHA256())
    )


def ensure_mysql(persona: PersonaView, version: str) -> tuple[Path, Path, Path]:
    """(server key, server cert, CA cert) as mysqld --initialize leaves them in its data dir.

    mysqld numbers them 1 (CA), 2 (server), 3 (client) on every install; what differs
    per install is the keys and the moment they were made, both drawn here once.
    """
    folder = persona.state_dir / "tls" / f"mysql-{version}"
    key_path, cert_path, ca_path = (folder / "server-key.pem", folder / "server-cert.pem",
                                    folder / "ca.pem")
    if key_path.exists() and cert_path.exists() and ca_path.exists():
        return key_path, cert_path, ca_path
    ca_cn, server_cn = mysql_names(version)
    made = _installed_ago()
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _mysql_cert(ca_cn, 1, ca_key, made, None, ca_key)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _mysql_cert(server_cn, 2, key, made, ca, ca_key)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "ca-key.pem", _key_bytes(ca_key))
    atomic_write(key_path, _key_bytes(key))
    atomic_write(cert_path, _pem(cert), 0o644)
    atomic_write(ca_path, _pem(ca), 0o644)
    return key_path, cert_path, ca_path


def ensure_mssql(persona: PersonaView, bits: int, digest: str, started: dt.datetime,
                 renew: bool = True) -> tuple[Path, Path]:
    """(key, cert) of SQL Server's SSL_Self_Signed_Fallback, as sqlservr makes it.

    With no certificate configured SQL Server makes one at every service start: a
    fresh RSA key (1024 bits up to 2014, 2048 from 2016, 3072 from 2022), subject and
    issuer CN=SSL_Self_Signed_Fallback as a BMPString, a 16-byte serial, no extensions,
    valid thirty years from the start. `renew` False keeps the one made first instead.
    """
    from cryptography.x509.name import _ASN1Type

    folder = persona.state_dir / "tls" / "mssql"
    key_path, cert_path = folder / "fallback.key", folder / "fallback.crt"
    if not renew and key_path.exists() and cert_path.exists():
        return key_path, cert_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SSL_Self_Signed_Fallback",
                                         _type=_ASN1Type.BMPString)])
    serial = bytearray(secrets.token_bytes(16))
    serial[0] = (serial[0] & 0x7F) or 0x01  # positive and a full 16 bytes, as CryptoAPI's
    start = started.astimezone(dt.UTC).replace(microsecond=0)
    end = start.replace(year=start.year + 30) if not (start.month == 2 and start.day == 29) \
        else start + dt.timedelta(days=365 * 30 + 7)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(serial, "big"))
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    if digest == "sha1":
        cert = _resign_sha1(cert, key)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(key_path, _key_bytes(key))
    atomic_write(cert_path, _pem(cert), 0o644)
    return key_path, cert_path


def _rsa_alg(n: int) -> bytes:
    """AlgorithmIdentifier of PKCS#1 signature `n` (1.2.840.113549.1.1.n), NULL params."""
    oid = bytes([0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 1, n])
    return _der(0x30, _der(0x06, oid) + b"\x05\x00")


def _resign_sha1(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> x509.Certificate:
    """The same certificate signed sha1WithRSAEncryption, as older Windows signs it.

    cryptography's builder refuses SHA-1; both algorithm identifiers have the same
    length, so the TBS part is patched in place and signed directly.
    """
    from cryptography.hazmat.primitives.asymmetric import padding

    sha256_rsa, sha1_rsa = _rsa_alg(11), _rsa_alg(5)
    tbs = cert.tbs_certificate_bytes.replace(sha256_rsa, sha1_rsa, 1)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    der = _der(0x30, tbs + sha1_rsa + _der(0x03, b"\0" + signature))
    return x509.load_der_x509_certificate(der)


# ------------------------------------------------------------------ DH groups


def _ffdhe_prime(bits: int, offset: int) -> int:
    """RFC 7919's prime: 2^b - 2^(b-64) + (floor(2^(b-130) * e) + offset) * 2^64 - 1."""
    frac = bits - 130
    guard = 64
    one = 1 << (frac + guard)
    e, term, k = 0, one, 0
    while term:
        e += term
        k += 1
        term //= k
    return (1 << bits) - (1 << (bits - 64)) + ((e >> guard) + offset) * (1 << 64) - 1


#: RFC 7919 groups by name: (bits, offset)
FFDHE = {"ffdhe2048": (2048, 560316), "ffdhe3072": (3072, 2625351)}


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _der_uint(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))  # sign byte kept


def dh_params_pem(group: str) -> bytes:
    """PKCS#3 DHparams (p, g=2) of a named group, as `openssl dhparam` writes them.

    Encoded here rather than through cryptography's finite-field DH objects, which are
    deprecated: the bytes are only ever handed to OpenSSL (SSLContext.load_dh_params).
    """
    bits, offset = FFDHE[group]
    der = _der(0x30, _der_uint(_ffdhe_prime(bits, offset)) + _der_uint(2))
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "\n".join(["-----BEGIN DH PARAMETERS-----", *lines,
                      "-----END DH PARAMETERS-----", ""]).encode()


def ensure_dh(persona: PersonaView, group: str) -> Path:
    """A PEM file with a named RFC 7919 group, for the DHE suites a server offers."""
    path = persona.state_dir / "tls" / f"{group}.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, dh_params_pem(group), 0o644)
    return path


# ------------------------------------------------------------------ profiles


def profile_for(persona: PersonaView, service: str) -> dict[str, Any]:
    """The TLS profile `service` serves: its product's `tls_profile`, else the host's `tls`."""
    own = persona.product(service).get("tls_profile")
    if isinstance(own, dict):
        profile = dict(own)
        if profile.get("identity") == "mysql":
            profile.setdefault("version", persona.product(service).get("version", ""))
        return profile
    return dict(persona.facts.get("tls") or {})


def build(persona: PersonaView, profile: dict[str, Any]) -> ssl.SSLContext:
    """A server context offering what the product's own TLS stack offers."""
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
    if profile.get("dh"):
        ctx.load_dh_params(ensure_dh(persona, profile["dh"]))
    if profile.get("identity") == "mysql":
        key_path, cert_path, ca_path = ensure_mysql(persona, str(profile["version"]))
        ctx.load_cert_chain(cert_path, key_path)
        # mysqld loads its ca.pem as the trust store and asks for a client certificate
        # (optional); OpenSSL then sends the CA behind the server certificate
        ctx.load_verify_locations(ca_path)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        key_path, cert_path = ensure(persona)
        ctx.load_cert_chain(cert_path, key_path)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if not profile.get("session_tickets", True):
        ctx.options |= ssl.OP_NO_TICKET
    # what the ssl module has no setter for: TLS 1.3 suites and the group list
    if profile.get("tls13_ciphers"):
        tls_native.set_ciphersuites(ctx, profile["tls13_ciphers"])
    if profile.get("groups"):
        tls_native.set_groups(ctx, profile["groups"])
    return ctx


def server_context(persona: PersonaView) -> ssl.SSLContext:
    """The host's own context (the persona's top-level `tls` profile)."""
    return build(persona, dict(persona.facts.get("tls") or {}))


class Contexts:
    """One SSLContext per distinct profile, made on first ask (the engine asks at start)."""

    def __init__(self, persona: PersonaView) -> None:
        self.persona = persona
        self._built: dict[str, ssl.SSLContext] = {}

    def for_service(self, service: str) -> ssl.SSLContext:
        profile = profile_for(self.persona, service)
        key = json.dumps(profile, sort_keys=True, default=str)
        ctx = self._built.get(key)
        if ctx is None:
            ctx = self._built[key] = build(self.persona, profile)
        return ctx

    def getter(self, service: str) -> Callable[[], ssl.SSLContext]:
        ctx = self.for_service(service)
        return lambda: ctx

    def __len__(self) -> int:
        return len(self._built)
