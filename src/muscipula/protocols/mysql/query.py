"""One MySQL session's SQL: what MySQL answers itself, what goes to SQLite, what is an attack.

`SqlSession.execute` takes the text of a COM_QUERY and returns results or raises
SqlError. Statements MySQL answers from its own state (SHOW, SET, USE, system
variables, the current user) are answered here; the rest is translated from
MySQL to SQLite with sqlglot and run on the session's backend connection.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError, TokenError
from sqlglot.tokens import TokenType

from muscipula.protocols.mysql import errors as E
from muscipula.protocols.mysql import types
from muscipula.protocols.mysql import wire as w
from muscipula.protocols.mysql.backend import (
    SYSTEM_SCHEMAS,
    Engine,
    Interrupted,
    Session,
    is_autoincrement,
)
from muscipula.protocols.mysql.parsecache import (
    Parsed,
    Read,
    Rewritten,
    StatementCache,
    parse,
    split,
)
from muscipula.protocols.mysql.results import Column, Done, Effects, Result, Rows, infer
from muscipula.protocols.mysql.urls import offers_in_query
from muscipula.protocols.mysql.variables import status

logging.getLogger("sqlglot").setLevel(logging.CRITICAL)

_EXEC_COMMENT = re.compile(r"/\*!\d{0,6}")
_INTO_FILE = re.compile(r"""(?is)\binto\s+(dumpfile|outfile)\s+(['"])((?:\\.|(?!\2).)*)\2""")
_UDF = re.compile(r"""(?is)^\s*create\s+(?:aggregate\s+)?function\s+(?:if\s+not\s+exists\s+)?
                  [`"]?([\w$.]+)[`"]?\s+returns\s+(\w+)\s+soname\s+(['"])(.*?)\3""", re.X)
_LIKE = re.compile(r"""(?is)\s+like\s+(['"])(.*?)\1""")
_WHERE_NAME = re.compile(r"""(?is)\s+where\s+\w+\s*(?:=|like)\s*(['"])(.*?)\1""")
_ESC = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "b": "\b"}


@dataclass(slots=True)
class Identity:
    user: str
    host: str
    thread_id: int
    local_host: str
    port: int = 0


#: a rewrite's SQLite text is kept for reuse only up to four times its statement and this
REWRITE_SLACK = 1024


def _same(value: Any) -> tuple[type, Any]:
    """What a session value must equal for a cached rewrite to be reused: its type and value,
    floats and decimals by their text (-0.0 equals 0.0, and 1.50 equals 1.5, as numbers)."""
    if isinstance(value, (float, Decimal)):
        return type(value), repr(value)
    return type(value), value


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "`'\"":
        s = s[1:-1]
    return s


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESC.get(m.group(1), m.group(1)), s)


def _like(pattern: str) -> Callable[[str], bool]:
    glob = "".join("*" if c == "%" else "?" if c == "_" else "[" + c + "]" if c in "[]*?" else c
                   for c in pattern)
    return lambda name: fnmatch.fnmatchcase(name.lower(), glob.lower())


def strip_comments(sql: str) -> str:
    """MySQL runs `/*!NNNNN ... */`; other comments are dropped by the tokenizer."""
    if "/*!" in sql:
        sql = _EXEC_COMMENT.sub(" ", sql)
        sql = sql.replace("*/", " ") if "/*" not in sql else sql
    return sql


