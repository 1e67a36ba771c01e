"""RPC requests (TDS packet type 3) decoded: procedure, options and typed parameters.

Pure functions over the request bytes (after ALL_HEADERS). Every length read is checked
against the bytes left, so a request costs at most its own size (bounded by the
service's max_message). A fault raises `RpcError` carrying the error SQL Server
sends for it (the 8009/8016 family), which the caller answers and records.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

#: SQL Server's well-known procedure ids (ProcIDSwitch 0xFFFF)
PROC_IDS = {1: "sp_cursor", 2: "sp_cursoropen", 3: "sp_cursorprepare", 4: "sp_cursorexecute",
            5: "sp_cursorprepexec", 6: "sp_cursorunprepare", 7: "sp_cursorfetch",
            8: "sp_cursoroption", 9: "sp_cursorclose", 10: "sp_executesql", 11: "sp_prepare",
            12: "sp_execute", 13: "sp_prepexec", 14: "sp_prepexecrpc", 15: "sp_unprepare"}
#: SQL Server's own ceiling on the parameters of one call (error 8003 past it)
MAX_PARAMS = 2100
#: status bits of a parameter
BY_REF = 0x01
_STREAM = ("The incoming tabular data stream (TDS) remote procedure call (RPC) protocol "
           "stream is incorrect.")

# fixed-length types: id -> size
_FIXED = {0x1F: 0, 0x30: 1, 0x32: 1, 0x34: 2, 0x38: 4, 0x7F: 8, 0x3B: 4, 0x3E: 8, 0x3C: 8,
          0x7A: 4, 0x3D: 8, 0x3A: 4}
# one-byte-length types: id -> the value lengths allowed
_BYTELEN = {0x26: (1, 2, 4, 8), 0x68: (1,), 0x6D: (4, 8), 0x6E: (4, 8), 0x6F: (4, 8),
            0x24: (16,)}
_DECIMAL = (0x6A, 0x6C, 0x37, 0x3F)
_CHARS = (0xA7, 0xAF)  # BIGVARCHAR, BIGCHAR
_NCHARS = (0xE7, 0xEF)  # NVARCHAR, NCHAR
_BINARY = (0xA5, 0xAD)  # BIGVARBINARY, BIGBINARY
_LEGACY = (0x27, 0x2F, 0x25, 0x2D)  # VARCHAR, CHAR, VARBINARY, BINARY (byte lengths)
_LONG = (0x23, 0x63, 0x22)  # TEXT, NTEXT, IMAGE
_PLP_TYPES = (0xA7, 0xE7, 0xA5)
_EPOCH = datetime(1900, 1, 1)


class RpcError(Exception):
    """A request SQL Server refuses: its error number, state, class and text."""

    def __init__(self, number: int, text: str, state: int = 1, cls: int = 16) -> None:
        super().__init__(text)
        self.number, self.text, self.state, self.cls = number, text, state, cls


@dataclass(slots=True)
class Param:
    name: str
    status: int
    type: int
    value: object
    #: TYPE_INFO and value as sent: echoed in RETURNVALUE for an OUTPUT parameter
    raw: bytes = b""

    @property
    def output(self) -> bool:
        return bool(self.status & BY_REF)


@dataclass(slots=True)
class Call:
    name: str  # as sent, or the well-known name of its ProcID
    proc_id: int | None
    options: int
    params: list[Param] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def left(self) -> int:
        return len(self.data) - self.at

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.left():
            raise _Short
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]


class _Short(Exception):
    """The request ended inside a field."""


class _BadLength(Exception):
    """A length or metadata the type does not allow."""


def parse(data: bytes, max_params: int = MAX_PARAMS) -> list[Call]:
    """The calls of one request (separated by the batch flag bytes 0x80/0xFE/0xFF)."""
    return list(calls(data, max_params))


def calls(data: bytes, max_params: int = MAX_PARAMS) -> Iterator[Call]:
    """The calls of one request, decoded one at a time: a caller that stops early (at its
    bound on calls) never holds more than the call in hand, of at most `max_params`
    parameters, whatever the request's size."""
    r = _Reader(data)
    first = True
    while r.left() or first:
        if not first:
            if r.u8() not in (0x80, 0xFE, 0xFF):
                raise RpcError(4002, "The incoming tabular data stream (TDS) protocol stream "
                                     "is incorrect. The stream ended unexpectedly.")
            if not r.left():
                return
        elif not r.left():
            raise RpcError(4002, "The incoming tabular data stream (TDS) protocol stream is "
                                 "incorrect. The stream ended unexpectedly.")
        first = False
        yield _call(r, max_params)


