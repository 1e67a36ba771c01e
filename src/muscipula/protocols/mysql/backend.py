"""The SQLite side: one connection per MySQL session, each database an attached schema.

Attacker SQL runs here, so every guard lives here too: an authorizer (no
ATTACH/DETACH, no load_extension, no PRAGMA writes, nothing from the attacker
reaches the schema of another session), a progress handler that bounds each
statement's work in VM steps, a page cap per schema, a cap on rows returned,
and SQLite's own limits on string and SQL length. By default a session works on
in-memory copies of the shipped files, so changes never outlive it nor reach
another session; `persistent` attaches the files themselves.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muscipula.protocols.mysql.templates import ensure

_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer",
                     "sqlite_compileoption_get", "sqlite_compileoption_used", "sqlite_offset"}
# pragmas that only read, whatever their argument
_READ_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "foreign_key_list"}
SYSTEM_SCHEMAS = ("information_schema", "mysql", "performance_schema", "sys")


@dataclass(frozen=True, slots=True)
class Limits:
    max_steps: int = 20_000_000
    max_rows: int = 10_000
    max_db_bytes: int = 32 * 1024 * 1024
    max_value_bytes: int = 16 * 1024 * 1024
    max_sql_bytes: int = 4 * 1024 * 1024
    max_databases: int = 16
    persistent: bool = False


class Interrupted(Exception):
    """The statement used up its step budget."""


@dataclass(slots=True)
class Outcome:
    """What one statement did: rows (with names and declared types) or a change count."""

    names: list[str]
    decltypes: list[str]
    rows: list[tuple[Any, ...]]
    rowcount: int
    lastrowid: int
    has_rows: bool


class Engine:
    """Shared per service: where the databases live and the bytes each session copies."""

    def __init__(self, state_dir: Path, databases: dict[str, tuple[str, str]],
                 limits: Limits) -> None:
        self.limits = limits
        self.paths: dict[str, Path] = {}
        self.images: dict[str, bytes] = {}
        base = state_dir / "mysql"
        for name, (file, template) in databases.items():
            path = Path(file) if file else base / f"{name}.sqlite"
            if not path.is_absolute():
                path = state_dir / path
            ensure(path, template)
            self.paths[name] = path
            if not limits.persistent:
                src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    self.images[name] = src.serialize()
                finally:
                    src.close()

    def open(self, functions: dict[str, Callable[..., Any]] | None = None) -> Session:
        return Session(self, functions or {})


class Session:
    """One MySQL session's SQLite connection; all calls are synchronous and bounded."""

    def __init__(self, engine: Engine, functions: dict[str, Callable[..., Any]]) -> None:
        self.limits = engine.limits
        self.trusted = True
        self.steps = 0
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False,
                             cached_statements=16)
        self.db = db
        self.schemas: list[str] = []
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.limits.max_value_bytes)
        db.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, self.limits.max_sql_bytes)
        db.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, min(self.limits.max_databases + 4, 125))
        db.execute("PRAGMA temp_store = MEMORY")
        pages = max(self.limits.max_db_bytes // 4096, 16)
        db.execute(f"PRAGMA temp.max_page_count = {pages}")
        for name, path in engine.paths.items():
            if self.limits.persistent:
                db.execute("ATTACH ? AS " + quote(name), (str(path),))
            else:
                db.execute("ATTACH ':memory:' AS " + quote(name))
                db.deserialize(engine.images[name], name=name)
            self._cap(name)
            self.schemas.append(name)
        for name, fn in functions.items():
            db.create_function(name, -1, fn)
        db.set_authorizer(self._authorize)
        db.set_progress_handler(self._progress, 10_000)
        self.trusted = False

    # --------------------------------------------------------------- guards

    def _cap(self, schema: str) -> None:
        pages = max(self.limits.max_db_bytes // 4096, 16)
        self.db.execute(f"PRAGMA {quote(schema)}.page_size = 4096")
        self.db.execute(f"PRAGMA {quote(schema)}.max_page_count = {pages}")

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, dbname: str | None,
                   source: str | None) -> int:
        if self.trusted:
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            if (arg1 or "").lower() in _READ_PRAGMAS:
                return sqlite3.SQLITE_OK
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
            return sqlite3.SQLITE_DENY
        if action in (sqlite3.SQLITE_CREATE_VTABLE, sqlite3.SQLITE_DROP_VTABLE):
            return sqlite3.SQLITE_DENY
        if dbname in SYSTEM_SCHEMAS and action not in (sqlite3.SQLITE_READ,
                                                       sqlite3.SQLITE_SELECT):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def _progress(self) -> int:
        self.steps += 10_000
        return 1 if self.steps > self.limits.max_steps else 0

    # -------------------------------------------------------------- running

    def run(self, sql: str, params: Iterable[Any] = ()) -> Outcome:
        """One statement under the guards; rows beyond max_rows are dropped."""
        self.steps = 0
        try:
            cur = self.db.execute(sql, tuple(params))
            rows: list[tuple[Any, ...]] = []
            names: list[str] = []
            has_rows = cur.description is not None
            if has_rows:
                names = [d[0] for d in cur.description]
                rows = cur.fetchmany(self.limits.max_rows)
            rowcount = cur.rowcount
            lastrowid = cur.lastrowid or 0
            cur.close()
        except sqlite3.OperationalError as exc:
            if str(exc) == "interrupted":
                raise Interrupted from None
            raise
        return Outcome(names, [], rows, max(rowcount, 0), lastrowid, has_rows)

    def internal(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Our own bookkeeping statements: no authorizer, still bounded."""
        self.trusted = True
        try:
            return self.db.execute(sql, tuple(params)).fetchmany(self.limits.max_rows)
        finally:
            self.trusted = False

    def script(self, sql: str) -> None:
        self.trusted = True
        try:
            self.db.executescript(sql)
        finally:
            self.trusted = False

    # -------------------------------------------------------------- catalog

    def databases(self) -> list[str]:
        return list(self.schemas)

    def has_database(self, name: str) -> bool:
        return name.lower() in (s.lower() for s in self.schemas)

    def canonical(self, name: str) -> str | None:
        for s in self.schemas:
            if s.lower() == name.lower():
                return s
        return None

    def create_database(self, name: str) -> bool:
        """ATTACH a new empty in-memory schema; False at the database cap."""
        if len(self.schemas) >= self.limits.max_databases:
            return False
        self.trusted = True
        try:
            self.db.execute("ATTACH ':memory:' AS " + quote(name))
            self._cap(name)
        finally:
            self.trusted = False
        self.schemas.append(name)
        return True

    def drop_database(self, name: str) -> None:
        self.trusted = True
        try:
            self.db.execute("DETACH " + quote(name))
        finally:
            self.trusted = False
        self.schemas = [s for s in self.schemas if s != name]

    def tables(self, schema: str) -> list[tuple[str, str]]:
        """(name, type) of tables and views, type as MySQL names it."""
        rows = self.internal(f"SELECT name, type FROM {quote(schema)}.sqlite_master "
                             "WHERE type IN ('table','view') AND name NOT LIKE 'sqlite_%' "
                             "ORDER BY name")
        return [(n, "VIEW" if t == "view" else "BASE TABLE") for n, t in rows]

    def columns(self, schema: str, table: str) -> list[tuple[str, str, bool, Any, bool]]:
        """(name, declared type, not null, default, primary key) per column."""
        rows = self.internal(f"PRAGMA {quote(schema)}.table_info({quote(table)})")
        return [(r[1], r[2] or "", bool(r[3]), r[4], bool(r[5])) for r in rows]

    def table_sql(self, schema: str, table: str) -> str | None:
        rows = self.internal(f"SELECT sql FROM {quote(schema)}.sqlite_master WHERE "
                             "type IN ('table','view') AND name = ? COLLATE NOCASE", (table,))
        return rows[0][0] if rows else None

    def count(self, schema: str, table: str) -> int:
        try:
            return int(self.internal(f"SELECT count(*) FROM {quote(schema)}.{quote(table)}")
                       [0][0])
        except sqlite3.Error:
            return 0

    def close(self) -> None:
        self.db.close()


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_AUTOINC = re.compile(r"\bAUTOINCREMENT\b", re.I)


def is_autoincrement(table_sql: str | None, column: str) -> bool:
    if not table_sql or not _AUTOINC.search(table_sql):
        return False
    pattern = rf"[\"`]?{re.escape(column)}[\"`]?\s+INTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT"
    return re.search(pattern, table_sql, re.I) is not None


def native_hash(password: str) -> str:
    """mysql_native_password's stored form: '*' + upper hex SHA1(SHA1(password))."""
    inner = hashlib.sha1(password.encode()).digest()
    return "*" + hashlib.sha1(inner).hexdigest().upper()
