"""Prepared statements: placeholders, the binary parameter encoding, and binding.

Parameters are bound by writing them into the statement text as SQL literals,
so an executed statement takes exactly the path a COM_QUERY would (and is
recorded as what really ran).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot.errors import SqlglotError, TokenError
from sqlglot.tokens import TokenType

from muscipula.protocols.mysql import wire as w

_ROWS = re.compile(r"(?is)^[\s(]*(select|show|with|describe|desc|explain|values|table)\b")
_INTO = re.compile(r"(?is)\binto\s+(dumpfile|outfile|@)")


class StatementError(Exception):
    """The statement or its parameters cannot be used."""


@dataclass(slots=True)
class Prepared:
    id: int
    text: str
    spots: list[tuple[int, int]]
    columns: int = 0
    types: list[int] = field(default_factory=list)
    long_data: dict[int, bytearray] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return len(self.spots)

    def returns_rows(self) -> bool:
        return bool(_ROWS.match(self.text)) and not _INTO.search(self.text)

    def long_data_size(self) -> int:
        return sum(len(v) for v in self.long_data.values())

    def add_long_data(self, param: int, data: bytes, cap: int) -> None:
        if param >= self.params:
            return
        room = cap - self.long_data_size()
        if room > 0:
            self.long_data.setdefault(param, bytearray()).extend(data[:room])

    def reset(self) -> None:
        self.long_data.clear()

    def bind(self, values: list[Any]) -> str:
        out = []
        last = 0
        for (start, end), value in zip(self.spots, values, strict=False):
            out.append(self.text[last:start])
            out.append(literal(value))
            last = end + 1
        out.append(self.text[last:])
        return "".join(out)


@dataclass(slots=True)
class Cursor:
    """A read-only cursor's rows (at most max_rows, as any result) and how far FETCH got."""

    columns: list[Any]
    rows: list[tuple[Any, ...]]
    pos: int = 0
    #: what the rows hold, as `rows_size` counts it; the connection's cursors share a budget
    size: int = 0

    def take(self, n: int) -> tuple[list[tuple[Any, ...]], bool]:
        """The next `n` rows, and whether the rows ran out while taking them."""
        chunk = self.rows[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk, len(chunk) < n


def rows_size(rows: list[tuple[Any, ...]]) -> int:
    """Bytes a result set holds: each value's length (8 for a number or NULL) plus 8."""
    total = 0
    for row in rows:
        for v in row:
            total += 8 + (len(v) if isinstance(v, (bytes, bytearray, str)) else 8)
    return total


def literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (bytes, bytearray)):
        try:
            text = bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(v).hex() if v else "''"
        v = text
    s = str(v).replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0")
    return f"'{s}'"


def prepare(stmt_id: int, text: str) -> Prepared:
    try:
        tokens = sqlglot.tokenize(text, read="mysql")
    except (TokenError, SqlglotError) as exc:
        raise StatementError(text) from exc
    spots = [(t.start, t.end) for t in tokens if t.token_type == TokenType.PLACEHOLDER]
    if len(spots) > 65535:
        raise StatementError(text[:80])
    return Prepared(stmt_id, text, spots)


def _value(r: w.Reader, kind: int, unsigned: bool) -> Any:
    if kind == w.T_TINY:
        return r.u8() if unsigned else struct.unpack("<b", r.take(1))[0]
    if kind in (w.T_SHORT, w.T_YEAR):
        return struct.unpack("<H" if unsigned else "<h", r.take(2))[0]
    if kind in (w.T_LONG, w.T_INT24):
        return struct.unpack("<I" if unsigned else "<i", r.take(4))[0]
    if kind == w.T_LONGLONG:
        return struct.unpack("<Q" if unsigned else "<q", r.take(8))[0]
    if kind == w.T_FLOAT:
        return struct.unpack("<f", r.take(4))[0]
    if kind == w.T_DOUBLE:
        return struct.unpack("<d", r.take(8))[0]
    if kind in (w.T_DATE, w.T_DATETIME, w.T_TIMESTAMP):
        n = r.u8()
        raw = r.take(n)
        y, mo, d, h, mi, s, us = 0, 0, 0, 0, 0, 0, 0
        if n >= 4:
            y, mo, d = struct.unpack("<HBB", raw[:4])
        if n >= 7:
            h, mi, s = raw[4], raw[5], raw[6]
        if n >= 11:
            us = struct.unpack("<I", raw[7:11])[0]
        if kind == w.T_DATE:
            return f"{y:04d}-{mo:02d}-{d:02d}"
        text = f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
        return text + (f".{us:06d}" if us else "")
    if kind == w.T_TIME:
        n = r.u8()
        raw = r.take(n)
        if n < 8:
            return "00:00:00"
        neg, days = raw[0], struct.unpack("<I", raw[1:5])[0]
        h, mi, s = raw[5], raw[6], raw[7]
        return f"{'-' if neg else ''}{days * 24 + h:02d}:{mi:02d}:{s:02d}"
    if kind == w.T_NULL:
        return None
    return r.str_lenenc()


def parse_execute(st: Prepared, body: bytes, attributes: bool) -> list[Any]:
    """Parameter values of a COM_STMT_EXECUTE body (starting at the statement id)."""
    r = w.Reader(body)
    r.u32()
    flags = r.u8()
    r.u32()
    count = st.params
    if attributes and (count > 0 or flags & 0x08):
        given = r.int_lenenc() or 0
        if given < count:
            raise StatementError("too few parameters")
        count = given
    if count == 0:
        return []
    if count > 65535:
        raise StatementError("too many parameters")
    nulls = r.take((count + 7) // 8)
    if r.u8():
        types = []
        for _ in range(count):
            types.append(r.u16())
            if attributes:
                r.str_lenenc()
        st.types = types
    if len(st.types) < count:
        raise StatementError("parameter types were never sent")
    values: list[Any] = []
    for i in range(count):
        if nulls[i // 8] & (1 << (i % 8)):
            values.append(None)
            continue
        if i in st.long_data:
            values.append(bytes(st.long_data[i]))
            continue
        t = st.types[i]
        values.append(_value(r, t & 0xFF, bool(t & 0x8000)))
    return values[: st.params]


def skip_query_attributes(body: bytes) -> bytes:
    """COM_QUERY with CLIENT_QUERY_ATTRIBUTES: drop the attribute block before the text."""
    r = w.Reader(body)
    count = r.int_lenenc() or 0
    r.int_lenenc()
    if count:
        nulls = r.take((count + 7) // 8)
        if r.u8():
            types = []
            for _ in range(count):
                types.append(r.u16())
                r.str_lenenc()
            for i, t in enumerate(types):
                if not nulls[i // 8] & (1 << (i % 8)):
                    _value(r, t & 0xFF, bool(t & 0x8000))
    return r.rest()
