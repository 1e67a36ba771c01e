"""Column types as MySQL reports them, worked out from the statement and the tables.

SQLite hands back per-value types only, so a `SELECT NOW()` would look like a
string and a decimal(10,2) column like a double. Clients decode by the column
definition (pymysql turns DATETIME into datetime and NEWDECIMAL into Decimal), so
the type comes from what MySQL itself would say: the function, literal or CAST
in the select list, or the column's declared type in its table.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp

from muscipula.protocols.mysql import errors as E
from muscipula.protocols.mysql import wire as w
from muscipula.protocols.mysql.results import BINARY, Column

#: (name, declared type, not null, default, primary key), as Session.columns gives them
ColumnInfo = tuple[str, str, bool, object, bool]
Lookup = Callable[[str | None, str], list[ColumnInfo] | None]

_DATETIME_FUNCS = {"now", "sysdate", "localtime", "localtimestamp", "current_timestamp",
                   "utc_timestamp"}
_DATE_FUNCS = {"curdate", "current_date", "utc_date"}
_TIME_FUNCS = {"curtime", "current_time", "utc_time"}
_BLOB_LENGTHS = {"tinyblob": 255, "blob": 65535, "mediumblob": 16777215,
                 "longblob": 4294967295, "tinytext": 255, "text": 65535,
                 "mediumtext": 16777215, "longtext": 4294967295}
_INTS = {"tinyint": (w.T_TINY, 4), "smallint": (w.T_SHORT, 6), "mediumint": (w.T_INT24, 9),
         "int": (w.T_LONG, 11), "integer": (w.T_LONG, 11), "bigint": (w.T_LONGLONG, 20)}
#: DECIMAL's bounds (mysqld's DECIMAL_MAX_PRECISION and DECIMAL_MAX_SCALE)
MAX_PRECISION = 65
MAX_SCALE = 30
_INT_MAX = 2**31 - 1
_DECL = re.compile(r"(?i)^\s*([a-z]+)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*(unsigned)?")


def temporal(kind: int, decimals: int = 0, not_null: bool = False) -> Column:
    length = {w.T_DATE: 10, w.T_TIME: 10, w.T_DATETIME: 19, w.T_TIMESTAMP: 19}[kind]
    if decimals:
        length += decimals + 1
    return Column("", kind, length, w.F_BINARY | (w.F_NOT_NULL if not_null else 0), decimals,
                  charset=BINARY)


def decimal(precision: int, scale: int, not_null: bool = False, unsigned: bool = False
            ) -> Column:
    # a column definition has one byte for the scale: what mysqld refuses never gets here,
    # but a stored declaration is clamped rather than trusted
    precision, scale = min(precision, MAX_PRECISION), min(scale, MAX_SCALE)
    length = precision + (1 if scale else 0) + (0 if unsigned else 1)
    flags = w.F_NUM | w.F_BINARY | (w.F_NOT_NULL if not_null else 0) \
        | (w.F_UNSIGNED if unsigned else 0)
    return Column("", w.T_NEWDECIMAL, length, flags, scale, charset=BINARY)


def declared(decl: str, not_null: bool, pk: bool) -> Column | None:
    """The column definition MySQL sends for a table column of declared type `decl`."""
    m = _DECL.match(decl or "")
    if m is None:
        return None
    base = m.group(1).lower()
    size = int(m.group(2)) if m.group(2) else None
    scale = int(m.group(3)) if m.group(3) else 0
    unsigned = bool(m.group(4))
    nn = w.F_NOT_NULL if not_null or pk else 0
    if base in ("datetime", "timestamp", "date", "time"):
        kind = {"datetime": w.T_DATETIME, "timestamp": w.T_TIMESTAMP, "date": w.T_DATE,
                "time": w.T_TIME}[base]
        return temporal(kind, min(size or 0, 6), bool(nn))
    if base in ("decimal", "numeric", "dec"):
        return decimal(size or 10, scale, bool(nn), unsigned)
    if base in _BLOB_LENGTHS:
        text = base.endswith("text")
        return Column("", w.T_BLOB, _BLOB_LENGTHS[base], w.F_BLOB | nn
                      | (0 if text else w.F_BINARY), charset=0 if text else BINARY)
    if base in _INTS:
        kind, width = _INTS[base]
        if pk and base == "integer":
            kind, width, unsigned = w.T_LONGLONG, 20, True
        flags = w.F_NUM | nn | (w.F_UNSIGNED if unsigned else 0) \
            | (w.F_PRI_KEY | w.F_AUTO_INCREMENT if pk else 0)
        return Column("", kind, width - (1 if unsigned and kind != w.T_LONGLONG else 0),
                      flags, charset=BINARY)
    if base in ("double", "real", "float"):
        return Column("", w.T_DOUBLE if base != "float" else w.T_FLOAT,
                      22 if base != "float" else 12, w.F_NUM | nn, 31, charset=BINARY)
    if base in ("varchar", "char"):
        return Column("", w.T_VAR_STRING if base == "varchar" else w.T_STRING, size or 255,
                      nn)
    return None


def _cast(node: exp.Cast) -> Column | None:
    to = node.to
    kind = to.this
    dt = exp.DataType.Type
    if kind == dt.DATE:
        return temporal(w.T_DATE)
    if kind in (dt.DATETIME, dt.TIMESTAMP):
        return temporal(w.T_DATETIME)
    if kind == dt.TIME:
        return temporal(w.T_TIME)
    if kind == dt.DECIMAL:
        precision, scale = _decimal_params(node)
        return decimal(precision, scale)
    return None


def _decimal_params(node: exp.Cast) -> tuple[int, int]:
    """(M, D) of CAST(... AS DECIMAL(M,D)), trimmed as mysqld does: neither given is (10,0)."""
    params: list[int] = []
    for p in node.to.expressions:
        if isinstance(p, exp.DataTypeParam):
            text = str(p.this.this) if isinstance(p.this, exp.Literal) else ""
            # past 18 digits it is over every bound anyway (and int() refuses 4300+)
            params.append((int(text) if len(text) <= 18 else 10**18) if text.isdigit() else 10)
    precision = params[0] if params else 0
    scale = params[1] if len(params) > 1 else 0
    return (10, 0) if not precision and not scale else (precision, scale)


def _cast_name(node: exp.Cast, modern: bool) -> str:
    """The text mysqld names a CAST by: 8.0 the CAST as written, 5.x its argument."""
    try:
        arg = node.this.sql(dialect="mysql")
    except (ValueError, RecursionError):
        arg = ""
    if not modern:
        return arg
    params = ",".join(p.sql(dialect="mysql") for p in node.to.expressions)
    return f"CAST({arg} AS DECIMAL({params}))" if params else f"CAST({arg} AS DECIMAL)"


def check_casts(tree: exp.Expression, modern: bool) -> None:
    """Raise what mysqld's parser answers to a CAST to a DECIMAL it cannot have.

    M below D first, then M over 65, then D over 30; 8.0 names the whole CAST,
    5.x the cast argument, in its own wording.
    """
    for node in tree.find_all(exp.Cast):
        if not isinstance(node.to, exp.DataType) or node.to.this != exp.DataType.Type.DECIMAL:
            continue
        precision, scale = _decimal_params(node)
        if precision < scale:
            raise E.SqlError(1427, "42000", "For float(M,D), double(M,D) or decimal(M,D), "
                                            "M must be >= D (column '').")
        name = _cast_name(node, modern)[:192]
        column = "" if modern else "column "
        if precision > MAX_PRECISION:
            word = "Too-big" if modern else "Too big"
            raise E.SqlError(1426, "42000", f"{word} precision {min(precision, _INT_MAX)} "
                                            f"specified for {column}'{name}'. "
                                            f"Maximum is {MAX_PRECISION}.")
        if scale > MAX_SCALE:
            raise E.SqlError(1425, "42000", f"Too big scale {min(scale, _INT_MAX)} specified "
                                            f"for {column}'{name}'. Maximum is {MAX_SCALE}.")


def _literal_decimal(text: str) -> Column | None:
    if "e" in text.lower() or "." not in text:
        return None
    digits = text.lstrip("-+")
    whole, _, frac = digits.partition(".")
    precision = len(whole.lstrip("0")) + len(frac)
    if precision > MAX_PRECISION:
        return None  # past 65 digits mysqld reads the literal as a DOUBLE
    return decimal(max(precision, 1), len(frac), not_null=True)


def of(node: exp.Expression, column: Callable[[exp.Column], Column | None]) -> Column | None:
    """The type of one select-list expression, or None when SQLite's values must tell."""
    if isinstance(node, exp.Alias):
        return of(node.this, column)
    if isinstance(node, exp.Paren):
        return of(node.this, column)
    if isinstance(node, exp.Column):
        return column(node)
    if isinstance(node, exp.Cast):
        return _cast(node)
    if isinstance(node, exp.Literal) and not node.is_string:
        return _literal_decimal(node.this)
    if isinstance(node, (exp.CurrentTimestamp, exp.UtcTimestamp)):
        return temporal(w.T_DATETIME, not_null=True)
    if isinstance(node, exp.CurrentDate):
        return temporal(w.T_DATE, not_null=True)
    if isinstance(node, exp.CurrentTime):
        return temporal(w.T_TIME, not_null=True)
    if isinstance(node, exp.TsOrDsToDate):
        return temporal(w.T_DATE)
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        if name in _DATETIME_FUNCS:
            return temporal(w.T_DATETIME, not_null=True)
        if name in _DATE_FUNCS:
            return temporal(w.T_DATE, not_null=True)
        if name in _TIME_FUNCS:
            return temporal(w.T_TIME, not_null=True)
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        left, right = of(node.this, column), of(node.expression, column)
        kinds = {c.type for c in (left, right) if c is not None}
        if kinds == {w.T_NEWDECIMAL}:
            scales = [c.decimals for c in (left, right) if c is not None]
            scale = min(sum(scales) if isinstance(node, exp.Mul) else max(scales), MAX_SCALE)
            return decimal(min(MAX_PRECISION, max(c.length for c in (left, right) if c)
                               + scale), scale)
    return None


