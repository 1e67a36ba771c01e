"""TDS wire pieces: packet headers, and the tokens of a tabular result (MS-TDS 2.2.7).

Pure functions over bytes: the machine frames messages with `packets`, and builds
replies from these tokens. TDS 7.1 and 7.2+ differ in a few widths (DONE row count,
user type, line number); `tds` is the negotiated version's major byte (0x71..0x74).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

HEADER = 8
# packet types
SQL_BATCH = 0x01
PRETDS7_LOGIN = 0x02
RPC = 0x03
REPLY = 0x04
ATTENTION = 0x06
TRANSACTION = 0x0E
LOGIN7 = 0x10
SSPI = 0x11
PRELOGIN = 0x12
# status bits
EOM = 0x01
# DONE status bits
DONE_FINAL = 0x00
DONE_MORE = 0x01
DONE_ERROR = 0x02
DONE_COUNT = 0x10
DONE_ATTN = 0x20
# data types
INTN = 0x26
BITN = 0x68
FLTN = 0x6D
NVARCHAR = 0xE7
BIGVARBINARY = 0xA5
BIGVARCHAR = 0xA7
DECIMALN = 0x6A
MONEYN = 0x6E
DATETIMN = 0x6F
_ONE_BYTE = (INTN, FLTN, BITN, MONEYN, DATETIMN)
_EPOCH = datetime(1900, 1, 1)
#: SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, flags 0xD0, sort id 52
COLLATION = b"\x09\x04\xd0\x00\x34"


def header(kind: int, length: int, status: int = EOM, spid: int = 0, packet_id: int = 1) -> bytes:
    return struct.pack(">BBHHBB", kind, status, length, spid, packet_id, 0)


def packets(kind: int, payload: bytes, size: int, spid: int = 0) -> bytes:
    """`payload` cut into packets of at most `size` bytes; ids count from 1 as SQL Server's."""
    room = max(size - HEADER, 64)
    chunks = [payload[i:i + room] for i in range(0, len(payload), room)] or [b""]
    out = bytearray()
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        out += header(kind, len(chunk) + HEADER, EOM if last else 0, spid, (n + 1) & 0xFF)
        out += chunk
    return bytes(out)


