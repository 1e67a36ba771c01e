"""PRELOGIN and LOGIN7: what the client sends, decoded; the PRELOGIN answer, built.

SQL Server answers PRELOGIN with the options the client sent, in its order
(impacket reads four, tsql/pytds five): a fixed layout would misplace the
encryption byte for one of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VERSION, ENCRYPTION, INSTOPT, THREADID, MARS, TRACEID, FEDAUTH, NONCE = range(8)
TERMINATOR = 0xFF
ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = range(4)


def parse_prelogin(data: bytes) -> list[tuple[int, bytes]] | None:
    """(option, value) in the client's order; None if the option table is broken."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        token = data[pos]
        if token == TERMINATOR:
            return out
        if pos + 5 > len(data) or len(out) >= 32:
            return None
        offset, length = struct.unpack_from(">HH", data, pos + 1)
        if offset + length > len(data):
            return None
        out.append((token, data[offset:offset + length]))
        pos += 5
    return None


#: the server's setting (`encryption` in config) -> what SQL Server answers each client value
_MATRIX = {
    # a certificate (SSL_Self_Signed_Fallback at least), Force Encryption off: the default
    "offered": {ENCRYPT_OFF: ENCRYPT_OFF, ENCRYPT_ON: ENCRYPT_ON,
                ENCRYPT_NOT_SUP: ENCRYPT_NOT_SUP, ENCRYPT_REQ: ENCRYPT_ON},
    # Force Encryption on: a client that cannot encrypt is told so and dropped
    "forced": {ENCRYPT_OFF: ENCRYPT_REQ, ENCRYPT_ON: ENCRYPT_ON,
               ENCRYPT_NOT_SUP: ENCRYPT_REQ, ENCRYPT_REQ: ENCRYPT_ON},
    # no TLS at all (an install whose certificate cannot be loaded)
    "none": {},
}


def negotiate(asked: int, setting: str) -> int:
    """MS-TDS 2.2.6.5's matrix: the ENCRYPTION answer to the client's `asked` value.

    Flag bits above the low nibble (ENCRYPT_CLIENT_CERT) do not change the answer;
    an unknown request is taken as a wish to encrypt.
    """
    table = _MATRIX.get(setting) or {}
    if not table:
        return ENCRYPT_NOT_SUP
    low = asked & 0x0F
    return table.get(low, table[ENCRYPT_ON])


def prelogin_reply(options: list[tuple[int, bytes]], version: tuple[int, int, int],
                   instance: str, setting: str = "none") -> tuple[bytes, int, int | None]:
    """The reply payload, the encryption the client asked for and the one answered
    (None when the client sent no ENCRYPTION option: no TLS then)."""
    asked = ENCRYPT_NOT_SUP
    answer: int | None = None
    values: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    for token, value in options:
        if token in seen:
            continue
        seen.add(token)
        if token == VERSION:
            major, minor, build = version
            values.append((token, bytes([major, minor]) + struct.pack(">HH", build, 0)))
        elif token == ENCRYPTION:
            asked = value[0] if value else ENCRYPT_NOT_SUP
            answer = negotiate(asked, setting)
            values.append((token, bytes([answer])))
        elif token == INSTOPT:
            name = value.split(b"\0", 1)[0].decode("latin-1")
            ok = not name or name.upper() in (instance.upper(), "MSSQLSERVER")
            values.append((token, b"\x00" if ok else b"\x01"))
        elif token == THREADID:
            values.append((token, b""))
        elif token in (MARS, FEDAUTH):
            values.append((token, b"\x00"))
    if VERSION not in seen:
        major, minor, build = version
        values.insert(0, (VERSION, bytes([major, minor]) + struct.pack(">HH", build, 0)))
    table = bytearray()
    body = bytearray()
    start = len(values) * 5 + 1
    for token, value in values:
        table += struct.pack(">BHH", token, start + len(body), len(value))
        body += value
    return bytes(table) + b"\xff" + bytes(body), asked, answer


def decode_password(raw: bytes) -> str:
    """LOGIN7 passwords: each byte XOR 0xA5, then its nibbles swapped."""
    plain = bytes((((b ^ 0xA5) & 0x0F) << 4) | (((b ^ 0xA5) & 0xF0) >> 4) for b in raw)
    return plain.decode("utf-16-le", "replace")


def encode_password(text: str) -> bytes:
    """The client side of `decode_password` (tests, fuzz seeds)."""
    return bytes(((((b & 0x0F) << 4) | ((b & 0xF0) >> 4)) ^ 0xA5)
                 for b in text.encode("utf-16-le"))


@dataclass(slots=True)
class Login7:
    tds: int  # 0x71..0x74
    packet_size: int
    client_pid: int
    hostname: str = ""
    username: str = ""
    password: str = ""
    appname: str = ""
    servername: str = ""
    cltintname: str = ""
    language: str = ""
    database: str = ""
    integrated: bool = False
    sspi: bytes = b""
    extra: dict[str, object] = field(default_factory=dict)


_FIELDS = (("hostname", 36), ("username", 40), ("password", 44), ("appname", 48),
           ("servername", 52), ("cltintname", 60), ("language", 64), ("database", 68))


def tds_major(raw: bytes) -> int:
    """The TDS version byte (0x71..0x74) from LOGIN7's version field, either byte order
    (impacket writes it big-endian)."""
    for b in (raw[3], raw[0]):
        if 0x70 <= b <= 0x7F:
            return min(b, 0x74)
    return 0x74


def parse_login7(data: bytes) -> Login7 | None:
    if len(data) < 86:
        return None
    tds = tds_major(data[4:8])
    packet_size, _ver, pid = struct.unpack_from("<III", data, 8)
    flags2 = data[25]
    login = Login7(tds, packet_size, pid, integrated=bool(flags2 & 0x80))
    for name, at in _FIELDS:
        offset, chars = struct.unpack_from("<HH", data, at)
        raw = data[offset:offset + 2 * chars]
        if name == "password":
            login.password = decode_password(raw)
        else:
            setattr(login, name, raw.decode("utf-16-le", "replace"))
    offset, length = struct.unpack_from("<HH", data, 78)
    if length == 0xFFFF and len(data) >= 94:
        length = struct.unpack_from("<I", data, 90)[0]
    login.sspi = data[offset:offset + length]
    login.extra = {"tds_version": f"{tds >> 4}.{tds & 0xF}", "packet_size": packet_size,
                   "client_pid": pid, "language": login.language, "database": login.database,
                   "servername": login.servername, "integrated": login.integrated}
    return login
