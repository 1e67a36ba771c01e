"""logsql: incidents into SQLite with dionaea's tables, batched by one writer thread.

dionaea committed after every insert and spent most of its time there; here a
batch of incidents is one transaction on a WAL database, written from a single
thread so the event loop never waits on the disk.

Protocols add their own tables with `table()`, and rows with either:
- `rows(name, table, columns)`: a function of the incident's fields returning one row's
  values (the `connection` column comes first, filled in by the sink). Rows of a batch
  are inserted with one executemany per table, of statements of many rows each, and an
  incident whose fields object was already turned into a row in the same batch (the
  server shares the fields of identical requests) is not converted again. This is the
  fast path: use it for incidents that come in floods.
- `writer(name)`: a function given the cursor, the incident and its logsql connection
  id, for incidents that need several dependent rows (it runs inline, in order).

Connection ids are handed out by the sink (it is the database's only writer), so
that rows can point to their connection without waiting for an insert's rowid.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from muscipula.incidents import Connection, Incident

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)
RowWriter = Callable[[sqlite3.Cursor, Incident, int], None]
RowValues = Callable[[Mapping[str, Any]], tuple[Any, ...] | None]

_EXTRA_DDL: list[str] = []
WRITERS: dict[str, RowWriter] = {}
#: incident name -> (INSERT statement, values function); see `rows()`
ROWS: dict[str, tuple[str, RowValues]] = {}
#: rows per INSERT of the fast path: one statement of 50 rows costs SQLite and the
#: sqlite3 module about a third less per row than 50 one-row statements (one step and
#: one reset instead of fifty); bounded by the 999 parameters older SQLite allows
ROWS_PER_STATEMENT = 50
_MANY_ROWS: dict[str, tuple[str, int]] = {}


def table(ddl: str) -> None:
    """DDL (CREATE ... IF NOT EXISTS) for a protocol's own tables."""
    if ddl not in _EXTRA_DDL:
        _EXTRA_DDL.append(ddl)


def writer(*names: str) -> Callable[[RowWriter], RowWriter]:
    def register(fn: RowWriter) -> RowWriter:
        for name in names:
            WRITERS[name] = fn
            ROWS.pop(name, None)
        return fn

    return register


def rows(name: str, table: str, columns: tuple[str, ...]) -> Callable[[RowValues], RowValues]:
    """One row of `table` per `name` incident: (connection, *fn(fields)) in `columns` order.

    `fn` must depend on the fields only (it is not called again for a fields object
    already seen in the batch) and may return None for no row.
    """
    sql = (f"INSERT INTO {table} (connection, {', '.join(columns)}) "
           f"VALUES ({','.join('?' * (len(columns) + 1))})")

    def register(fn: RowValues) -> RowValues:
        ROWS[name] = (sql, fn)
        WRITERS.pop(name, None)
        return fn

    return register


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return "" if value is None else str(value)


def as_json(value: Any) -> str | None:
    """Lists and mappings as compact JSON text (bytes as text); None stays NULL."""
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), default=text)


# ----------------------------------------------------------- core rows