class SqlSession:
    """SQL state of one connection: current database, variables, the SQLite backend."""

    def __init__(self, engine: Engine, profile_version: str, modern: bool,
                 globals_: dict[str, str], who: Identity, now: float, boot: float,
                 max_capture: int, accounts: list[tuple[str, str, str, str]],
                 cache: StatementCache | None = None) -> None:
        self.engine = engine
        #: the service's parsed statements, shared by its sessions (None: parse every time)
        self.cache = cache
        #: session values the running rewrite read (see `_read`), None outside one
        self._reads: list[Read] | None = None
        self.accounts = accounts
        self.version = profile_version
        self.modern = modern
        self.globals = globals_
        self.vars: dict[str, str] = dict(globals_)
        self.uservars: dict[str, Any] = {}
        self.who = who
        self.db: str | None = None
        self.now = now
        self.boot = boot
        self.questions = 0
        self.last_insert_id = 0
        self.found_rows = 0
        self.row_count = -1
        self.max_capture = max_capture
        self.written: set[str] = set()
        self.udfs: dict[str, str] = {}
        self._backend: Session | None = None
        #: an error a MySQL function raised inside SQLite (EXTRACTVALUE, GTID_SUBSET)
        self.raised: E.SqlError | None = None
        self.effects = Effects()

    # ------------------------------------------------------------------ helpers

    @property
    def backend(self) -> Session:
        if self._backend is None:
            self._backend = self.engine.open(self._functions())
            self._build_system_schemas()
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    @property
    def account(self) -> str:
        return f"{self.who.user}@%"

    @property
    def user_at_host(self) -> str:
        return f"{self.who.user}@{self.who.host}"

    def stamp(self) -> str:
        return dt.datetime.fromtimestamp(self.now, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    def databases(self) -> list[str]:
        system = ["information_schema", "mysql", "performance_schema"]
        if self.modern:
            system.append("sys")
        user = [d for d in self.backend.databases() if d not in SYSTEM_SCHEMAS]
        return sorted(set(system) | set(user))

    def known_db(self, name: str) -> str | None:
        for d in self.databases():
            if d.lower() == name.lower():
                return d
        return None

    def autocommit(self) -> bool:
        return self.vars.get("autocommit", "ON") in ("ON", "1")

    # ------------------------------------------------------------- functions

    def _functions(self) -> dict[str, Callable[..., Any]]:
        def unhex(v: Any = None, *_: Any) -> Any:
            if v is None:
                return None
            s = v.decode("latin-1") if isinstance(v, bytes) else str(v)
            try:
                return bytes.fromhex(s if len(s) % 2 == 0 else "0" + s)
            except ValueError:
                return None

        def digest(name: str) -> Callable[..., Any]:
            def fn(v: Any = None, *_: Any) -> Any:
                if v is None:
                    return None
                data = v if isinstance(v, bytes) else str(v).encode()
                return hashlib.new(name, data).hexdigest()
            return fn

        def concat_ws(sep: Any = None, *parts: Any) -> Any:
            if sep is None:
                return None
            return str(sep).join(str(p) for p in parts if p is not None)

        def fail(err: E.SqlError) -> Any:
            self.raised = err
            raise ValueError(err.message)

        def xpath(_doc: Any = None, path: Any = None, *_: Any) -> Any:
            text = _text(path)
            if text is None:
                return None
            if text and not (text[0].isalnum() or text[0] in "/.@*("):
                return fail(E.SqlError(1105, "HY000", f"XPATH syntax error: '{text[:32]}'"))
            return ""

        def gtid_subset(a: Any = None, *_: Any) -> Any:
            text = _text(a)
            if text and not re.fullmatch(r"[0-9a-fA-F-]{36}(:\d+(-\d+)?)+", text):
                return fail(E.SqlError(1772, "HY000",
                                       f"Malformed GTID set specification '{text[:512]}'."))
            return 1

        return {
            "elt": lambda n=None, *items: None if n is None or not 1 <= int(n) <= len(items)
            else items[int(n) - 1],
            "mid": _mid, "substring_index": _substring_index,
            "strcmp": lambda a=None, b=None, *_: None if a is None or b is None
            else (str(a) > str(b)) - (str(a) < str(b)),
            "lpad": lambda s=None, n=0, p=" ", *_: _pad(s, n, p, left=True),
            "rpad": lambda s=None, n=0, p=" ", *_: _pad(s, n, p, left=False),
            "unix_timestamp": lambda *a: int(self.now) if not a else _epoch(a[0]),
            "unix_to_time": lambda v=None, *_: None if v is None else dt.datetime.fromtimestamp(
                float(v), dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "current_role": lambda *_: "NONE", "extractvalue": xpath,
            "updatexml": lambda doc=None, path=None, *_: xpath(doc, path),
            "gtid_subset": gtid_subset, "gtid_subtract": lambda a=None, *_: gtid_subset(a) and a,
            "unhex": unhex, "md5": digest("md5"), "sha1": digest("sha1"), "sha": digest("sha1"),
            "sha2": lambda v=None, bits=256, *_: None if v is None else hashlib.new(
                {224: "sha224", 256: "sha256", 384: "sha384", 512: "sha512", 0: "sha256"}.get(
                    int(bits or 0), "sha256"), v if isinstance(v, bytes) else str(v).encode()
            ).hexdigest(),
            "sleep": lambda *_: 0, "benchmark": lambda *_: 0, "load_file": lambda *_: None,
            "concat_ws": concat_ws, "version": lambda *_: self.version,
            "database": lambda *_: self.db, "schema": lambda *_: self.db,
            "user": lambda *_: self.user_at_host, "system_user": lambda *_: self.user_at_host,
            "session_user": lambda *_: self.user_at_host,
            "current_user": lambda *_: self.account, "connection_id": lambda *_: self.who.thread_id,
            "last_insert_id": lambda *_: self.last_insert_id,
            "found_rows": lambda *_: self.found_rows, "row_count": lambda *_: self.row_count,
            "now": lambda *_: self.stamp(), "sysdate": lambda *_: self.stamp(),
            "localtime": lambda *_: self.stamp(), "current_timestamp": lambda *_: self.stamp(),
            "utc_timestamp": lambda *_: self.stamp(), "curdate": lambda *_: self.stamp()[:10],
            "curtime": lambda *_: self.stamp()[11:], "uuid": lambda *_: self._uuid(),
            "from_base64": lambda v=None, *_: None if v is None else _b64(v),
            "to_base64": lambda v=None, *_: None if v is None else __import__("base64")
            .b64encode(v if isinstance(v, bytes) else str(v).encode()).decode(),
            "char_length": lambda v=None, *_: None if v is None else len(str(v)),
            "ord": lambda v=None, *_: None if not v else (v[0] if isinstance(v, bytes)
                                                          else ord(str(v)[0])),
            "ascii": lambda v=None, *_: None if v is None else (
                (v[0] if isinstance(v, bytes) else ord(str(v)[0])) if v else 0),
        }

    def _uuid(self) -> str:
        h = hashlib.sha1(f"{self.now}:{self.who.thread_id}:{self.questions}".encode()).hexdigest()
        return f"{h[:8]}-{h[8:12]}-11ef-{h[16:20]}-{h[20:32]}"

    def _build_system_schemas(self) -> None:
        b = self._backend
        assert b is not None
        b.create_database("information_schema")
        b.create_database("mysql")
        b.script("""
        CREATE TABLE information_schema.SCHEMATA (CATALOG_NAME, SCHEMA_NAME,
          DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, SQL_PATH);
        CREATE TABLE information_schema.TABLES (TABLE_CATALOG, TABLE_SCHEMA, TABLE_NAME,
          TABLE_TYPE, ENGINE, VERSION, ROW_FORMAT, TABLE_ROWS, AVG_ROW_LENGTH, DATA_LENGTH,
          AUTO_INCREMENT, CREATE_TIME, TABLE_COLLATION, TABLE_COMMENT);
        CREATE TABLE information_schema.COLUMNS (TABLE_CATALOG, TABLE_SCHEMA, TABLE_NAME,
          COLUMN_NAME, ORDINAL_POSITION, COLUMN_DEFAULT, IS_NULLABLE, DATA_TYPE,
          CHARACTER_MAXIMUM_LENGTH, COLUMN_TYPE, COLUMN_KEY, EXTRA, PRIVILEGES, COLUMN_COMMENT);
        CREATE TABLE information_schema.USER_PRIVILEGES (GRANTEE, TABLE_CATALOG,
          PRIVILEGE_TYPE, IS_GRANTABLE);
        CREATE TABLE mysql.user (Host, User, Select_priv, Insert_priv, Update_priv,
          Delete_priv, Create_priv, Drop_priv, File_priv, Grant_priv, Super_priv,
          authentication_string, plugin, password_expired, account_locked);
        CREATE TABLE mysql.db (Host, Db, User, Select_priv, Insert_priv);
        CREATE TABLE mysql.func (name, ret, dl, type);
        """)
        for host, user, auth, plugin in self.accounts:
            b.internal("INSERT INTO mysql.user VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (host, user, *(["Y"] * 9 if user == "root" else ["N"] * 9), auth,
                        plugin, "N", "N" if user == "root" else "Y"))
        self._refresh_information_schema()

    def _refresh_information_schema(self) -> None:
        b = self.backend
        b.script("DELETE FROM information_schema.SCHEMATA; DELETE FROM information_schema.TABLES;"
                 " DELETE FROM information_schema.COLUMNS;"
                 " DELETE FROM information_schema.USER_PRIVILEGES;")
        cs = "utf8mb4" if self.modern else "latin1"
        coll = "utf8mb4_0900_ai_ci" if self.modern else "latin1_swedish_ci"
        for name in self.databases():
            b.internal("INSERT INTO information_schema.SCHEMATA VALUES ('def',?,?,?,NULL)",
                       (name, "utf8mb3" if name == "information_schema" and self.modern
                        else cs, coll))
        for schema in [d for d in b.databases() if d not in SYSTEM_SCHEMAS] + ["mysql"]:
            for table, kind in b.tables(schema):
                rows = b.count(schema, table)
                b.internal("INSERT INTO information_schema.TABLES VALUES ('def',?,?,?,?,10,"
                           "'Dynamic',?,?,?,NULL,?,?,'')",
                           (schema, table, kind, "InnoDB" if kind == "BASE TABLE" else None,
                            rows, 100 if rows else 0, 16384, "2024-01-15 10:12:31", coll))
                sql = b.table_sql(schema, table)
                for pos, (col, decl, notnull, default, pk) in enumerate(
                        b.columns(schema, table), 1):
                    ctype = mysql_type(decl, pk, self.modern)
                    b.internal("INSERT INTO information_schema.COLUMNS VALUES ('def',?,?,?,?,?,"
                               "?,?,NULL,?,?,?,'select,insert,update,references','')",
                               (schema, table, col, pos, _default(default),
                                "NO" if notnull or pk else "YES", ctype.split("(")[0]
                                .split(" ")[0], ctype, "PRI" if pk else "",
                                "auto_increment" if is_autoincrement(sql, col) else ""))
        b.internal("INSERT INTO information_schema.USER_PRIVILEGES VALUES (?, 'def', "
                   "'ALL PRIVILEGES', 'YES')", (f"'{self.who.user}'@'%'",))

    # --------------------------------------------------------------- dispatch

    def execute(self, sql: str, now: float) -> list[Result]:
        """Every statement of one COM_QUERY; stops at the first error (raised)."""
        self.now = now
        self.effects = Effects()
        text = strip_comments(sql)
        for url in offers_in_query(sql):
            self.effects.offers.append(url)
        if not text.strip():
            raise E.empty_query()
        out: list[Result] = []
        for stmt in (self.cache.split(text) if self.cache is not None else split(text)):
            self.questions += 1
            out.append(self.statement(stmt.strip()))
        return out

    def statement(self, stmt: str) -> Result:
        head = re.match(r"[\s(]*(\w+)(?:\s+(\w+))?(?:\s+(\w+))?", stmt)
        if head is None:
            raise E.syntax(stmt)
        first = head.group(1).lower()
        second = (head.group(2) or "").lower()
        if first in ("select", "with") and _INTO_FILE.search(stmt):
            return self.into_file(stmt)
        if first == "show":
            return self.show(stmt)
        if first in ("describe", "desc") or (first == "explain" and second not in (
                "select", "insert", "update", "delete", "format", "analyze", "extended")):
            return self.describe(stmt.split(None, 1)[1] if " " in stmt else "")
        if first == "use":
            return self.use(_unquote(stmt.split(None, 1)[1].strip().rstrip(";"))
                            if " " in stmt else "")
        if first == "set":
            return self.set(stmt)
        if first == "load":
            return self.load(stmt)
        if first in ("create", "drop") and second in ("database", "schema"):
            return self.database_ddl(first, stmt)
        if first == "create" and _UDF.match(stmt):
            return self.udf(stmt)
        if first == "drop" and second == "function":
            name = _unquote(stmt.split()[-1]).lower()
            self.udfs.pop(name, None)
            return Done()
        if first in ("begin", "commit", "rollback", "savepoint", "release", "flush", "lock",
                     "unlock", "kill", "grant", "revoke", "analyze", "optimize", "check",
                     "repair", "reset", "purge", "xa", "do", "handler", "install",
                     "uninstall", "rename") or (first == "start" and second == "transaction"):
            return Done()
        if first in ("create", "alter", "drop") and second in ("user", "role", "event",
                                                               "procedure", "trigger",
                                                               "server", "logfile",
                                                               "tablespace"):
            return Done()
        if first == "call":
            raise ProcedureMissing(self.db, stmt)
        return self.translated(stmt)

    # -------------------------------------------------------------- statements

    def use(self, name: str) -> Result:
        db = self.known_db(name) if name else None
        if db is None:
            raise E.unknown_db(name)
        self.db = db
        return Done()

    def set(self, stmt: str) -> Result:
        body = stmt[3:].strip()
        low = body.lower()
        if low.startswith("names") or low.startswith("character set") \
                or low.startswith("charset"):
            words = body.split()
            cs = _unquote(words[2 if low.startswith("character") else 1]) if len(words) > 1 \
                else "utf8mb4"
            for key in ("character_set_client", "character_set_connection",
                        "character_set_results"):
                self.vars[key] = cs.lower()
            return Done()
        if low.startswith(("transaction", "session transaction", "global transaction",
                           "password", "role", "default role", "autocommit=", "autocommit ")):
            if low.startswith("autocommit"):
                value = body.split("=", 1)[1].strip().strip("'\"").upper()
                self.vars["autocommit"] = "ON" if value in ("1", "ON", "TRUE") else "OFF"
            return Done()
        for part in _split_assignments(body):
            if "=" not in part:
                raise E.syntax(part)
            name, value = part.split("=", 1)
            name = name.strip().lstrip(":").strip()
            value = value.strip().lstrip("=").strip()
            if name.startswith("@") and not name.startswith("@@"):
                self.uservars[_unquote(name[1:]).lower()] = self.scalar(value)
                continue
            key = re.sub(r"(?i)^(@@)?((global|session|local|persist)[. ]\s*)?", "",
                         name).strip().lower()
            if key not in self.vars:
                raise E.unknown_variable(key)
            bare = re.fullmatch(r"[A-Za-z_][\w-]*", value)
            val = value if bare and value.lower() not in ("null", "default") else \
                self.globals.get(key) if bare else self.scalar(value)
            if isinstance(val, int) and key == "autocommit":
                val = "ON" if val else "OFF"
            self.vars[key] = (val.decode("latin-1") if isinstance(val, bytes)
                              else "" if val is None else str(val).upper()
                              if str(val).lower() in ("on", "off") else str(val))
        return Done()

    def scalar(self, expr: str) -> Any:
        result = self.translated("SELECT " + expr)
        assert isinstance(result, Rows)
        return result.rows[0][0] if result.rows and result.rows[0] else None

    def load(self, stmt: str) -> Result:
        if re.match(r"(?is)load\s+data\s+(?:low_priority\s+|concurrent\s+)?local\b", stmt):
            raise E.local_infile(self.modern)
        m = re.search(r"""(?is)infile\s+(['"])(.*?)\1""", stmt)
        if self.modern:
            raise E.SqlError(1290, "HY000", "The MySQL server is running with the "
                                            "--secure-file-priv option so it cannot execute "
                                            "this statement")
        raise E.SqlError(29, "HY000", f"File '{m.group(2) if m else ''}' not found (Errcode: 2)")

    def database_ddl(self, verb: str, stmt: str) -> Result:
        m = re.match(r"(?is)\w+\s+(?:database|schema)\s+(if\s+(?:not\s+)?exists\s+)?([`\"\w$]+)",
                     stmt)
        if m is None:
            raise E.syntax(stmt.split(None, 2)[-1])
        name = _unquote(m.group(2))
        known = self.known_db(name)
        if verb == "create":
            if known:
                if m.group(1):
                    return Done(warnings=1)
                raise E.db_exists(name)
            if not self.backend.create_database(name):
                raise E.SqlError(1041, "HY000", "Out of memory; check if mysqld or some other "
                                                "process uses all available memory; if not, you "
                                                "may have to use 'ulimit' to allow mysqld to use "
                                                "more memory or you can add more swap space")
            return Done(affected=1)
        if not known:
            if m.group(1):
                return Done(warnings=1)
            raise E.SqlError(1008, "HY000", f"Can't drop database '{name}'; database doesn't "
                                            "exist")
        if known in SYSTEM_SCHEMAS:
            raise E.db_denied(self.who.user, self.who.host, known)
        tables = len(self.backend.tables(known))
        self.backend.drop_database(known)
        if self.db == known:
            self.db = None
        return Done(affected=tables)

    def udf(self, stmt: str) -> Result:
        m = _UDF.match(stmt)
        assert m is not None
        name, returns, soname = m.group(1), m.group(2).upper(), m.group(4)
        self.effects.udfs.append({"function": name, "returns": returns, "soname": soname})
        base = re.split(r"[\\/]", soname)[-1]
        if not any(re.split(r"[\\/]", p)[-1] == base for p in self.written):
            raise E.udf_missing(soname, self.modern)
        self.udfs[name.lower()] = returns
        result: Any = 0 if returns == "INTEGER" else 0.0 if returns == "REAL" else ""
        if self._backend is not None:
            self._backend.db.create_function(name, -1, lambda *_: result)
        return Done()

    def into_file(self, stmt: str) -> Result:
        m = _INTO_FILE.search(stmt)
        assert m is not None
        kind, path = m.group(1).lower(), _unescape(m.group(3))
        rest = stmt[m.end():]
        options = ""
        if kind == "outfile":
            opt = re.match(r"(?is)\s*((?:character\s+set|fields|columns|lines)\b.*)$", rest)
            if opt:
                options, rest = opt.group(1), ""
        query = stmt[:m.start()] + " " + rest
        if path in self.written:
            raise E.file_exists(path)
        result = self.translated(query)
        assert isinstance(result, Rows)
        if kind == "dumpfile":
            if len(result.rows) > 1:
                raise E.SqlError(1172, "42000", "Result consisted of more than one row")
            data = b"".join(_raw(v) for v in result.rows[0]) if result.rows else b""
        else:
            data = self._outfile(result.rows, options)
        self.written.add(path)
        url = f"mysql://{self.who.local_host}/{path.lstrip('/')}"
        self.effects.offers.append(url)
        self.effects.captures.append((url, data[: self.max_capture]))
        return Done(affected=len(result.rows))

    def _outfile(self, rows: list[tuple[Any, ...]], options: str) -> bytes:
        fields, lines = b"\t", b"\n"
        for which, literal in re.findall(r"(?is)\b(fields|columns|lines)\b[^;]*?terminated\s+by"
                                         r"\s+('(?:\\.|[^'])*'|0x[0-9a-f]+)", options):
            value = self.scalar(literal)
            value = value if isinstance(value, bytes) else str(value or "").encode()
            if which.lower() == "lines":
                lines = value
            else:
                fields = value
        out = bytearray()
        for row in rows:
            out += fields.join(b"\\N" if v is None else _raw(v) for v in row) + lines
            if len(out) > self.max_capture:
                break
        return bytes(out)

    # -------------------------------------------------------------------- show

    def show(self, stmt: str) -> Result:
        s = re.sub(r"\s+", " ", stmt.strip().rstrip(";")).strip()
        low = s.lower()
        like = _LIKE.search(s) or _WHERE_NAME.search(s)
        match = _like(like.group(2)) if like else (lambda _n: True)
        if re.match(r"show (full )?processlist$", low):
            return self.processlist()
        if re.match(r"show (databases|schemas)\b", low):
            return Rows([Column("Database", length=64)],
                        [(d,) for d in self.databases() if match(d)])
        m = re.match(r"show (full )?tables(?: (?:from|in) ([`\"\w$]+))?", low)
        if m:
            db = self._db_or_error(_unquote(s.split()[-1]) if False else (
                _unquote(re.split(r"(?i) (?:from|in) ", s)[1].split()[0]) if m.group(2)
                else None))
            if like and not _LIKE.search(s):
                match = _like(like.group(2))
            names = [(t, k) for t, k in self._tables(db) if match(t)]
            cols = [Column(f"Tables_in_{db}" + (f" ({like.group(2)})" if _LIKE.search(s)
                                                 else ""), length=64)]
            if m.group(1):
                cols.append(Column("Table_type", length=64))
                return Rows(cols, names)
            return Rows(cols, [(t,) for t, _ in names])
        m = re.match(r"show (full )?(?:columns|fields) (?:from|in) ", low)
        if m:
            rest = s[m.end():]
            return self._columns(rest, full=bool(m.group(1)))
        m = re.match(r"show (global |session |local )?variables", low)
        if m:
            return Rows([Column("Variable_name", length=64), Column("Value", length=1024)],
                        [(k, v) for k, v in self.vars.items() if match(k)])
        m = re.match(r"show (global |session |local )?status", low)
        if m:
            st = status(int(self.now - self.boot), 1, self.questions, self.who.thread_id)
            return Rows([Column("Variable_name", length=64), Column("Value", length=1024)],
                        [(k, v) for k, v in st.items() if match(k)])
        if low.startswith("show grants"):
            return self.grants()
        m = re.match(r"show create table ", low)
        if m:
            return self.create_table(s[m.end():])
        m = re.match(r"show create (?:database|schema) (?:if not exists )?", low)
        if m:
            name = _unquote(s[m.end():])
            db = self.known_db(name)
            if db is None:
                raise E.unknown_db(name)
            cs = "utf8mb4 COLLATE utf8mb4_0900_ai_ci" if self.modern else "latin1"
            return Rows([Column("Database", length=64), Column("Create Database", length=1024)],
                        [(db, f"CREATE DATABASE `{db}` /*!40100 DEFAULT CHARACTER SET {cs} */"
                          + (" /*!80016 DEFAULT ENCRYPTION='N' */" if self.modern else ""))])
        if re.match(r"show (warnings|errors)", low):
            return Rows([Column("Level", length=7), Column("Code", w.T_LONG, 4),
                         Column("Message", length=512)], [])
        if re.match(r"show (storage )?engines", low):
            cols = ["Engine", "Support", "Comment", "Transactions", "XA", "Savepoints"]
            return Rows([Column(c) for c in cols], [
                ("InnoDB", "DEFAULT", "Supports transactions, row-level locking, and foreign "
                 "keys", "YES", "YES", "YES"),
                ("MyISAM", "YES", "MyISAM storage engine", "NO", "NO", "NO"),
                ("MEMORY", "YES", "Hash based, stored in memory, useful for temporary tables",
                 "NO", "NO", "NO"),
                ("CSV", "YES", "CSV storage engine", "NO", "NO", "NO")])
        if re.match(r"show (master|slave|replica|binary) ", low) or low in (
                "show master status", "show slave status"):
            return Rows([Column("File"), Column("Position", w.T_LONGLONG, 20)], [])
        if re.match(r"show (full )?(table status|triggers|events|plugins|privileges|"
                    r"procedure status|function status|open tables|index|indexes|keys)", low):
            return Rows([Column("Name", length=64)], [])
        if re.match(r"show (character set|charset|collation)", low):
            return Rows([Column("Charset" if "coll" not in low else "Collation", length=64),
                         Column("Description", length=256)],
                        [("utf8mb4", "UTF-8 Unicode"), ("latin1", "cp1252 West European")])
        raise E.syntax(s[5:] if len(s) > 5 else "")

    def _db_or_error(self, name: str | None) -> str:
        if name is None:
            if self.db is None:
                raise E.no_db()
            return self.db
        db = self.known_db(name)
        if db is None:
            raise E.unknown_db(name)
        return db

    def _tables(self, db: str) -> list[tuple[str, str]]:
        if db in ("performance_schema", "sys"):
            return []
        if db == "information_schema":
            return [(t, "SYSTEM VIEW") for t in ("COLUMNS", "SCHEMATA", "TABLES",
                                                 "USER_PRIVILEGES")]
        return self.backend.tables(db)

    def _columns(self, rest: str, full: bool) -> Result:
        parts = re.split(r"(?i)\s+(?:from|in)\s+", rest.strip())
        target = parts[0].split()[0] if parts[0] else ""
        if "." in target and len(parts) == 1:
            db_name, table = (_unquote(p) for p in target.split(".", 1))
        else:
            db_name, table = (_unquote(parts[1].split()[0]) if len(parts) > 1 else None,
                              _unquote(target))
        db = self._db_or_error(db_name)
        return self.describe_table(db, table, full)

    def describe(self, rest: str) -> Result:
        target = rest.strip().rstrip(";").split()[0] if rest.strip() else ""
        if "." in target:
            db_name, table = (_unquote(p) for p in target.split(".", 1))
            db = self._db_or_error(db_name)
        else:
            db, table = self._db_or_error(None), _unquote(target)
        return self.describe_table(db, table, False)

    def describe_table(self, db: str, table: str, full: bool) -> Result:
        if db in ("performance_schema", "sys") or not self._table_exists(db, table):
            raise E.no_table(db, table)
        sql = self.backend.table_sql(db, table)
        rows = []
        for name, decl, notnull, default, pk in self.backend.columns(db, table):
            extra = "auto_increment" if is_autoincrement(sql, name) else ""
            row: tuple[Any, ...] = (name, mysql_type(decl, pk, self.modern),
                                    "NO" if notnull or pk else "YES", "PRI" if pk else "",
                                    _default(default), extra)
            if full:
                row = (row[0], row[1], None, *row[2:], "select,insert,update,references", "")
            rows.append(row)
        names = ["Field", "Type", "Null", "Key", "Default", "Extra"]
        if full:
            names = ["Field", "Type", "Collation", "Null", "Key", "Default", "Extra",
                     "Privileges", "Comment"]
        return Rows([Column(n, length=64) for n in names], rows)

    def _table_exists(self, db: str, table: str) -> bool:
        return any(t.lower() == table.lower() for t, _ in self._tables(db))

    def create_table(self, rest: str) -> Result:
        target = rest.strip().split()[0]
        if "." in target:
            db, table = (_unquote(p) for p in target.split(".", 1))
            db = self._db_or_error(db)
        else:
            db, table = self._db_or_error(None), _unquote(target)
        if not self._table_exists(db, table):
            raise E.no_table(db, table)
        sql = self.backend.table_sql(db, table)
        lines = []
        key = None
        for name, decl, notnull, default, pk in self.backend.columns(db, table):
            line = f"  `{name}` {mysql_type(decl, pk, self.modern)}"
            if notnull or pk:
                line += " NOT NULL"
            if default is not None:
                line += f" DEFAULT {default}"
            elif not (notnull or pk):
                line += " DEFAULT NULL"
            if is_autoincrement(sql, name):
                line += " AUTO_INCREMENT"
            if pk:
                key = name
            lines.append(line)
        if key:
            lines.append(f"  PRIMARY KEY (`{key}`)")
        cs = "utf8mb4 COLLATE=utf8mb4_0900_ai_ci" if self.modern else "latin1"
        text = (f"CREATE TABLE `{table}` (\n" + ",\n".join(lines)
                + f"\n) ENGINE=InnoDB DEFAULT CHARSET={cs}")
        return Rows([Column("Table", length=64), Column("Create Table", length=1024)],
                    [(table, text)])

    def grants(self) -> Result:
        user = self.who.user
        if self.modern:
            text = f"GRANT ALL PRIVILEGES ON *.* TO `{user}`@`%` WITH GRANT OPTION"
        else:
            text = (f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%' IDENTIFIED BY PASSWORD "
                    f"'{self._hash_of(user)}' WITH GRANT OPTION")
        return Rows([Column(f"Grants for {user}@%", length=1024)], [(text,)])

    def _hash_of(self, user: str) -> str:
        for _host, name, auth, _plugin in self.accounts:
            if name == user and auth.startswith("*"):
                return auth
        digest = hashlib.sha1(f"{user}:{self.accounts!r}".encode()).hexdigest().upper()
        return "*" + digest

    def processlist(self) -> Result:
        cols = [Column("Id", w.T_LONGLONG, 21), Column("User", length=32),
                Column("Host", length=261), Column("db", length=64),
                Column("Command", length=16), Column("Time", w.T_LONG, 7),
                Column("State", length=30), Column("Info", length=100)]
        rows: list[tuple[Any, ...]] = []
        if self.modern:
            rows.append((5, "event_scheduler", "localhost", None, "Daemon",
                         int(self.now - self.boot), "Waiting on empty queue", None))
        rows.append((self.who.thread_id, self.who.user,
                     f"{self.who.host}:{self.who.port}",
                     self.db, "Query", 0, "init" if self.modern else None,
                     "SHOW PROCESSLIST"))
        return Rows(cols, rows)

    # ------------------------------------------------------------- translated

    def translated(self, stmt: str) -> Result:
        """Parse as MySQL, rewrite what MySQL answers itself, run the rest on SQLite."""
        parsed = (self.cache.parsed(stmt, select_names) if self.cache is not None
                  else parse(stmt, select_names))
        if parsed.error is not None:
            raise E.syntax(parsed.error)
        tree = parsed.tree
        if tree is None:
            raise E.empty_query()
        types.check_casts(tree, self.modern)
        names = parsed.names
        typed = types.select_types(tree, self._declared) if isinstance(tree, exp.Select) \
            else None
        if "information_schema" in stmt.lower():
            self._refresh_information_schema()
        sql, insert = self._sqlite(stmt, parsed)
        try:
            out = self.backend.run(sql)
        except Interrupted:
            raise E.interrupted(self.modern) from None
        except sqlite3.Error as exc:
            raised, self.raised = self.raised, None
            raise (raised or self._map_error(exc, stmt)) from None
        if out.has_rows:
            cols = []
            for i, name in enumerate(out.names):
                shown = names[i] if names and i < len(names) and names[i] else name
                col = typed[i] if typed and len(typed) == len(out.names) else None
                if col is None:
                    col = infer(shown, [r[i] for r in out.rows])
                col.name = shown
                cols.append(col)
            self.found_rows = len(out.rows)
            self.row_count = -1
            return Rows(cols, out.rows)
        if insert and out.lastrowid:
            self.last_insert_id = out.lastrowid
        self.row_count = out.rowcount
        return Done(affected=out.rowcount, insert_id=out.lastrowid if insert else 0)

    def _sqlite(self, stmt: str, parsed: Parsed) -> tuple[str, bool]:
        """(SQLite text, is an INSERT) of a parsed statement rewritten for this session.

        The last rewrite's text is reused when every session value it read reads the
        same now; otherwise the tree is copied, rewritten and generated again.
        """
        last = parsed.rewritten
        if last is not None and all(_same(self._SOURCES[kind](self, arg)) == seen
                                    for kind, arg, seen in last.reads):
            return last.sql, last.insert
        assert parsed.tree is not None
        outer, self._reads = self._reads, []
        try:
            tree = parsed.tree.transform(self._rewrite)  # a copy: the cached tree stays
            reads = tuple(self._reads)
        finally:
            self._reads = outer
        try:
            sql = tree.sql(dialect="sqlite")
        except (SqlglotError, RecursionError, ValueError):
            raise E.syntax(stmt) from None
        insert = isinstance(tree, exp.Insert)
        # kept for the next session only if small: values inlined from the session (a
        # user variable of megabytes) would stay in the service-wide cache, uncounted
        if len(sql) <= 4 * len(stmt) + REWRITE_SLACK:
            parsed.rewritten = Rewritten(reads, sql, insert)
        return sql, insert

    #: every session value `_rewrite` may read, by name: what a cached rewrite depends on
    _SOURCES: dict[str, Callable[[SqlSession, str], Any]] = {
        "var": lambda s, a: s.vars.get(a),
        "global": lambda s, a: s.globals.get(a),
        "uservar": lambda s, a: s.uservars.get(a),
        "version": lambda s, _a: s.version,
        "account": lambda s, _a: s.account,
        "user_at_host": lambda s, _a: s.user_at_host,
        "db": lambda s, _a: s.db,
        "known_db": lambda s, a: s.known_db(a),
    }

    def _read(self, kind: str, arg: str = "") -> Any:
        """A session value the rewrite uses, noted so a cached rewrite can be checked."""
        value = self._SOURCES[kind](self, arg)
        if self._reads is not None:
            self._reads.append((kind, arg, _same(value)))
        return value

    def _rewrite(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.SessionParameter):
            name = node.name.lower()
            value = self._read("var", name)
            if value is None:
                raise E.unknown_variable(name)
            if (node.args.get("kind") or "").lower() == "global":
                value = self._read("global", name)
            if value.lstrip("-").isdigit():
                return exp.Literal.number(value)
            if name == "autocommit":
                return exp.Literal.number(1 if value in ("ON", "1") else 0)
            return exp.Literal.string(value)
        if isinstance(node, exp.Select):
            src = node.args.get("from") or node.args.get("from_")
            if src is not None and isinstance(src.this, exp.Table) and not src.this.db \
                    and src.this.name.lower() == "dual" and not node.args.get("joins"):
                node.set("from" if "from" in node.args else "from_", None)
            return node
        if isinstance(node, exp.HexString) and not isinstance(node.parent, (exp.Select,
                                                                            exp.Alias)):
            # MySQL compares 0x... as a string (sqlmap writes its strings so)
            try:
                return exp.Literal.string(bytes.fromhex(str(node.this)).decode("utf-8"))
            except ValueError:
                return node
        if isinstance(node, exp.Parameter):
            return _literal(self._read("uservar", node.name.lower()))
        if isinstance(node, (exp.CurrentTimestamp, exp.UtcTimestamp)):
            return exp.Anonymous(this="now", expressions=[])
        if isinstance(node, exp.CurrentDate):
            return exp.Anonymous(this="curdate", expressions=[])
        if isinstance(node, exp.CurrentTime):
            return exp.Anonymous(this="curtime", expressions=[])
        if isinstance(node, exp.CurrentVersion):
            return exp.Literal.string(self._read("version"))
        if isinstance(node, exp.CurrentUser):
            return exp.Literal.string(self._read("account"))
        if isinstance(node, exp.SessionUser):
            return exp.Literal.string(self._read("user_at_host"))
        if isinstance(node, exp.CurrentSchema):
            db = self._read("db")
            return exp.Literal.string(db) if db else exp.Null()
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            return self._qualify(node)
        return node

    def _declared(self, db: str | None, table: str) -> list[types.ColumnInfo] | None:
        """Declared columns of a table the statement reads, for its result's types."""
        schema = self.known_db(db) if db else self.db
        if schema is None or schema in SYSTEM_SCHEMAS:
            return None
        try:
            return self.backend.columns(schema, table)
        except sqlite3.Error:
            return None

    def _qualify(self, node: exp.Table) -> exp.Table:
        name = node.name
        if name.lower() == "dual" and not node.db:
            return node
        root = node.root()
        ctes = {c.alias_or_name.lower() for c in root.find_all(exp.CTE)}
        if not node.db and name.lower() in ctes:
            return node
        if node.db:
            db = self._read("known_db", node.db)
            if db is None or db in ("performance_schema", "sys"):
                raise E.no_table(node.db, name)
            node.set("db", exp.to_identifier(db))
            return node
        current = self._read("db")
        if current is None:
            raise E.no_db()
        node.set("db", exp.to_identifier(current))
        return node

    def _map_error(self, exc: sqlite3.Error, stmt: str) -> E.SqlError:
        msg = str(exc)
        db = self.db or ""
        m = re.match(r"no such table: (?:(\w+)\.)?(.+)", msg)
        if m:
            return E.no_table(m.group(1) or db, m.group(2))
        m = re.match(r"no such column: (.+)", msg)
        if m:
            return E.unknown_column(m.group(1))
        m = re.match(r"no such function: (\w+)", msg)
        if m:
            return E.no_function(db or "mysql", m.group(1).lower())
        m = re.match(r"(?:table|view) (?:\"?(\w+)\"?\.)?\"?(\w+)\"? already exists", msg)
        if m:
            return E.table_exists(m.group(2))
        if "not authorized" in msg or "prohibited" in msg:
            return E.privilege("SUPER")
        if "database or disk is full" in msg or "string or blob too big" in msg:
            return E.table_full(_first_table(stmt))
        m = re.match(r"UNIQUE constraint failed: \w+\.(\w+)", msg)
        if m:
            return E.SqlError(1062, "23000", f"Duplicate entry '' for key '{m.group(1)}'")
        m = re.match(r"NOT NULL constraint failed: \w+\.(\w+)", msg)
        if m:
            return E.SqlError(1048, "23000", f"Column '{m.group(1)}' cannot be null")
        m = re.search(r'near "(.*?)": syntax error', msg)
        if m:
            pos = stmt.find(m.group(1))
            return E.syntax(stmt[pos:] if pos >= 0 else stmt)
        if "no such" in msg or "unknown database" in msg:
            return E.no_table(db, _first_table(stmt))
        return E.syntax(stmt)


class ProcedureMissing(E.SqlError):
    def __init__(self, db: str | None, stmt: str) -> None:
        name = re.sub(r"(?is)^call\s+([`\w.$]+).*", r"\1", stmt).strip("`")
        super().__init__(1305, "42000", f"PROCEDURE {db or 'mysql'}.{name} does not exist")


# ---------------------------------------------------------------------- helpers


def _b64(v: Any) -> Any:
    import base64
    import binascii

    try:
        return base64.b64decode(v if isinstance(v, bytes) else str(v).encode())
    except (binascii.Error, ValueError):
        return None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _mid(s: Any = None, pos: Any = 1, n: Any = None, *_: Any) -> Any:
    text = _text(s)
    if text is None or pos is None:
        return None
    start = int(pos)
    if start == 0 or abs(start) > len(text):
        return ""
    i = start - 1 if start > 0 else len(text) + start
    return text[i:] if n is None else text[i:i + max(int(n), 0)]


def _substring_index(s: Any = None, delim: Any = None, count: Any = None, *_: Any) -> Any:
    text, sep = _text(s), _text(delim)
    if text is None or sep is None or count is None:
        return None
    n = int(count)
    if not sep or n == 0:
        return ""
    parts = text.split(sep)
    return sep.join(parts[:n]) if n > 0 else sep.join(parts[n:])


def _pad(s: Any, n: Any, pad: Any, left: bool) -> Any:
    text, fill = _text(s), _text(pad)
    if text is None or n is None or fill is None:
        return None
    width = min(max(int(n), 0), 1 << 20)
    if len(text) >= width:
        return text[:width]
    if not fill:
        return None
    extra = (fill * (width // len(fill) + 1))[:width - len(text)]
    return extra + text if left else text + extra


def _epoch(v: Any) -> Any:
    try:
        stamp = dt.datetime.fromisoformat(str(v)).replace(tzinfo=dt.UTC)
    except ValueError:
        return 0
    return int(stamp.timestamp())


def _raw(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, float):
        return repr(v).encode()
    return str(v).encode("utf-8", "surrogateescape")


def _literal(v: Any) -> exp.Expression:
    if v is None:
        return exp.Null()
    if isinstance(v, bytes):
        return exp.HexString(this=v.hex())
    if isinstance(v, (int, float)):
        return exp.Literal.number(v)
    return exp.Literal.string(str(v))


def _default(v: Any) -> Any:
    if v is None:
        return None
    s = str(v)
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == "'" else s


def _first_table(stmt: str) -> str:
    m = re.search(r"(?is)\b(?:into|from|update|table)\s+[`\"]?([\w$.]+)", stmt)
    return m.group(1) if m else ""


def _split_assignments(body: str) -> list[str]:
    parts, depth, quote, cur = [], 0, "", []
    for ch in body:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    out = []
    for p in parts:
        p = p.strip()
        if ":=" in p and "=" not in p.replace(":=", ""):
            p = p.replace(":=", "=", 1)
        out.append(p)
    return [p for p in out if p]


def mysql_type(decl: str, pk: bool, modern: bool) -> str:
    """Declared SQLite type as MySQL would print it."""
    d = decl.strip().lower()
    if d == "integer" and pk:
        return "bigint unsigned" if modern else "bigint(20) unsigned"
    table = {"integer": "int" if modern else "int(11)", "int": "int" if modern else "int(11)",
             "text": "text", "real": "double", "blob": "blob", "": "text",
             "bigint": "bigint" if modern else "bigint(20)",
             "bigint unsigned": "bigint unsigned" if modern else "bigint(20) unsigned"}
    return table.get(d, d)


def select_names(stmt: str, tree: exp.Expression) -> list[str]:
    """Column names as MySQL shows them: the alias, or the expression's own text."""
    if not isinstance(tree, exp.Select):
        return []
    exprs = tree.expressions
    spans = _select_spans(stmt)
    names: list[str] = []
    for i, e in enumerate(exprs):
        if isinstance(e, exp.Alias):
            names.append(e.alias)
        elif isinstance(e, exp.Column):
            names.append(e.name)
        elif isinstance(e, exp.Star):
            return []
        elif spans and len(spans) == len(exprs):
            names.append(spans[i])
        else:
            names.append(e.sql(dialect="mysql"))
    return names


_END = {TokenType.FROM, TokenType.WHERE, TokenType.GROUP_BY, TokenType.ORDER_BY,
        TokenType.LIMIT, TokenType.HAVING, TokenType.UNION, TokenType.INTO,
        TokenType.SEMICOLON, TokenType.FOR, TokenType.WINDOW}


def _select_spans(stmt: str) -> list[str]:
    try:
        tokens = sqlglot.tokenize(stmt, read="mysql")
    except (TokenError, SqlglotError):
        return []
    i = 0
    while i < len(tokens) and tokens[i].token_type != TokenType.SELECT:
        i += 1
    i += 1
    while i < len(tokens) and tokens[i].token_type in (TokenType.DISTINCT, TokenType.ALL):
        i += 1
    spans: list[str] = []
    depth = 0
    start = tokens[i].start if i < len(tokens) else len(stmt)
    end = start
    for tok in tokens[i:]:
        if tok.token_type in (TokenType.L_PAREN, TokenType.L_BRACKET):
            depth += 1
        elif tok.token_type in (TokenType.R_PAREN, TokenType.R_BRACKET):
            depth -= 1
        elif depth == 0 and tok.token_type in _END:
            break
        elif depth == 0 and tok.token_type == TokenType.COMMA:
            spans.append(stmt[start:end + 1].strip())
            start = tok.end + 1
            continue
        end = tok.end
    spans.append(stmt[start:end + 1].strip())
    return spans
