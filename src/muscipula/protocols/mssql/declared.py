"""Parameter definitions of sp_executesql / sp_prepare: the names and their declared types.

A bound value answers with its declared type, as SQL Server converts it on binding:
`SELECT @p` of a `bigint` is a BIGINT column even when the value fits an int.
"""

from __future__ import annotations

import re

from muscipula.protocols.mssql import tds as T

_DECL = re.compile(r"\s*(@[\w@#$]+)\s*(?:AS\s+)?([^=]*?)\s*(?:=.*)?$", re.I | re.S)
_OUTPUT = re.compile(r"\s+(?:OUT|OUTPUT|READONLY)\s*$", re.I)
_TYPE = re.compile(r"(?:\[?\w+\]?\.)?\[?(\w+)\]?\s*(?:\(\s*(\w+)\s*(?:,\s*(\d+)\s*)?\))?$")
_INTS = {"bigint": 8, "int": 4, "smallint": 2, "tinyint": 1}

#: a result column's wire type: (type, size, precision, scale)
Spec = tuple[int, int, int, int]


def declarations(definition: str) -> list[tuple[str, str]]:
    """(name, declared type) per parameter a definition string declares, in order."""
    out = []
    depth = 0
    start = 0
    for i, ch in enumerate(definition + ","):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            m = _DECL.match(definition[start:i])
            if m:
                out.append((m.group(1), _OUTPUT.sub("", m.group(2)).strip()))
            start = i + 1
    return out


def column_spec(declared: str) -> Spec | None:
    """The result column a value of the declared type answers with (None: as it comes)."""
    m = _TYPE.match(declared.strip())
    if not m:
        return None
    name, arg, scale = m.group(1).lower(), m.group(2), m.group(3)
    size = 8000 if arg is None or arg.lower() == "max" or not arg.isdigit() \
        else max(min(int(arg), 8000), 1)
    if name in _INTS:
        return (T.INTN, _INTS[name], 0, 0)
    if name == "bit":
        return (T.BITN, 1, 0, 0)
    if name == "real" or (name == "float" and arg is not None and arg.isdigit()
                          and int(arg) <= 24):
        return (T.FLTN, 4, 0, 0)
    if name == "float":
        return (T.FLTN, 8, 0, 0)
    if name in ("decimal", "numeric"):
        precision = int(arg) if arg and arg.isdigit() else 18
        digits = int(scale) if scale else 0
        if not 1 <= precision <= 38 or digits > precision:
            return None
        return (T.DECIMALN, T.decimal_size(precision), precision, digits)
    if name in ("money", "smallmoney"):
        return (T.MONEYN, 8 if name == "money" else 4, 0, 0)
    if name == "datetime":
        return (T.DATETIMN, 8, 0, 0)
    if name in ("varchar", "char"):
        return (T.BIGVARCHAR, size, 0, 0)
    if name in ("nvarchar", "nchar"):
        return (T.NVARCHAR, min(2 * size, 8000), 0, 0)
    if name in ("varbinary", "binary"):
        return (T.BIGVARBINARY, size, 0, 0)
    return None