def _call(r: _Reader, max_params: int) -> Call:
    try:
        size = r.u16()
        if size == 0xFFFF:
            proc_id = r.u16()
            name = PROC_IDS.get(proc_id, f"#{proc_id}")
        else:
            proc_id = None
            name = r.take(2 * size).decode("utf-16-le", "replace")
        options = r.u16()
    except _Short:
        raise RpcError(4002, "The incoming tabular data stream (TDS) protocol stream is "
                             "incorrect. The stream ended unexpectedly.") from None
    call = Call(name, proc_id, options)
    while r.left() and r.data[r.at] not in (0x80, 0xFE, 0xFF):
        n = len(call.params) + 1
        if n > max_params:  # counted as they are read: nothing past the bound is decoded
            raise RpcError(8003, f"{_STREAM} Too many parameters were provided in this RPC "
                                 f"request. The maximum is {max_params}.")
        pname = ""
        kind = 0
        try:
            pname = r.take(2 * r.u8()).decode("utf-16-le", "replace")
            status = r.u8()
            start = r.at
            kind = r.u8()
            value = _value(r, kind)
        except _Short:
            raise RpcError(8016 if kind else 4002, _short_text(n, pname, kind)) from None
        except _BadLength:
            raise RpcError(8016, f'{_STREAM} Parameter {n} ("{pname}"): Data type '
                                 f"0x{kind:02X} has an invalid data length or metadata "
                                 "length.") from None
        except _Unknown:
            raise RpcError(8009, f'{_STREAM} Parameter {n} ("{pname}"): Data type '
                                 f"0x{kind:02X} is unknown.") from None
        call.params.append(Param(pname, status, kind, value, r.data[start:r.at]))
    return call


def _short_text(n: int, pname: str, kind: int) -> str:
    if not kind:
        return ("The incoming tabular data stream (TDS) protocol stream is incorrect. The "
                "stream ended unexpectedly.")
    return (f'{_STREAM} Parameter {n} ("{pname}"): Data type 0x{kind:02X} has an invalid '
            "data length or metadata length.")


class _Unknown(Exception):
    """A type id this decoder does not take (XML schema collections, UDT, TVP, variant)."""


def _value(r: _Reader, kind: int) -> object:
    """TYPE_INFO then the value of a parameter of type `kind`."""
    if kind in _FIXED:
        return _fixed(kind, r.take(_FIXED[kind]))
    if kind in _BYTELEN:
        if r.u8() not in _BYTELEN[kind]:
            raise _BadLength
        size = r.u8()
        if size == 0:
            return None
        if size not in _BYTELEN[kind]:
            raise _BadLength
        return _sized(kind, r.take(size))
    if kind in _DECIMAL:
        _size, precision, scale = r.u8(), r.u8(), r.u8()
        if not 1 <= precision <= 38 or scale > precision:
            raise _BadLength
        size = r.u8()
        if size == 0:
            return None
        if size not in (5, 9, 13, 17):
            raise _BadLength
        raw = r.take(size)
        n = int.from_bytes(raw[1:], "little")
        return Decimal(n if raw[0] else -n).scaleb(-scale)
    if kind == 0x28:  # DATEN
        size = r.u8()
        if size == 0:
            return None
        if size != 3:
            raise _BadLength
        return _date(r.take(3)).isoformat()
    if kind in (0x29, 0x2A, 0x2B):  # TIMEN, DATETIME2N, DATETIMEOFFSETN
        scale = r.u8()
        if scale > 7:
            raise _BadLength
        size = r.u8()
        if size == 0:
            return None
        tlen = 3 if scale <= 2 else 4 if scale <= 4 else 5
        if size != tlen + {0x29: 0, 0x2A: 3, 0x2B: 5}[kind]:
            raise _BadLength
        return _time_types(kind, scale, tlen, r.take(size))
    if kind in _CHARS or kind in _NCHARS or kind in _BINARY:
        maxlen = r.u16()
        if kind not in _BINARY:
            r.take(5)  # collation
        if maxlen == 0xFFFF:
            if kind not in _PLP_TYPES:
                raise _BadLength
            data = _plp(r)
        else:
            if maxlen > 8000:
                raise _BadLength
            size = r.u16()
            if size == 0xFFFF:
                return None
            if size > maxlen:
                raise _BadLength
            data = r.take(size)
        return None if data is None else _bytes(kind, data)
    if kind in _LEGACY:
        r.u8()
        size = r.u8()
        return None if size == 0xFF else _bytes(kind, r.take(size))
    if kind in _LONG:
        r.u32()
        if kind != 0x22:
            r.take(5)
        size = r.u32()
        return None if size == 0xFFFFFFFF else _bytes(kind, r.take(size))
    if kind == 0xF1:  # XML
        if r.u8():
            r.take(r.u8() * 2)
            r.take(r.u8() * 2)
            r.take(r.u16() * 2)
        data = _plp(r)
        return None if data is None else data.decode("utf-16-le", "replace")
    raise _Unknown


