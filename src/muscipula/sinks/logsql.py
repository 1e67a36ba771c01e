"""logsql: incidents into SQLite with dionaea's tables, batched by one writer thread.

dionaea committed after every insert and spent most of its time there; here a
batch of incidents is one transaction on a WAL database, written from a single
thread so the event loop never waits on the disk.

Protocols add their own tables and row writers with `table()` and `writer()`;
a writer gets the cursor, the incident and the incident's logsql connection id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from muscipula.incidents import Connection, Incident

log = logging.getLogger(__name__)
RowWriter = Callable[[sqlite3.Cursor, Incident, int], None]

_EXTRA_DDL: list[str] = []
WRITERS: dict[str, RowWriter] = {}


def table(ddl: str) -> None:
    """DDL (CREATE ... IF NOT EXISTS) for a protocol's own tables."""
    if ddl not in _EXTRA_DDL:
        _EXTRA_DDL.append(ddl)


def writer(*names: str) -> Callable[[RowWriter], RowWriter]:
    def register(fn: RowWriter) -> RowWriter:
        for name in names:
            WRITERS[name] = fn
        return fn

    return register


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return "" if value is None else str(value)


# ----------------------------------------------------------- core row writers


@writer("login")
def _login(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    cur.execute("INSERT INTO logins (connection, login_username, login_password) VALUES (?,?,?)",
                (conn, text(inc.fields.get("username")), text(inc.fields.get("password"))))


@writer("download.offer")
def _offer(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    cur.execute("INSERT INTO offers (connection, offer_url) VALUES (?,?)",
                (conn, text(inc.fields.get("url"))))


@writer("download.complete.hash")
def _download(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    cur.execute("INSERT INTO downloads (connection, download_url, download_md5_hash) "
                "VALUES (?,?,?)", (conn, text(inc.fields.get("url")), inc.fields.get("md5")))


class LogSql:
    name = "logsql"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        self.ids: dict[int, int] = {}
        self.bad_rows = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logsql")

    # ------------------------------------------------------------------ setup

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        schema = resources.files("muscipula.sinks").joinpath("schema.sql").read_text("utf-8")
        db.executescript(schema + "\n".join(_EXTRA_DDL))
        seed = json.loads(resources.files("muscipula.sinks").joinpath("seed.json").read_text())
        db.execute("BEGIN")
        for name, uuid, ops in seed["dcerpc"]:
            db.execute("INSERT OR IGNORE INTO dcerpcservices (dcerpcservice_uuid, "
                       "dcerpcservice_name) VALUES (?,?)", (uuid, name))
            (service,) = db.execute("SELECT dcerpcservice FROM dcerpcservices WHERE "
                                    "dcerpcservice_uuid = ?", (uuid,)).fetchone()
            db.executemany(
                "INSERT OR IGNORE INTO dcerpcserviceops (dcerpcservice, dcerpcserviceop_opnum,"
                " dcerpcserviceop_name, dcerpcserviceop_vuln) VALUES (?,?,?,?)",
                [(service, opnum, opname, vuln) for opnum, opname, vuln in ops])
        db.executemany("INSERT OR IGNORE INTO mysql_command_ops (mysql_command_cmd, "
                       "mysql_command_op_name) VALUES (?,?)", seed["mysql_command_ops"])
        db.execute("COMMIT")
        self.db = db

    def open_sync(self) -> None:
        """For a sink process, which has imported every service already."""
        self._open_sync()

    def close_sync(self) -> None:
        self._close_sync()

    async def open(self) -> None:
        from muscipula import services

        for name in services.names():  # protocols register their tables on import
            services.get(name)
        await asyncio.get_running_loop().run_in_executor(self._pool, self._open_sync)

    # ---------------------------------------------------------------- writing

    def _connection(self, cur: sqlite3.Cursor, c: Connection, kind: str | None = None) -> int:
        parent = self.ids.get(c.parent) if c.parent else None
        root = self.ids.get(c.root) if c.root != c.id else None
        cur.execute(
            "INSERT INTO connections (connection_type, connection_transport, "
            "connection_protocol, connection_timestamp, connection_root, connection_parent, "
            "local_host, local_port, remote_host, remote_hostname, remote_port) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (kind or c.type, c.transport, c.protocol, c.start, root, parent, c.local_host,
             c.local_port, c.remote_host, "", c.remote_port))
        rowid = cur.lastrowid
        assert rowid is not None
        self.ids[c.id] = rowid
        return rowid

    def write_sync(self, batch: list[Incident]) -> None:
        assert self.db is not None
        cur = self.db.cursor()
        ids = self.ids
        cur.execute("BEGIN")
        try:
            for inc in batch:
                name = inc.name
                if name.startswith("connection."):
                    if name == "connection.free":
                        ids.pop(inc.conn, None)
                    elif name == "connection.refused":
                        c = inc.fields
                        cur.execute(
                            "INSERT INTO connections (connection_type, connection_transport,"
                            " connection_protocol, connection_timestamp, remote_host, "
                            "remote_port) VALUES ('reject','tcp','',?,?,?)",
                            (inc.time, c.get("remote_host"), c.get("remote_port")))
                    elif "connection" in inc.fields and inc.conn not in ids:
                        self._connection(cur, inc.fields["connection"])
                    continue
                fn = WRITERS.get(name)
                if fn is not None:
                    conn = ids.get(inc.conn)
                    if conn is None and inc.conn:
                        continue  # its connection row was never seen (sink started late)
                    try:
                        fn(cur, inc, conn or 0)
                    except (sqlite3.Error, TypeError, ValueError, KeyError) as exc:
                        self.bad_rows += 1
                        log.warning("logsql: %s not written: %s", name, exc)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    async def write(self, batch: list[Incident]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self.write_sync, batch)

    def _close_sync(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close_sync)
        self._pool.shutdown(wait=True)


# ------------------------------------------------------- helpers for writers


def insert(cur: sqlite3.Cursor, table: str, **row: Any) -> int | None:
    """One row of `table` from column=value pairs; its rowid, for rows that point to it."""
    cur.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({','.join('?' * len(row))})",
                tuple(row.values()))
    return cur.lastrowid


def insert_many(cur: sqlite3.Cursor, table: str, columns: tuple[str, ...],
                rows: list[tuple[Any, ...]]) -> None:
    """Rows of `table`, each a tuple of values in the order of `columns`."""
    cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({','.join('?' * len(columns))})", rows)