def select_types(tree: exp.Expression, lookup: Lookup) -> list[Column | None] | None:
    """Per output column of a SELECT: its MySQL type where the statement tells it."""
    if not isinstance(tree, exp.Select):
        return None
    tables: list[tuple[str, str | None, str]] = []  # (alias or name, db, table)
    for t in _from_tables(tree):
        tables.append(((t.alias_or_name or t.name).lower(), t.db or None, t.name))
    cache: dict[tuple[str | None, str], list[ColumnInfo] | None] = {}

    def info(db: str | None, table: str) -> list[ColumnInfo] | None:
        key = (db, table)
        if key not in cache:
            cache[key] = lookup(db, table)
        return cache[key]

    def column(node: exp.Column) -> Column | None:
        qualifier = node.table.lower() if node.table else ""
        for alias, db, table in tables:
            if qualifier and qualifier not in (alias, table.lower()):
                continue
            for name, decl, notnull, _default, pk in info(db, table) or []:
                if name.lower() == node.name.lower():
                    col = declared(decl, notnull, pk)
                    if col is not None:
                        col.table, col.schema = alias if qualifier else table, db or ""
                    return col
        return None

    out: list[Column | None] = []
    for e in tree.expressions:
        if isinstance(e, exp.Star) or (isinstance(e, exp.Column)
                                       and isinstance(e.this, exp.Star)):
            for _alias, db, table in tables:
                for _name, decl, notnull, _d, pk in info(db, table) or []:
                    out.append(declared(decl, notnull, pk))
            continue
        out.append(of(e, column))
    return out


def _from_tables(tree: exp.Select) -> list[exp.Table]:
    out: list[exp.Table] = []
    from_ = tree.args.get("from") or tree.args.get("from_")
    if from_ is not None and isinstance(from_.this, exp.Table):
        out.append(from_.this)
    for join in tree.args.get("joins") or []:
        if isinstance(join.this, exp.Table):
            out.append(join.this)
    return out