def _plp(r: _Reader) -> bytes | None:
    """A partially length-prefixed value: total (or unknown) length, then chunks to a 0."""
    total = r.u64()
    if total == 0xFFFFFFFFFFFFFFFF:
        return None
    if total != 0xFFFFFFFFFFFFFFFE and total > r.left():
        raise _Short
    out = bytearray()
    while True:
        size = r.u32()
        if size == 0:
            break
        out += r.take(size)
    if total != 0xFFFFFFFFFFFFFFFE and len(out) != total:
        raise _BadLength
    return bytes(out)


def _bytes(kind: int, data: bytes) -> object:
    if kind in _NCHARS or kind == 0x63:
        return data[:len(data) & ~1].decode("utf-16-le", "replace")
    if kind in _CHARS or kind in (0x27, 0x2F, 0x23):
        return data.decode("cp1252", "replace")
    return data


def _fixed(kind: int, raw: bytes) -> object:
    if kind == 0x1F:
        return None
    return _sized({0x30: 0x26, 0x34: 0x26, 0x38: 0x26, 0x7F: 0x26, 0x32: 0x68, 0x3B: 0x6D,
                   0x3E: 0x6D, 0x3C: 0x6E, 0x7A: 0x6E, 0x3D: 0x6F, 0x3A: 0x6F}[kind], raw)


def _sized(kind: int, raw: bytes) -> object:
    size = len(raw)
    if kind == 0x26:
        if size == 1:
            return raw[0]  # tinyint is unsigned
        return int.from_bytes(raw, "little", signed=True)
    if kind == 0x68:
        return bool(raw[0])
    if kind == 0x6D:
        v = struct.unpack("<f" if size == 4 else "<d", raw)[0]
        return v if math.isfinite(v) else None
    if kind == 0x6E:
        if size == 4:
            n = struct.unpack("<i", raw)[0]
        else:
            hi, lo = struct.unpack("<iI", raw)
            n = (hi << 32) | lo
        return Decimal(n).scaleb(-4)
    if kind == 0x6F:
        if size == 4:
            days, minutes = struct.unpack("<HH", raw)
            return _stamp(_EPOCH + timedelta(days=days, minutes=minutes))
        days, ticks = struct.unpack("<iI", raw)
        try:
            return _stamp(_EPOCH + timedelta(days=days, milliseconds=round(ticks * 10 / 3)))
        except OverflowError:
            raise _BadLength from None
    return str(uuid.UUID(bytes_le=raw)).upper()  # GUID


def _date(raw: bytes) -> date:
    try:
        return date(1, 1, 1) + timedelta(days=int.from_bytes(raw, "little"))
    except OverflowError:
        raise _BadLength from None


def _time_types(kind: int, scale: int, tlen: int, raw: bytes) -> str:
    units = int.from_bytes(raw[:tlen], "little")
    micro = units * 10 ** 6 // 10 ** scale
    if micro >= 86400 * 10 ** 6:
        raise _BadLength
    clock = (datetime(2000, 1, 1) + timedelta(microseconds=micro)).time()
    if kind == 0x29:
        return clock.isoformat()
    day = _date(raw[tlen:tlen + 3])
    stamp = datetime.combine(day, clock)
    if kind == 0x2A:
        return stamp.isoformat(" ")
    offset = struct.unpack("<h", raw[tlen + 3:])[0]
    if not -840 <= offset <= 840:
        raise _BadLength
    try:
        local = stamp.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=offset)))
    except OverflowError:  # the offset takes it past year 9999 or before year 1
        local = stamp.replace(tzinfo=timezone(timedelta(minutes=offset)))
    return local.isoformat(" ")


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


# ------------------------------------------------------------- literals


def literal(v: object) -> str:
    """`v` as a T-SQL literal: strings quoted (quotes doubled), bytes as 0x hex."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, bytes):
        return "0x" + v.hex().upper()
    text = str(v).replace("'", "''")
    return f"N'{text}'"


def bound_literal(v: object) -> str:
    """`v` as bound into a statement run on SQLite: as `literal`, but a string holding NUL
    characters (which the SQLite driver refuses in statement text) goes as its bytes cast."""
    if isinstance(v, str) and "\x00" in v:
        return f"CAST(0x{v.encode('utf-8').hex().upper()} AS NVARCHAR)"
    return literal(v)
