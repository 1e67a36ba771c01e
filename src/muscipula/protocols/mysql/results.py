"""Result sets and OK replies, and how they are encoded in the text and binary protocols."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

from muscipula.protocols.mysql import wire as w

BINARY = 63


@dataclass(slots=True)
class Column:
    name: str
    type: int = w.T_VAR_STRING
    length: int = 256
    flags: int = 0
    decimals: int = 0
    table: str = ""
    schema: str = ""
    charset: int = 0  # 0: the connection's


@dataclass(slots=True)
class Rows:
    columns: list[Column]
    rows: list[tuple[Any, ...]]


@dataclass(slots=True)
class Done:
    affected: int = 0
    insert_id: int = 0
    info: str = ""
    warnings: int = 0


@dataclass(slots=True)
class Effects:
    """Side effects a statement asks the machine to carry out (in order)."""

    offers: list[str] = field(default_factory=list)
    captures: list[tuple[str, bytes]] = field(default_factory=list)  # (url, data)
    udfs: list[dict[str, str]] = field(default_factory=list)


Result = Rows | Done


def infer(name: str, values: list[Any]) -> Column:
    """A column definition from what SQLite handed back (its types are per value)."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return Column(name, w.T_VAR_STRING, 0)
    if kinds == {int}:
        return Column(name, w.T_LONGLONG, 21, w.F_NUM | w.F_BINARY, 0, charset=BINARY)
    if kinds <= {int, float}:
        return Column(name, w.T_DOUBLE, 23, w.F_NUM | w.F_BINARY, 31, charset=BINARY)
    if kinds == {bytes}:
        return Column(name, w.T_BLOB, 65535, w.F_BLOB | w.F_BINARY, charset=BINARY)
    return Column(name, w.T_VAR_STRING, 1024)


def text_value(v: Any, col: Column | None = None) -> bytes:
    if col is not None and col.type in (w.T_NEWDECIMAL, w.T_DECIMAL) \
            and isinstance(v, (int, float)):
        return _decimal_text(v, col.decimals)
    if isinstance(v, bytes):
        return v
    if isinstance(v, float):
        s = repr(v)
        return (s[:-2] if s.endswith(".0") else s).encode()
    return str(v).encode("utf-8", "surrogateescape")


def _decimal_text(v: float | int, scale: int) -> bytes:
    try:
        return f"{v:.{scale}f}".encode()
    except (ValueError, OverflowError):
        return b"0"


_WIDE = (w.T_VAR_STRING, w.T_STRING, w.T_BLOB, w.T_VARCHAR)


def column_def(col: Column, charset: int) -> bytes:
    cs = col.charset or charset
    length = col.length * (4 if cs not in (BINARY, 8) else 1) if col.type in _WIDE \
        else col.length
    return b"".join((
        w.lenenc_str(b"def"), w.lenenc_str(col.schema), w.lenenc_str(col.table),
        w.lenenc_str(col.table), w.lenenc_str(col.name), w.lenenc_str(col.name),
        b"\x0c", struct.pack("<HIBHB", cs, min(length, 0xFFFFFFFF), col.type, col.flags,
                             col.decimals), b"\0\0",
    ))


def text_row(row: tuple[Any, ...], columns: list[Column] | None = None) -> bytes:
    if columns is None:
        return b"".join(b"\xfb" if v is None else w.lenenc_str(text_value(v)) for v in row)
    return b"".join(b"\xfb" if v is None else w.lenenc_str(text_value(v, c))
                    for c, v in zip(columns, row, strict=False))


_INT_FORMATS = {w.T_TINY: "b", w.T_SHORT: "h", w.T_YEAR: "h", w.T_LONG: "i", w.T_INT24: "i",
                w.T_LONGLONG: "q"}
_TEMPORAL = re.compile(r"\s*(-)?(\d{1,4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})"
                       r":(\d{1,2})(?:\.(\d{1,6}))?)?\s*$")
_CLOCK = re.compile(r"\s*(-)?(\d+):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?\s*$")


def _binary_int(fmt: str, unsigned: bool, v: Any) -> bytes:
    code = fmt.upper() if unsigned else fmt
    try:
        return struct.pack("<" + code, int(v))
    except (ValueError, OverflowError, TypeError, struct.error):
        return struct.pack("<" + code, 0)


def _binary_datetime(kind: int, v: Any) -> bytes:
    """MYSQL_TIME in the binary protocol: the shortest of 0, 4, 7 or 11 bytes."""
    m = _TEMPORAL.match(str(v))
    if m is None:
        return b"\x00"
    y, mo, d = int(m.group(2)), int(m.group(3)), int(m.group(4))
    h, mi, s = (int(m.group(i) or 0) for i in (5, 6, 7))
    us = int((m.group(8) or "").ljust(6, "0") or 0)
    if kind == w.T_DATE or not (h or mi or s or us):
        if not (y or mo or d):
            return b"\x00"
        return b"\x04" + struct.pack("<HBB", y, mo, d)
    if us:
        return b"\x0b" + struct.pack("<HBBBBBI", y, mo, d, h, mi, s, us)
    return b"\x07" + struct.pack("<HBBBBB", y, mo, d, h, mi, s)


def _binary_time(v: Any) -> bytes:
    m = _CLOCK.match(str(v))
    if m is None:
        return b"\x00"
    neg = 1 if m.group(1) else 0
    hours, mi, s = int(m.group(2)), int(m.group(3)), int(m.group(4))
    us = int((m.group(5) or "").ljust(6, "0") or 0)
    days, h = divmod(min(hours, 838), 24)
    if not (hours or mi or s or us):
        return b"\x00"
    if us:
        return b"\x0c" + struct.pack("<BIBBBI", neg, days, h, mi, s, us)
    return b"\x08" + struct.pack("<BIBBB", neg, days, h, mi, s)


def binary_value(col: Column, v: Any) -> bytes:
    kind = col.type
    if kind in _INT_FORMATS:
        return _binary_int(_INT_FORMATS[kind], bool(col.flags & w.F_UNSIGNED), v)
    if kind in (w.T_DOUBLE, w.T_FLOAT):
        try:
            return struct.pack("<d" if kind == w.T_DOUBLE else "<f", float(v))
        except (ValueError, TypeError, OverflowError):
            return struct.pack("<d" if kind == w.T_DOUBLE else "<f", 0.0)
    if kind in (w.T_DATE, w.T_DATETIME, w.T_TIMESTAMP):
        return _binary_datetime(kind, v)
    if kind == w.T_TIME:
        return _binary_time(v)
    return w.lenenc_str(text_value(v, col))


def binary_row(columns: list[Column], row: tuple[Any, ...]) -> bytes:
    n = len(columns)
    bitmap = bytearray((n + 7 + 2) // 8)
    out = bytearray()
    for i, (col, v) in enumerate(zip(columns, row, strict=False)):
        if v is None:
            bitmap[(i + 2) // 8] |= 1 << ((i + 2) % 8)
            continue
        out += binary_value(col, v)
    return b"\x00" + bytes(bitmap) + bytes(out)
