"""Handshake and authentication: the greeting a given MySQL version sends, the
client's answer, and the two password plugins.

mysql_native_password only ever shows us SHA1-scrambled proof, kept in
hashcat's `$mysqlna$` form (mode 11200). caching_sha2_password's full path
hands over the password itself, over TLS in the clear or RSA-OAEP encrypted to
our per-install key, so that path is where plaintext comes from.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass, field

from muscipula.protocols.mysql import wire as w

NATIVE = "mysql_native_password"
CACHING_SHA2 = "caching_sha2_password"
SHA256 = "sha256_password"
CLEAR = "mysql_clear_password"


@dataclass(frozen=True, slots=True)
class Profile:
    """What the persona's MySQL version puts on the wire."""

    version: str
    modern: bool  # 8.0 behaviour (caching_sha2 default, utf8mb4, no display widths)
    charset: int
    capabilities: int
    default_plugin: str
    plugins: tuple[str, ...]

    @classmethod
    def for_version(cls, version: str, tls: bool) -> Profile:
        try:
            major = int(version.split(".")[0])
        except ValueError:
            major = 5
        if major >= 8:
            caps = 0xFFFFFFFF & ~(w.SSL | w.SSL_VERIFY_SERVER_CERT | 1 << 29)
            plugins: tuple[str, ...] = (CACHING_SHA2, NATIVE, SHA256)
            charset, default = 255, CACHING_SHA2
        else:
            caps = (0xFFFF & ~w.SSL) | w.MULTI_STATEMENTS | w.MULTI_RESULTS \
                | w.PS_MULTI_RESULTS | w.PLUGIN_AUTH | w.REMEMBER_OPTIONS
            plugins, charset, default = (NATIVE,), 8, NATIVE
        if tls:
            caps |= w.SSL | w.SSL_VERIFY_SERVER_CERT
        return cls(version, major >= 8, charset, caps, default, plugins)


def scramble(modern: bool) -> bytes:
    """20 random bytes as the server draws them (no NUL, no '$'; 5.5: printable)."""
    if not modern:
        # printable 33..126, uniform: keep bytes below 2*94 and fold them (one getrandom
        # call per connection; a randbelow() per byte was an eighth of a login's CPU)
        out = b""
        while len(out) < 20:
            out += bytes([33 + b % 94 for b in secrets.token_bytes(32) if b < 188])
        return out[:20]
    out = bytearray(b & 0x7F for b in secrets.token_bytes(20))
    for i, b in enumerate(out):
        if b in (0, 0x24):
            out[i] = b + 1
    return bytes(out)


def greeting(profile: Profile, thread_id: int, salt: bytes, status: int = w.STATUS_AUTOCOMMIT
             ) -> bytes:
    caps = profile.capabilities
    return b"".join((
        b"\x0a", profile.version.encode(), b"\0", struct.pack("<I", thread_id & 0xFFFFFFFF),
        salt[:8], b"\0", struct.pack("<H", caps & 0xFFFF), bytes((profile.charset,)),
        struct.pack("<H", status), struct.pack("<H", caps >> 16), bytes((len(salt) + 1,)),
        b"\0" * 10, salt[8:], b"\0", profile.default_plugin.encode(), b"\0",
    ))


@dataclass(slots=True)
class Response:
    """The client's HandshakeResponse (or SSLRequest when `ssl_request`)."""

    capabilities: int = 0
    max_packet: int = 0
    charset: int = 0
    username: str = ""
    auth: bytes = b""
    database: str = ""
    plugin: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    ssl_request: bool = False


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _plugin_and_attributes(r: w.Reader, out: Response, caps: int, max_attrs: int) -> None:
    """The tail both the handshake response and COM_CHANGE_USER end with."""
    if caps & w.PLUGIN_AUTH and r.left():
        try:
            out.plugin = _text(r.str_null())
        except w.Truncated:
            out.plugin = _text(r.rest())
    if caps & w.CONNECT_ATTRS and r.left():
        block = w.Reader(r.str_lenenc())
        while block.left() and len(out.attributes) < max_attrs:
            key = _text(block.str_lenenc())
            out.attributes[key[:256]] = _text(block.str_lenenc())[:1024]


def parse_response(payload: bytes, max_attrs: int = 64) -> Response:
    """Raises wire.Truncated on a short or garbled packet."""
    r = w.Reader(payload)
    out = Response()
    if len(payload) >= 4 and payload[0] | payload[1] << 8 and not \
            (payload[0] | payload[1] << 8) & w.PROTOCOL_41:
        # pre-4.1 HandshakeResponse320
        out.capabilities = r.u16()
        out.max_packet = int.from_bytes(r.take(3), "little")
        out.username = _text(r.str_null())
        out.auth = r.rest().rstrip(b"\0")
        return out
    out.capabilities = r.u32()
    out.max_packet = r.u32()
    out.charset = r.u8()
    r.take(23)
    if r.left() == 0 and out.capabilities & w.SSL:
        out.ssl_request = True
        return out
    caps = out.capabilities
    out.username = _text(r.str_null())
    if caps & w.PLUGIN_AUTH_LENENC:
        out.auth = r.str_lenenc()
    elif caps & w.SECURE_CONNECTION:
        out.auth = r.take(r.u8())
    else:
        out.auth = r.str_null()
    if caps & w.CONNECT_WITH_DB and r.left():
        out.database = _text(r.str_null())
    _plugin_and_attributes(r, out, caps, max_attrs)
    return out


def native_proof(password: str, salt: bytes) -> bytes:
    if not password:
        return b""
    stage1 = hashlib.sha1(password.encode()).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mix = hashlib.sha1(salt + stage2).digest()
    return bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


def sha2_proof(password: str, salt: bytes) -> bytes:
    if not password:
        return b""
    p1 = hashlib.sha256(password.encode()).digest()
    p2 = hashlib.sha256(p1).digest()
    p3 = hashlib.sha256(p2 + salt).digest()
    return bytes(a ^ b for a, b in zip(p1, p3, strict=True))


def hashcat(plugin: str, salt: bytes, proof: bytes) -> str:
    """The crackable form of a scrambled answer (hashcat -m 11200 for native)."""
    if plugin == NATIVE:
        return f"$mysqlna${salt.hex()}*{proof.hex()}"
    return f"$mysql-sha2-scramble${salt.hex()}*{proof.hex()}"


def unmask(data: bytes, salt: bytes) -> str:
    """Undo the XOR with the scramble that caching_sha2/sha256 apply before RSA."""
    plain = bytes(b ^ salt[i % len(salt)] for i, b in enumerate(data))
    return plain.split(b"\0", 1)[0].decode("utf-8", "replace")


def switch_request(plugin: str, salt: bytes) -> bytes:
    return b"\xfe" + plugin.encode() + b"\0" + salt + b"\0"


def parse_change_user(body: bytes, capabilities: int, max_attrs: int = 64) -> Response:
    """COM_CHANGE_USER after its command byte; the connection's capabilities shape it."""
    r = w.Reader(body)
    out = Response(capabilities=capabilities)
    out.username = _text(r.str_null())
    if capabilities & w.SECURE_CONNECTION:
        out.auth = r.take(r.u8())
    else:
        out.auth = r.str_null()
    out.database = _text(r.str_null()) if r.left() else ""
    if r.left() >= 2:
        out.charset = r.u16()
    _plugin_and_attributes(r, out, capabilities, max_attrs)
    return out