@rows("login", "logins", ("login_username", "login_password"))
def _login(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return text(f.get("username")), text(f.get("password"))


@rows("download.offer", "offers", ("offer_url",))
def _offer(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return (text(f.get("url")),)


@rows("download.complete.hash", "downloads", ("download_url", "download_md5_hash"))
def _download(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return text(f.get("url")), f.get("md5")


@rows("emu.profile", "emu_profiles", ("emu_profile_json",))
def _emu_profile(f: Mapping[str, Any]) -> tuple[Any, ...]:
    profile = f.get("profile")
    return (profile if isinstance(profile, str) else as_json(profile),)


@rows("emu.service", "emu_services", ("emu_service_url",))
def _emu_service(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return (text(f.get("url")),)


@rows("shell.command", "emu_shell_commands", ("emu_shell_command_url",
                                               "emu_shell_command_line"))
def _shell_command(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return text(f.get("shell")), text(f.get("command"))


@rows("connection.free", "connection_ends", (
    "connection_end_reason", "connection_end_bytes_in", "connection_end_bytes_out",
    "connection_end_duration"))
def _end(f: Mapping[str, Any]) -> tuple[Any, ...]:
    reason = f.get("reason")
    return (None if reason is None else text(reason), f.get("bytes_in"), f.get("bytes_out"),
            f.get("duration"))


_EVENT_COLUMNS = ("connection_event_kind", "connection_event_detail", "connection_event_data")


def _data(value: Any) -> bytes | str | None:
    return value if value is None or isinstance(value, bytes) else text(value)


@rows("protocol.error", "connection_events", _EVENT_COLUMNS)
def _protocol_error(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return "protocol.error", text(f.get("detail")), _data(f.get("data"))


@rows("connection.limit", "connection_events", _EVENT_COLUMNS)
def _limit(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return "connection.limit", text(f.get("limit")), _data(f.get("value"))


@rows("store.refused", "connection_events", _EVENT_COLUMNS)
def _store_refused(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return "store.refused", text(f.get("reason")), as_json({"url": f.get("url"),
                                                            "size": f.get("size")})


@rows("connection.tls.hello", "tls_hellos", (
    "tls_hello_sni", "tls_hello_version", "tls_hello_ciphers", "tls_hello_extensions",
    "tls_hello_groups", "tls_hello_point_formats", "tls_hello_alpn", "tls_hello_ja3",
    "tls_hello_ja3_hash"))
def _tls_hello(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return (text(f.get("sni")), f.get("version"), as_json(f.get("ciphers")),
            as_json(f.get("extensions")), as_json(f.get("groups")),
            as_json(f.get("point_formats")), as_json(f.get("alpn")), text(f.get("ja3")),
            text(f.get("ja3_hash")))


_CONNECTION_INSERT = (
    "INSERT INTO connections (connection, connection_type, connection_transport, "
    "connection_protocol, connection_timestamp, connection_root, connection_parent, "
    "local_host, local_port, remote_host, remote_hostname, remote_port) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")


def _add_missing_columns(db: sqlite3.Connection, script: str) -> None:
    """A database made by an older release gets the columns added since (schema changes
    are additive); the tables as the script makes them are read off an empty copy.

    A table that has become a view (http_headers) is renamed `<name>_old`, its rows kept,
    so that the script's CREATE VIEW IF NOT EXISTS makes the view instead of finding the
    table there and leaving it to go stale."""
    fresh = sqlite3.connect(":memory:")
    try:
        fresh.executescript(script)
        views = [r[0] for r in fresh.execute("SELECT name FROM sqlite_master WHERE type='view'")]
        for name in views:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                          (name,)).fetchone():
                _set_aside(db, name)
        tables = [r[0] for r in fresh.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for name in tables:
            have = {r[1] for r in db.execute(f'PRAGMA table_info("{name}")')}
            if not have:
                continue
            for _, column, kind, *_rest in fresh.execute(f'PRAGMA table_info("{name}")'):
                if column not in have:
                    db.execute(f'ALTER TABLE "{name}" ADD COLUMN "{column}" {kind}')
    finally:
        fresh.close()


def _set_aside(db: sqlite3.Connection, name: str) -> None:
    """Rename table `name` to the first free `<name>_old`, `<name>_old2`, ..."""
    target, n = f"{name}_old", 1
    while db.execute("SELECT 1 FROM sqlite_master WHERE name=?", (target,)).fetchone():
        n += 1
        target = f"{name}_old{n}"
    log.warning("logsql: table %s is a view now; its old rows are kept in %s", name, target)
    db.execute(f'ALTER TABLE "{name}" RENAME TO "{target}"')


class LogSql:
    name = "logsql"

    def __init__(self, path: Path, max_late: int = 50_000) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        #: the server's connection id -> its connections row, while it is open
        self.ids: dict[int, int] = {}
        #: the same for the last `max_late` ended connections, for what comes after the end
        #: (downloads, emulation): oldest first
        self.ended: dict[int, int] = {}
        self.max_late = max_late
        self.next_id = 1
        self.bad_rows = 0
        #: incidents not written because their connection was never seen (sink started late):
        #: the sink process reports them failed, not written
        self.skipped = 0
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ setup

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        schema = resources.files("muscipula.sinks").joinpath("schema.sql").read_text("utf-8")
        script = schema + "\n".join(_EXTRA_DDL)
        _add_missing_columns(db, script)  # first: the script's indexes may name new columns
        db.executescript(script)
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
        (last,) = db.execute("SELECT coalesce(max(connection), 0) FROM connections").fetchone()
        self.next_id = last + 1
        self.db = db

    def open_sync(self) -> None:
        """For a sink process, which has loaded every protocol's records already."""
        self._open_sync()

    def close_sync(self) -> None:
        self._close_sync()

    async def open(self) -> None:
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        from muscipula.sinks.records import load_all

        load_all()  # protocols register their tables and rows there
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logsql")
        await asyncio.get_running_loop().run_in_executor(self._pool, self._open_sync)

    # ---------------------------------------------------------------- writing

    def _connection(self, c: Connection, out: list[tuple[Any, ...]], replayed: bool = False
                    ) -> int:
        ids = self.ids
        if replayed:  # announced again to a restarted sink: its row may be there already
            rowid = self._existing(c)
            if rowid is not None:
                ids[c.id] = rowid
                return rowid
        rowid = self.next_id
        self.next_id = rowid + 1
        parent = ids.get(c.parent) if c.parent else None
        root = ids.get(c.root, rowid) if c.root != c.id else rowid
        out.append((rowid, c.type, c.transport, c.protocol, c.start, root, parent,
                    c.local_host, c.local_port, c.remote_host, "", c.remote_port))
        ids[c.id] = rowid
        return rowid

    def _existing(self, c: Connection) -> int | None:
        """The row an earlier sink process wrote for `c`, if it did (found by start time)."""
        assert self.db is not None
        row = self.db.execute(
            # not by transport: STARTTLS turns a tcp connection into a tls one meanwhile
            "SELECT connection FROM connections WHERE connection_timestamp = ? AND "
            "connection_type = ? AND local_port IS ? AND "
            "remote_host IS ? AND remote_port IS ? ORDER BY connection DESC LIMIT 1",
            (c.start, c.type, c.local_port, c.remote_host, c.remote_port),
        ).fetchone()
        return None if row is None else int(row[0])

    def write_sync(self, batch: list[Incident]) -> None:
        self.write_rows([(i.name, i.conn, i.time, i.fields) for i in batch])

    def write_rows(self, batch: list[tuple[str, int, float, Mapping[str, Any]]]) -> None:
        """One transaction for a batch of (name, conn, time, fields)."""
        assert self.db is not None
        cur = self.db.cursor()
        ids = self.ids
        conns: list[tuple[Any, ...]] = []
        pending: dict[str, list[tuple[Any, ...]]] = {}  # INSERT -> rows
        # (name, id(fields)) -> values, in this batch: one fields object may be emitted
        # under several names (download.complete.hash and .unique share theirs)
        seen: dict[tuple[str, int], tuple[Any, ...] | None] = {}
        row_fns, writers = ROWS, WRITERS
        # a flood repeats one fields object (the server shares identical requests'):
        # (name, fields, its rows, its values) of the last row, to append the next at once
        repeat: tuple[str, Mapping[str, Any], list[tuple[Any, ...]], tuple[Any, ...]] | None
        repeat = None
        cur.execute("BEGIN")
        try:
            for name, cid, when, fields in batch:
                if repeat is not None and fields is repeat[1] and name == repeat[0]:
                    conn = ids.get(cid)
                    if conn is not None:
                        repeat[2].append((conn, *repeat[3]))
                        continue
                spec = row_fns.get(name)
                if spec is None:
                    if name.startswith("connection."):
                        if name == "connection.refused":
                            rowid = self.next_id
                            self.next_id += 1
                            conns.append((rowid, "reject", "tcp", "", when, rowid, None, None,
                                          None, fields.get("remote_host"), None,
                                          fields.get("remote_port")))
                            continue
                        if cid not in ids and name != "connection.free":
                            c = fields.get("connection")
                            if isinstance(c, Connection):
                                self._connection(c, conns, "replayed" in fields)
                    fn = writers.get(name)
                    if fn is not None:
                        conn = ids.get(cid) or self.ended.get(cid)
                        if conn is not None or not cid:
                            if conns:  # an inline writer may read its connection's row
                                cur.executemany(_CONNECTION_INSERT, conns)
                                conns = []
                            self._inline(cur, fn, Incident(name, cid, when, fields), conn or 0)
                        else:
                            self.skipped += 1
                    if name == "connection.free":
                        self._ended(cid)
                    continue
                conn = ids.get(cid)
                if conn is None and cid in self.ended and name != "connection.free":
                    conn = self.ended[cid]  # it came after its connection ended
                if conn is None and name == "connection.free":
                    # a connection that ended while no sink process knew it (one died):
                    # its record comes with the end, found again or written now
                    c = fields.get("connection")
                    if isinstance(c, Connection):
                        conn = self._connection(c, conns, True)
                if conn is None:
                    if cid:
                        self.skipped += 1  # its connection row was never seen
                        continue
                    conn = 0
                key = (name, id(fields))
                if key in seen:
                    values = seen[key]
                else:
                    try:
                        values = seen[key] = spec[1](fields)
                    except (TypeError, ValueError, KeyError, AttributeError) as exc:
                        self.bad_rows += 1
                        log.warning("logsql: %s not written: %s", name, exc)
                        continue
                if values is not None:
                    out = pending.get(spec[0])
                    if out is None:
                        out = pending[spec[0]] = []
                    out.append((conn, *values))
                    if name != "connection.free":
                        repeat = (name, fields, out, values)
                if name == "connection.free":
                    self._ended(cid)
            if conns:
                cur.executemany(_CONNECTION_INSERT, conns)
            for sql, values in pending.items():
                self._many(cur, sql, values)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def _ended(self, cid: int) -> None:
        rowid = self.ids.pop(cid, None)
        if rowid is None:
            return
        ended = self.ended
        ended[cid] = rowid
        if len(ended) > self.max_late:
            del ended[next(iter(ended))]

    def _inline(self, cur: sqlite3.Cursor, fn: RowWriter, inc: Incident, conn: int) -> None:
        try:
            fn(cur, inc, conn)
        except (sqlite3.Error, TypeError, ValueError, KeyError, AttributeError) as exc:
            self.bad_rows += 1
            log.warning("logsql: %s not written: %s", inc.name, exc)

    def _many(self, cur: sqlite3.Cursor, sql: str, values: list[tuple[Any, ...]]) -> None:
        """All rows of one INSERT; if one row cannot be bound, the others still go in."""
        many = _MANY_ROWS.get(sql)
        if many is None:
            many = _MANY_ROWS[sql] = _many_rows(sql)
        wide, per = many
        whole = len(values) - len(values) % per
        cur.execute("SAVEPOINT many")
        try:
            if whole:
                cur.executemany(wide, [tuple(chain.from_iterable(values[i:i + per]))
                                       for i in range(0, whole, per)])
            if whole < len(values):
                cur.executemany(sql, values[whole:])
            cur.execute("RELEASE many")
            return
        except (sqlite3.Error, OverflowError, ValueError) as exc:
            cur.execute("ROLLBACK TO many")
            cur.execute("RELEASE many")
            first = exc
        bad = 0
        for row in values:
            try:
                cur.execute(sql, row)
            except (sqlite3.Error, OverflowError, ValueError):
                bad += 1
        if bad:
            self.bad_rows += bad
            log.warning("logsql: %d rows not written by %s: %s", bad, sql.split("(", 1)[0],
                        first)

    async def write(self, batch: list[Incident]) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(self._pool, self.write_sync, batch)

    def _close_sync(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    async def close(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(self._pool, self._close_sync)
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _many_rows(sql: str) -> tuple[str, int]:
    """`sql` (a one-row INSERT ... VALUES (?,...)) made to insert many rows at once."""
    head, one = sql.rsplit(" VALUES ", 1)
    per = max(1, min(ROWS_PER_STATEMENT, 999 // max(one.count("?"), 1)))
    return f"{head} VALUES {','.join([one] * per)}", per


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
