"""Result sets and OK replies, and how they are encoded in the text and binary protocols."""

from __future__ import annotations

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


def text_value(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, float):
        s = repr(v)
        return (s[:-2] if s.endswith(".0") else s).encode()
    return str(v).encode("utf-8", "surrogateescape")


def column_def(col: Column, charset: int) -> bytes:
    cs = col.charset or charset
    length = col.length * (4 if cs not in (BINARY, 8) else 1) if col.type == w.T_VAR_STRING \
        else col.length
    return b"".join((
        w.lenenc_str(b"def"), w.lenenc_str(col.schema), w.lenenc_str(col.table),
        w.lenenc_str(col.table), w.lenenc_str(col.name), w.lenenc_str(col.name),
        b"\x0c", struct.pack("<HIBHB", cs, min(length, 0xFFFFFFFF), col.type, col.flags,
                             col.decimals), b"\0\0",
    ))


def text_row(row: tuple[Any, ...]) -> bytes:
    return b"".join(b"\xfb" if v is None else w.lenenc_str(text_value(v)) for v in row)


def binary_row(columns: list[Column], row: tuple[Any, ...]) -> bytes:
    n = len(columns)
    bitmap = bytearray((n + 7 + 2) // 8)
    out = bytearray()
    for i, (col, v) in enumerate(zip(columns, row, strict=False)):
        if v is None:
            bitmap[(i + 2) // 8] |= 1 << ((i + 2) % 8)
            continue
        if col.type == w.T_LONGLONG:
            try:
                out += struct.pack("<q", int(v))
            except (ValueError, OverflowError, TypeError):
                out += struct.pack("<q", 0)
        elif col.type == w.T_DOUBLE:
            try:
                out += struct.pack("<d", float(v))
            except (ValueError, TypeError):
                out += struct.pack("<d", 0.0)
        else:
            out += w.lenenc_str(text_value(v))
    return b"\x00" + bytes(bitmap) + bytes(out)