def ucs2(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def b_varchar(text: str) -> bytes:
    text = text[:255]
    return bytes([len(text)]) + ucs2(text)


def us_varchar(text: str) -> bytes:
    text = text[:32767]
    return struct.pack("<H", len(text)) + ucs2(text)


def _token(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + struct.pack("<H", len(body)) + body


def message(kind: int, number: int, state: int, cls: int, text: str, server: str,
            proc: str = "", line: int = 1, tds: int = 0x74) -> bytes:
    """ERROR (0xAA) or INFO (0xAB)."""
    body = (struct.pack("<iBB", number, state, cls) + us_varchar(text) + b_varchar(server)
            + b_varchar(proc) + (struct.pack("<I", line) if tds >= 0x72
                                 else struct.pack("<H", line)))
    return _token(kind, body)


def error(number: int, state: int, cls: int, text: str, server: str, proc: str = "",
          line: int = 1, tds: int = 0x74) -> bytes:
    return message(0xAA, number, state, cls, text, server, proc, line, tds)


def info(number: int, state: int, cls: int, text: str, server: str, proc: str = "",
         line: int = 1, tds: int = 0x74) -> bytes:
    return message(0xAB, number, state, cls, text, server, proc, line, tds)


def envchange(kind: int, new: str, old: str) -> bytes:
    return _token(0xE3, bytes([kind]) + b_varchar(new) + b_varchar(old))


def envchange_bytes(kind: int, new: bytes, old: bytes) -> bytes:
    """ENVCHANGE with B_VARBYTE values (transaction descriptors)."""
    return _token(0xE3, bytes([kind, len(new)]) + new + bytes([len(old)]) + old)


def envchange_collation(collation: bytes = COLLATION) -> bytes:
    return _token(0xE3, b"\x07" + bytes([len(collation)]) + collation + b"\x00")


def loginack(tds_version: bytes, prog: str, version: tuple[int, int, int]) -> bytes:
    major, minor, build = version
    body = (b"\x01" + tds_version + b_varchar(prog)
            + bytes([major & 0xFF, minor & 0xFF]) + struct.pack(">H", build & 0xFFFF))
    return _token(0xAD, body)


def done(status: int = DONE_FINAL, rows: int = 0, curcmd: int = 0xC1, tds: int = 0x74,
         kind: int = 0xFD) -> bytes:
    """DONE (0xFD), DONEPROC (0xFE) or DONEINPROC (0xFF); the count is 8 bytes from 7.2 on."""
    count = struct.pack("<Q", rows) if tds >= 0x72 else struct.pack("<I", rows & 0xFFFFFFFF)
    return bytes([kind]) + struct.pack("<HH", status, curcmd) + count


def return_status(value: int = 0) -> bytes:
    return b"\x79" + struct.pack("<i", value)


def sspi(token: bytes) -> bytes:
    return _token(0xED, token)


# ------------------------------------------------------------- result sets


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: int  # INTN, FLTN, BITN, MONEYN, DATETIMN, DECIMALN, (N)VARCHAR or BIGVARBINARY
    size: int  # fixed kinds and DECIMALN: bytes; the variable ones: max bytes
    precision: int = 0  # DECIMALN
    scale: int = 0  # DECIMALN


def colmetadata(columns: list[Column], tds: int) -> bytes:
    out = bytearray(b"\x81" + struct.pack("<H", len(columns)))
    for c in columns:
        out += struct.pack("<I", 0) if tds >= 0x72 else struct.pack("<H", 0)
        out += struct.pack("<H", 0x0001)  # nullable
        out += bytes([c.type])
        if c.type in _ONE_BYTE:
            out += bytes([c.size])
        elif c.type == DECIMALN:
            out += bytes([c.size, c.precision, c.scale])
        elif c.type in (NVARCHAR, BIGVARCHAR):
            out += struct.pack("<H", c.size) + COLLATION
        else:
            out += struct.pack("<H", c.size)
        out += b_varchar(c.name)
    return bytes(out)


def row(columns: list[Column], values: tuple[object, ...]) -> bytes:
    out = bytearray(b"\xd1")
    for c, v in zip(columns, values, strict=False):
        out += value(c, v)
    return bytes(out)


def value(c: Column, v: object) -> bytes:
    """`v` in the column's wire form; a value the type cannot hold goes as NULL (a row is
    never refused: SQLite's loose typing may hand back anything)."""
    try:
        return _value(c, v)
    except (ValueError, TypeError, OverflowError, ArithmeticError, struct.error):
        return b"\x00" if c.type in _ONE_BYTE or c.type == DECIMALN else b"\xff\xff"


def _value(c: Column, v: object) -> bytes:
    if c.type in _ONE_BYTE or c.type == DECIMALN:
        if v is None:
            return b"\x00"
        if c.type == FLTN:
            return bytes([c.size]) + struct.pack("<d" if c.size == 8 else "<f",
                                                 float(v))  # type: ignore[arg-type]
        if c.type == BITN:
            return b"\x01" + (b"\x01" if v else b"\x00")
        if c.type == MONEYN:
            n = int(_decimal(v).scaleb(4).to_integral_value())
            if c.size == 4:
                return b"\x04" + struct.pack("<i", n)
            return b"\x08" + struct.pack("<iI", n >> 32, n & 0xFFFFFFFF)
        if c.type == DATETIMN:
            return b"\x08" + _datetime(v)
        if c.type == DECIMALN:
            n = int(_decimal(v).scaleb(c.scale).to_integral_value())
            if abs(n) >= 10 ** c.precision:
                raise OverflowError
            return (bytes([c.size, 1 if n >= 0 else 0])
                    + abs(n).to_bytes(c.size - 1, "little"))
        n = int(v)  # type: ignore[call-overload]
        fmt = {1: "<B", 2: "<h", 4: "<i", 8: "<q"}[c.size]
        return bytes([c.size]) + struct.pack(fmt, n)
    if v is None:
        return b"\xff\xff"
    if c.type == NVARCHAR:
        data = ucs2(str(v))[:c.size]
    elif c.type == BIGVARCHAR:
        data = (v if isinstance(v, bytes) else str(v).encode("cp1252", "replace"))[:c.size]
    else:
        data = (v if isinstance(v, bytes) else str(v).encode())[:c.size]
    return struct.pack("<H", len(data)) + data


def _decimal(v: object) -> Decimal:
    if isinstance(v, bytes):
        raise TypeError
    try:
        return Decimal(str(v))
    except InvalidOperation:
        raise ValueError from None


def _datetime(v: object) -> bytes:
    """DATETIME: days since 1900-01-01 and 1/300 s since midnight."""
    t = datetime.fromisoformat(str(v).strip())
    delta = t.replace(tzinfo=None) - _EPOCH
    ticks = round((delta.seconds * 1_000_000 + delta.microseconds) * 3 / 10_000)
    return struct.pack("<iI", delta.days, ticks)


def decimal_size(precision: int) -> int:
    """DECIMALN's value size for a precision (MS-TDS 2.2.5.5.1.6)."""
    return 5 if precision <= 9 else 9 if precision <= 19 else 13 if precision <= 28 else 17


# ------------------------------------------------------------- reading


class Framer:
    """Reassembles packets into messages; sizes bounded by max_packet and max_message."""

    def __init__(self, max_packet: int, max_message: int) -> None:
        self.max_packet = max_packet
        self.max_message = max_message
        self.buf = bytearray()
        self.parts = bytearray()
        self.kind = 0

    def held(self) -> int:
        return len(self.buf) + len(self.parts)

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes] | str]:
        """(type, message) per complete message, or a string naming the limit broken."""
        self.buf += data
        while len(self.buf) >= HEADER:
            kind, status, length = struct.unpack_from(">BBH", self.buf)
            if length < HEADER or length > self.max_packet:
                self.buf.clear()
                yield "max_packet" if length > self.max_packet else "bad_length"
                return
            if len(self.buf) < length:
                return
            body = bytes(self.buf[HEADER:length])
            del self.buf[:length]
            if not self.parts:
                self.kind = kind
            if len(self.parts) + len(body) > self.max_message:
                self.parts.clear()
                self.buf.clear()
                yield "max_message"
                return
            self.parts += body
            if status & EOM:
                msg = bytes(self.parts)
                self.parts.clear()
                yield (self.kind, msg)
