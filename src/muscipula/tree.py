"""`muscipula tree`: one attack per connection tree, read from the logsql database.

What the reference system's readlogsqltree did for its operators: a connection, its
children (FTP data, TFTP transfers) under it, and beneath each everything recorded for it
(logins, commands, DCE/RPC binds and requests with their interface and operation names,
offers, downloads, emulation profiles). Tables are found by their `connection` column, so
a protocol's own tables appear without this file knowing them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: one value shown at most this long (a profile or a query may be long)
MAX_VALUE = 160
#: rows shown of one table for one connection (a flood's requests)
MAX_ROWS = 20


@dataclass(frozen=True)
class Filter:
    connection: int | None = None
    remote_host: str | None = None
    protocol: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50


def _tables(db: sqlite3.Connection) -> list[tuple[str, list[str]]]:
    """(table, its columns but the key and `connection`) for each table naming a connection."""
    out = []
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                              "AND name != 'connections' ORDER BY name"):
        cols = [row[1] for row in db.execute(f'PRAGMA table_info("{name}")')]
        if "connection" in cols:
            key = cols[0]
            out.append((name, [c for c in cols if c not in ("connection", key)]))
    return out


def _names(db: sqlite3.Connection) -> tuple[dict[str, str], dict[tuple[str, int], str]]:
    """DCE/RPC interface and operation names, from the seeded tables."""
    services = dict(db.execute("SELECT dcerpcservice_uuid, dcerpcservice_name "
                               "FROM dcerpcservices"))
    ops = {(uuid, opnum): name for uuid, opnum, name in db.execute(
        "SELECT s.dcerpcservice_uuid, o.dcerpcserviceop_opnum, o.dcerpcserviceop_name "
        "FROM dcerpcserviceops o JOIN dcerpcservices s USING (dcerpcservice)")}
    return services, ops


def _value(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "..."


def _roots(db: sqlite3.Connection, f: Filter) -> list[int]:
    where, params = ["connection_parent IS NULL"], []
    if f.connection is not None:
        where, params = ["connection = ?"], [f.connection]
    if f.remote_host:
        where.append("remote_host = ?")
        params.append(f.remote_host)
    if f.protocol:
        where.append("connection_protocol = ?")
        params.append(f.protocol)
    if f.since is not None:
        where.append("connection_timestamp >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append("connection_timestamp < ?")
        params.append(f.until)
    sql = (f"SELECT connection FROM connections WHERE {' AND '.join(where)} "
           "ORDER BY connection DESC LIMIT ?")
    return [row[0] for row in db.execute(sql, (*params, f.limit))][::-1]


def _connection_line(row: sqlite3.Row) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["connection_timestamp"] or 0))
    return (f"connection {row['connection']} {row['connection_protocol']} "
            f"{row['connection_transport']} {row['connection_type']} "
            f"{row['local_host']}:{row['local_port']} <- "
            f"{row['remote_host']}:{row['remote_port']} ({stamp} UTC)")


def _details(db: sqlite3.Connection, conn: int, tables: list[tuple[str, list[str]]],
             names: tuple[dict[str, str], dict[tuple[str, int], str]]) -> Iterator[str]:
    services, ops = names
    for table, cols in tables:
        if not cols:
            continue
        select = ", ".join(f'"{c}"' for c in cols)
        rows = db.execute(f'SELECT {select} FROM "{table}" WHERE connection = ? '
                          f'ORDER BY rowid LIMIT ?', (conn, MAX_ROWS + 1)).fetchall()
        for row in rows[:MAX_ROWS]:
            values = dict(zip(cols, row, strict=True))
            parts = [f"{c}={_value(v)}" for c, v in values.items() if v is not None]
            uuid = values.get("dcerpcbind_uuid") or values.get("dcerpcrequest_uuid")
            if isinstance(uuid, str) and uuid in services:
                parts.append(f"({services[uuid]}")
                opnum = values.get("dcerpcrequest_opnum")
                op = ops.get((uuid, opnum)) if isinstance(opnum, int) else None
                parts[-1] += f" {op})" if op else ")"
            yield f"{table}: {' '.join(parts)}"
        if len(rows) > MAX_ROWS:
            (total,) = db.execute(f'SELECT count(*) FROM "{table}" WHERE connection = ?',
                                  (conn,)).fetchone()
            yield f"{table}: ... {total - MAX_ROWS} more"


def render(path: Path, f: Filter) -> Iterator[str]:
    """The report's lines, connection by connection."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        tables = _tables(db)
        names = _names(db)

        def walk(conn: int, depth: int) -> Iterator[str]:
            row = db.execute("SELECT * FROM connections WHERE connection = ?",
                             (conn,)).fetchone()
            if row is None:
                return
            pad = "  " * depth
            yield pad + _connection_line(row)
            for line in _details(db, conn, tables, names):
                yield pad + "  " + line
            if depth < 8:
                for (child,) in db.execute("SELECT connection FROM connections WHERE "
                                           "connection_parent = ? AND connection != ? "
                                           "ORDER BY connection LIMIT 100", (conn, conn)):
                    yield from walk(child, depth + 1)

        for root in _roots(db, f):
            yield from walk(root, 0)
            yield ""
    finally:
        db.close()
