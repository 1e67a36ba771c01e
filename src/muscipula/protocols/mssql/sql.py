"""T-SQL batches: recon answered as the persona's server, the rest run on SQLite via sqlglot.

Each batch becomes TDS tokens (COLMETADATA/ROW/DONE, ERROR, INFO, ENVCHANGE). The
SQLite side is the MySQL service's guarded backend (authorizer, step budget, row
and size caps) on an in-memory database per session. `xp_cmdshell` is refused as
a default install refuses it (error 15281) until `sp_configure` and RECONFIGURE
turn it on; either way its command is scanned for download URLs. One request (a batch,
or an RPC request with all its calls) has one budget of work, in SQLite VM steps with
parsing counted alike (`Meter`); past it the rest of the request gets error 8645.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from muscipula.capture.urls import find_offers
from muscipula.protocols.mssql import tds as T
from muscipula.protocols.mssql.cmdshell import run_command
from muscipula.protocols.mssql.product import Product
from muscipula.protocols.mysql.backend import Engine, Interrupted, Session

logging.getLogger("sqlglot").setLevel(logging.CRITICAL)

DATABASES = ("master", "tempdb", "model", "msdb")
_SYS_DDL = """
ATTACH ':memory:' AS sys;
CREATE TABLE sys.databases (name TEXT, database_id INTEGER, create_date TEXT,
    compatibility_level INTEGER, collation_name TEXT, state_desc TEXT, is_trustworthy_on INTEGER);
CREATE TABLE sys.server_principals (name TEXT, principal_id INTEGER, type TEXT,
    type_desc TEXT, is_disabled INTEGER, default_database_name TEXT);
CREATE TABLE sys.sql_logins (name TEXT, principal_id INTEGER, is_disabled INTEGER,
    password_hash BLOB);
CREATE TABLE sys.configurations (configuration_id INTEGER, name TEXT, value INTEGER,
    minimum INTEGER, maximum INTEGER, value_in_use INTEGER, description TEXT,
    is_dynamic INTEGER, is_advanced INTEGER);
CREATE TABLE sysdatabases (name TEXT, dbid INTEGER, sid BLOB, mode INTEGER, status INTEGER,
    crdate TEXT, filename TEXT);
CREATE TABLE syslogins (name TEXT, sid BLOB, loginname TEXT, dbname TEXT, sysadmin INTEGER);
CREATE TABLE sysusers (uid INTEGER, name TEXT, sid BLOB, issqluser INTEGER, isntuser INTEGER,
    issqlrole INTEGER, hasdbaccess INTEGER);
CREATE TABLE sys.objects (name TEXT, object_id INTEGER, schema_id INTEGER, type TEXT,
    type_desc TEXT, create_date TEXT, is_ms_shipped INTEGER);
CREATE TABLE sys.tables (name TEXT, object_id INTEGER, schema_id INTEGER, type TEXT,
    type_desc TEXT, create_date TEXT, is_ms_shipped INTEGER);
ATTACH ':memory:' AS information_schema;
CREATE TABLE information_schema.tables (TABLE_CATALOG TEXT, TABLE_SCHEMA TEXT,
    TABLE_NAME TEXT, TABLE_TYPE TEXT);
CREATE TABLE sys.system_objects (name TEXT, object_id INTEGER, schema_id INTEGER,
    type TEXT, type_desc TEXT, create_date TEXT, is_ms_shipped INTEGER);
CREATE TEMP VIEW sysobjects AS
    SELECT name, object_id AS id, type AS xtype, schema_id AS uid, type,
        create_date AS crdate FROM sys.objects
    UNION ALL SELECT name, object_id, type, schema_id, type, create_date
        FROM sys.system_objects;
"""
#: master's own tables and views, as sys.objects lists them on a fresh install
_MASTER_OBJECTS = (  # name, object_id, type, type_desc
    ("spt_fallback_db", 117575457, "U", "USER_TABLE"),
    ("spt_fallback_dev", 133575514, "U", "USER_TABLE"),
    ("spt_fallback_usg", 149575571, "U", "USER_TABLE"),
    ("spt_monitor", 1483152329, "U", "USER_TABLE"),
    ("spt_values", 1803153469, "V", "VIEW"),
    ("MSreplication_options", 1787153412, "U", "USER_TABLE"),
)
#: extended procedures attackers look for before they call them (name, object_id)
_EXTENDED_PROCS = (("xp_cmdshell", -1000000811), ("xp_regread", -1000000831),
                   ("xp_regwrite", -1000000827), ("xp_dirtree", -1000000871),
                   ("xp_fileexist", -1000000869), ("sp_OACreate", -1000000881),
                   ("sp_OAMethod", -1000000880), ("xp_servicecontrol", -1000000815))
#: a database's fixed users and roles (uid, name, issqlrole)
_DB_USERS = ((0, "public", 1), (1, "dbo", 0), (2, "guest", 0), (3, "INFORMATION_SCHEMA", 0),
             (4, "sys", 0), (16384, "db_owner", 1), (16385, "db_accessadmin", 1),
             (16386, "db_securityadmin", 1), (16387, "db_ddladmin", 1),
             (16389, "db_backupoperator", 1), (16390, "db_datareader", 1),
             (16391, "db_datawriter", 1), (16392, "db_denydatareader", 1),
             (16393, "db_denydatawriter", 1))
_CONFIGS = (  # id, name, advanced, description
    (518, "show advanced options", 0, "show advanced options"),
    (16390, "xp_cmdshell", 1, "Enable or disable command shell"),
    (16388, "Ole Automation Procedures", 1, "Enable or disable Ole Automation Procedures"),
    (1562, "clr enabled", 0, "CLR user code execution enabled in the server"),
    (16391, "Ad Hoc Distributed Queries", 1, "Enable or disable Ad Hoc Distributed Queries"),
)
_XP_OFF = ("SQL Server blocked access to procedure 'sys.xp_cmdshell' of component "
           "'xp_cmdshell' because this component is turned off as part of the security "
           "configuration for this server. A system administrator can enable the use of "
           "'xp_cmdshell' by using sp_configure. For more information about enabling "
           "'xp_cmdshell', search for 'xp_cmdshell' in SQL Server Books Online.")
_EXEC = re.compile(r"(?is)^(?:exec(?:ute)?\s+)?(?:@\w+\s*=\s*)?"
                   r"((?:\[?\w+\]?\s*\.\s*(?:\[?\w*\]?\s*\.\s*)?)?\[?\w+\]?)\s*(.*)$")
_USE = re.compile(r"(?is)^use\s+\[?([^\]\s;]+)\]?\s*$")
_RECONFIGURE = re.compile(r"(?is)\breconfigure(?:\s+with\s+override)?\s*$")
#: a GO line: blanks around it on its own line only (`\s*` crossed lines: quadratic on
#: a batch of blank lines, 200,000 of them took ~2 min)
_GO = re.compile(r"(?im)^[^\S\n]*go[^\S\n]*$")
_WORD = re.compile(r"[\w@#$]+|\S")
_VARIABLE = re.compile(r"@@?[\w#$@]+")


@dataclass(slots=True)
class Effects:
    offers: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bound:
    """A value bound to an @name by RPC: its T-SQL literal, the value, its declared type."""

    literal: str
    value: object
    column: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Setup:
    engine: Engine
    product: Product
    max_rows: int
    max_batch_chars: int
    max_result_bytes: int = 1024 * 1024
    max_batch_statements: int = 500
    max_statement_chars: int = 64 * 1024
    #: SQL work one request (a batch, or an RPC request with all its calls) may cost
    max_request_steps: int = 100_000_000


class SqlError(Exception):
    def __init__(self, number: int, state: int, cls: int, text: str, proc: str = "") -> None:
        super().__init__(text)
        self.number, self.state, self.cls, self.text, self.proc = number, state, cls, text, proc


#: what SQL Server answers a statement too deep for its parser, and one too big to plan
_TOO_DEEP = SqlError(191, 1, 15, "Some part of your SQL statement is nested too deeply. "
                     "Rewrite the query or break it up into smaller queries.")
_OUT_OF_RESOURCES = SqlError(8623, 1, 16, "The query processor ran out of internal resources "
                             "and could not produce a query plan. This is a rare event and only "
                             "expected for extremely complex queries or queries that reference "
                             "a very large number of tables or partitions. Please simplify the "
                             "query. If you believe you have received this message in error, "
                             "contact Customer Support Services for more information.")


#: what the rest of a request gets once its work budget is spent. Attention and "Query timeout
#: expired" are client-side; 8645 is the server's own timeout on a query kept waiting for a
#: memory grant on a busy server: severity 17, so the batch is aborted and the connection kept,
#: and clients retry it as they would against a loaded production instance
_REQUEST_SPENT = SqlError(8645, 1, 17, "A timeout occurred while waiting for memory resources "
                          "to execute the query in resource pool 'default' (2). Rerun the query.")

#: the cost model, in SQLite VM steps (~10 ns each): what parsing and translating costs in
#: Python, measured against the steps SQLite runs in the same time. Each charge is made before
#: the work it pays for, so a request past its budget is refused without doing it.
STATEMENT_STEPS = 20_000  # a statement's fixed cost (parse, rewrite, generate, dispatch)
#: per parse unit of a statement (a token is 2 units, see _UNITS). Measured on 64 KiB
#: statements (Python 3.11, sqlglot 30): `1+1+..` ~1,180 steps a token, `a+a+..` ~1,710,
#: `1=1 OR ..` ~1,310, IN lists of 30,000 ~880, multi-row VALUES ~930, UNION ALL chains
#: ~2,190, CAST lists ~3,170 (generating each cast)
TOKEN_STEPS = 700
#: the text of a request, charged before it is split (or bound) at all: first SCAN_STEPS a
#: character for counting what splitting will cost (a C regex pass, ~115 ns a character at
#: worst on `;;;..`, and the GO split, ~23 ns on `GO\n..`); then CHAR_STEPS a character,
#: PIECE_STEPS a piece (a word, string, `--` comment or punctuation mark: what sqlglot's
#: tokenizer makes a token of, ~2.2-2.5 us each, plus ~0.6 us in the split loop: `;;;..`
#: ~2,560 steps a character, `1+1+..` ~3,120) and CHUNK_STEPS a GO-separated chunk (~7.5 us
#: each on `GO\n..`). Blanks, newlines (~24 steps each) and comment or `"..""..` text (~25)
#: are what CHAR_STEPS covers.
SCAN_STEPS = 15
CHAR_STEPS = 30
PIECE_STEPS = 350
CHUNK_STEPS = 800
CALL_STEPS = 20_000  # an RPC call decoded, recorded and dispatched
PARAM_STEPS = 200  # per parameter of an RPC call
_PERIOD = 10_000  # how often backend.Session's progress handler runs, in steps
#: what the tokenizer will make a token of, strings and line comments whole (linear: a
#: quote with no close fails once, and no later quote is left to try)
_PIECE = re.compile(r"'(?:[^']|'')*'|--[^\n]*|[\w@#$]+|[^\w\s]")
#: parse units of a token past the 2 of any token: names (column nodes) and what costs
#: most to generate (CAST/CONVERT), set operations (a select tree each)
_UNITS = {"CAST": 20, "TRY_CAST": 20, "CONVERT": 20, "TRY_CONVERT": 20, "UNION": 8,
          "EXCEPT": 8, "INTERSECT": 8}


def text_cost(text: str, go: bool = True) -> int:
    """What splitting `text` into statements costs (after SCAN_STEPS a character counting
    it), so that it is charged before the tokenizer sees any of it."""
    chunks = len(_GO.findall(text)) + 1 if go else 1
    return (CHUNK_STEPS * chunks + CHAR_STEPS * len(text)
            + PIECE_STEPS * _PIECE.subn("", text)[1])


class Meter:
    """One request's budget of SQL work, shared by all its statements and calls."""

    __slots__ = ("limit", "spent")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0

    @property
    def exhausted(self) -> bool:
        return self.spent > self.limit

    def charge(self, steps: int) -> None:
        """Count `steps` of work about to be done; refused (8645) past the budget."""
        self.spent += steps
        if self.exhausted:
            raise _REQUEST_SPENT


class _MeteredSession(Session):
    """The guarded SQLite session, whose VM steps also count against the request's meter."""

    def __init__(self, engine: Engine, functions: dict[str, Callable[..., Any]],
                 meter: Meter) -> None:
        self.meter = meter
        super().__init__(engine, functions)

    def _progress(self) -> int:
        self.meter.spent += _PERIOD
        return 1 if super()._progress() or self.meter.exhausted else 0


def _literal(value: str) -> str:
    """The text of a T-SQL string literal (N'..' or '..'), or a bare word."""
    value = value.strip()
    if value[:1] in "nN" and value[1:2] == "'":
        value = value[1:]
    if len(value) >= 2 and value[0] == "'" and value[-1] == "'":
        return value[1:-1].replace("''", "'")
    return value


def _args(text: str) -> list[str]:
    """Top-level comma-separated procedure arguments, quotes respected."""
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur))
    return [_literal(re.sub(r"(?is)^@\w+\s*=\s*", "", a.strip())) for a in out]


def split_batch(text: str, go: bool = True) -> list[str]:
    """Statements at top-level `;` (and GO lines with `go`), quotes and comments respected."""
    return [piece for piece, _ in split_counted(text, go)]


def split_counted(text: str, go: bool = True) -> list[tuple[str, int]]:
    """`split_batch` with each statement's parse units (what parsing it will cost, see
    TOKEN_STEPS). GO is a separator of client tools only: text that came by RPC is split
    without it."""
    pieces: list[tuple[str, int]] = []
    for chunk in _GO.split(text) if go else [text]:
        try:
            tokens = sqlglot.tokenize(chunk, read="tsql")
        except SqlglotError:
            pieces.append((chunk, len(chunk) + 2))
            continue
        start = 0
        depth = 0
        count = 0
        head = ""  # the current statement's first word
        prev = ""
        for tok in tokens:
            word = tok.text.upper()
            if tok.token_type == TokenType.SEMICOLON:
                pieces.append((chunk[start:tok.start], count))
                start, head, prev, count = tok.end + 1, "", "", 0
                depth = 0
                continue
            if tok.token_type == TokenType.L_PAREN:
                depth += 1
            elif tok.token_type == TokenType.R_PAREN:
                depth = max(depth - 1, 0)
            elif depth == 0 and head and _starts_statement(word, head, prev, tok.token_type):
                pieces.append((chunk[start:tok.start], count))
                start, head, count = tok.start, "", 0
            elif word == "VALUES" and head == "INSERT":
                head = "INSERT VALUES"  # a SELECT after the rows starts a statement
            if not head:
                head = word
            prev = word
            count += _UNITS.get(word, 3 if tok.token_type == TokenType.VAR else 2)
        pieces.append((chunk[start:], count))
    return [(p.strip(), n) for p, n in pieces if p.strip()]


def bind(statement: str, values: dict[str, str], limit: int) -> str:
    """`statement` with each @name of `values` (lower-case keys) replaced by its literal;
    strings, comments and @@variables left alone. Past `limit` characters: error 8623."""
    if not values:
        return statement
    try:
        tokens = sqlglot.tokenize(statement, read="tsql")
    except SqlglotError:
        return statement  # what the batch path makes of it (a syntax error)
    # an '@' the tokenizer saw as code (not inside a string or comment) starts a name
    ats = {t.start for t in tokens if t.token_type == TokenType.PARAMETER and t.text == "@"}
    out: list[str] = []
    at = 0
    size = 0
    for m in _VARIABLE.finditer(statement):
        if m.start() not in ats or statement[m.start() - 1:m.start()] == "@":
            continue
        lit = values.get(m.group().lower())
        if lit is None:
            continue
        piece = statement[at:m.start()] + lit
        size += len(piece)
        if size > limit:
            raise _OUT_OF_RESOURCES
        out.append(piece)
        at = m.end()
    out.append(statement[at:])
    if size + len(out[-1]) > limit:
        raise _OUT_OF_RESOURCES
    return "".join(out)


_STARTERS = {"INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "EXEC", "EXECUTE", "USE",
             "DECLARE", "TRUNCATE", "SELECT", "SET", "RECONFIGURE", "GRANT", "PRINT"}


def _starts_statement(word: str, head: str, prev: str, kind: TokenType) -> bool:
    """Whether `word` begins a new statement of a batch written without `;`."""
    if word not in _STARTERS or kind in (TokenType.STRING, TokenType.IDENTIFIER):
        return False
    if prev in ("UNION", "ALL", "EXCEPT", "INTERSECT", "AS", "FOR", "ON", "AFTER", "OF", ",",
                "INSTEAD", "="):
        return False
    if word == "SELECT" and head in ("INSERT", "CREATE", "WITH", "ALTER", "DECLARE"):
        return False
    return not (word == "SET" and head == "UPDATE")


class SqlSession:
    """One login's state: database, configuration asked for, and its SQLite session."""

    def __init__(self, setup: Setup, user: str, client_host: str, spid: int, tds: int,
                 database: str = "master") -> None:
        self.s = setup
        self.p = setup.product
        self.user = user
        self.client_host = client_host
        self.spid = spid
        self.tds = tds
        self.db = database if database.lower() in DATABASES else "master"
        self.config = {name: 0 for _, name, _, _ in _CONFIGS}
        self.pending = dict(self.config)
        self.now = 0.0
        self.effects = Effects()
        self._backend: Session | None = None
        #: the current request's budget of SQL work (machine calls `request` per message)
        self.meter = Meter(setup.max_request_steps)
        #: statements answered with an error so far (an RPC's DONEPROC says if it failed)
        self.failures = 0
        #: inside a procedure called by RPC: DONEINPROC in place of DONE, none of them final
        self.inproc = False
        #: values bound by RPC (lower-case @name): bound in the parse tree of a query, so
        #: its columns keep their declared types; bound as literals in any other statement
        self.params: dict[str, Bound] = {}

    # ------------------------------------------------------------ backend

    def backend(self) -> Session:
        if self._backend is None:
            spent = self.meter.spent  # our own seeding is not the client's work
            self._backend = _MeteredSession(self.s.engine, self._functions(), self.meter)
            self._backend.script(_SYS_DDL)
            self._seed(self._backend)
            self.meter.spent = spent
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def _seed(self, b: Session) -> None:
        created = "2003-04-08 09:13:36.390"
        dbs = [(n, i + 1, created if i != 1 else self.stamp(), self._compat(),
                "SQL_Latin1_General_CP1_CI_AS", "ONLINE", 1 if n == "msdb" else 0)
               for i, n in enumerate(DATABASES)]
        for d in dbs:
            b.internal("INSERT INTO sys.databases VALUES (?,?,?,?,?,?,?)", d)
        for n, i, *_ in dbs:
            b.internal("INSERT INTO sysdatabases VALUES (?,?,?,0,0,?,?)",
                       (n, i, b"\x01", created, f"{n}.mdf"))
        for row in ((("sa", 1, "S", "SQL_LOGIN", 0, "master")),
                    ("public", 2, "R", "SERVER_ROLE", 0, None),
                    ("sysadmin", 3, "R", "SERVER_ROLE", 0, None)):
            b.internal("INSERT INTO sys.server_principals VALUES (?,?,?,?,?,?)", row)
        b.internal("INSERT INTO sys.sql_logins VALUES ('sa', 1, 0, NULL)")
        for name, oid, kind, desc in _MASTER_OBJECTS:
            row = (name, oid, 1, kind, desc, created, 1)
            b.internal("INSERT INTO sys.objects VALUES (?,?,?,?,?,?,?)", row)
            if kind == "U":
                b.internal("INSERT INTO sys.tables VALUES (?,?,?,?,?,?,?)", row)
            b.internal("INSERT INTO information_schema.tables VALUES ('master','dbo',?,?)",
                       (name, "BASE TABLE" if kind == "U" else "VIEW"))
        for name, oid in _EXTENDED_PROCS:
            b.internal("INSERT INTO sys.system_objects VALUES (?,?,4,'X',"
                       "'EXTENDED_STORED_PROCEDURE',?,1)", (name, oid, created))
        for uid, name, role in _DB_USERS:
            b.internal("INSERT INTO sysusers VALUES (?,?,?,?,0,?,?)",
                       (uid, name, None if role or uid in (3, 4) else b"\x01",
                        0 if role else 1, role, 0 if role or uid != 1 else 1))
        b.internal("INSERT INTO syslogins VALUES ('sa', X'01', 'sa', 'master', 1)")
        for cid, name, adv, desc in _CONFIGS:
            b.internal("INSERT INTO sys.configurations VALUES (?,?,?,0,1,?,?,1,?)",
                       (cid, name, self.config[name], self.config[name], desc, adv))

    def _compat(self) -> int:
        return self.p.version[0] * 10

    def stamp(self) -> str:
        t = datetime.fromtimestamp(self.now, UTC)
        return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"

    def sysvar(self, name: Any = None) -> Any:
        key = str(name or "").lower()
        return {"version": self.p.version_string, "servername": self.p.server,
                "spid": self.spid, "language": "us_english", "servicename": self.p.instance,
                "trancount": 0, "rowcount": 0, "error": 0, "identity": None,
                "max_connections": 32767, "langid": 0, "textsize": 2147483647,
                "microsoftversion": (self.p.version[0] << 24) | (self.p.version[1] << 16)
                | self.p.version[2], "dbts": None, "datefirst": 7,
                "lock_timeout": -1, "nestlevel": 0, "options": 5496}.get(key)

    def sysadmin(self) -> bool:
        return self.user.lower() == "sa"

    def _functions(self) -> dict[str, Callable[..., Any]]:
        def role(name: Any = None, *_: Any) -> Any:
            r = str(name or "").lower()
            if r in ("sysadmin", "serveradmin", "securityadmin", "setupadmin",
                     "processadmin", "diskadmin", "dbcreator", "bulkadmin"):
                return 1 if self.sysadmin() else 0
            return 1 if r == "public" else None

        return {
            "sysvar": self.sysvar,
            "serverproperty": lambda n=None, *_: self.p.property(str(n or "")),
            "is_srvrolemember": role,
            "is_member": lambda n=None, *_: 1 if self.sysadmin() or n == "public" else 0,
            "suser_sname": lambda *_: self.user, "suser_name": lambda *_: self.user,
            "user_name": lambda *_: "dbo" if self.sysadmin() else "guest",
            "db_name": lambda *_: self.db, "host_name": lambda *_: self.client_host,
            "app_name": lambda *_: "", "getdate": lambda *_: self.stamp(),
            "sysdatetime": lambda *_: self.stamp(), "newid": lambda *_: str(uuid.uuid4()).upper(),
            "db_id": lambda n=None, *_: (DATABASES.index(str(n).lower()) + 1
                                         if str(n or self.db).lower() in DATABASES else None),
            "len": lambda v=None, *_: None if v is None else len(str(v).rstrip(" ")),
        }

    # ------------------------------------------------------------ batches

    def request(self) -> None:
        """A new request (batch or RPC) begins: its work budget is full again."""
        self.meter.spent = 0

    def batch(self, text: str, now: float, inproc: bool = False, rpc: bool = False,
              params: dict[str, Bound] | None = None) -> bytes:
        """Every statement of `text` answered; the tokens of the whole reply (with `inproc`,
        the body of a procedure called by RPC: the caller adds its DONEPROC; `rpc`: text
        that came by RPC, never split at GO)."""
        self.now = now
        self.inproc = inproc
        self.params = params or {}
        try:
            return self._batch(text, not rpc)
        finally:
            self.inproc = False
            self.params = {}

    def _batch(self, text: str, go: bool) -> bytes:
        out = bytearray()
        text = text[:self.s.max_batch_chars]
        try:
            self.charge_text(text, go)
        except SqlError as err:
            return self._failed(err, True)
        pieces = split_counted(text, go)
        for n, (stmt, tokens) in enumerate(pieces):
            last = n == len(pieces) - 1
            try:
                if n >= self.s.max_batch_statements or len(stmt) > self.s.max_statement_chars:
                    raise _OUT_OF_RESOURCES
                cost = STATEMENT_STEPS + TOKEN_STEPS * tokens
                # binding tokenizes the statement once more (~300 steps a token)
                self.meter.charge(cost + cost // 4 if self.params else cost)
                out += self.statement(stmt, last)
            except SqlError as err:
                if self.meter.exhausted:  # severity 17: the rest of the batch is not run
                    out += self._failed(_REQUEST_SPENT, True)
                    break
                out += self._failed(err, last)
            except RecursionError:
                out += self._failed(_TOO_DEEP, last)
            except Exception:  # a parser or translator fault must not cost the session
                out += self._failed(SqlError(102, 1, 15, f"Incorrect syntax near "
                                             f"'{_near(stmt)}'."), last)
            if n >= self.s.max_batch_statements:  # one error stands for all the rest
                break
        if not pieces and not self.inproc:
            out += T.done(tds=self.tds)
        return bytes(out)

    def charge_text(self, text: str, go: bool) -> None:
        """Charge what splitting (or binding) `text` costs before any of it is done: what
        counting it costs first, so a text too big even to count is refused unread."""
        self.meter.charge(SCAN_STEPS * len(text))
        self.meter.charge(text_cost(text, go))

    def _failed(self, err: SqlError, last: bool) -> bytes:
        self.failures += 1
        more = T.DONE_MORE if self.inproc or not last else 0
        return (T.error(err.number, err.state, err.cls, err.text, self.p.server, err.proc, 1,
                        self.tds)
                + T.done(T.DONE_ERROR | more, 0, 0xC1, self.tds,
                         kind=0xFF if self.inproc else 0xFD))

    def _done(self, last: bool, rows: int | None = None, curcmd: int = 0xC1) -> bytes:
        more = T.DONE_MORE if self.inproc or not last else 0
        status = more | (T.DONE_COUNT if rows is not None else 0)
        return T.done(status, rows or 0, curcmd, self.tds, kind=0xFF if self.inproc else 0xFD)

    def statement(self, stmt: str, last: bool) -> bytes:
        raw = stmt
        if self.params:
            stmt = bind(stmt, {k: b.literal for k, b in self.params.items()},
                        self.s.max_batch_chars)
        low = " ".join(stmt.lower().split())
        if _RECONFIGURE.fullmatch(low) or low == "reconfigure":
            self.reconfigure()
            return self._done(last)
        reconf = _RECONFIGURE.search(stmt)
        if reconf and low.startswith(("exec", "sp_configure")):
            out = self.statement(stmt[:reconf.start()], False)
            self.reconfigure()
            return out + self._done(last)
        m = _USE.match(stmt)
        if m:
            return self.use(m.group(1), last)
        first = low.split(" ", 1)[0]
        if first in ("exec", "execute") or first.startswith(("sp_", "xp_", "master.",
                                                             "master..")):
            return self.execute(stmt, last)
        if first in ("set", "begin", "commit", "rollback", "print", "declare", "dbcc"):
            return self._done(last)
        return self.query(raw, last)

    def use(self, name: str, last: bool) -> bytes:
        if name.lower() not in DATABASES:
            raise SqlError(911, 1, 16, f"Database '{name}' does not exist. Make sure that the "
                                       "name is entered correctly.")
        old, self.db = self.db, name.lower()
        return (T.envchange(1, self.db, old)
                + T.info(5701, 1, 0, f"Changed database context to '{self.db}'.",
                         self.p.server, tds=self.tds) + self._done(last))

    def reconfigure(self) -> None:
        self.config.update(self.pending)
        b = self.backend()
        for name, v in self.config.items():
            b.internal("UPDATE sys.configurations SET value = ?, value_in_use = ? "
                       "WHERE name = ?", (v, v, name))

    # ------------------------------------------------------------ procedures

    def execute(self, stmt: str, last: bool) -> bytes:
        m = _EXEC.match(stmt)
        if not m:
            raise SqlError(102, 1, 15, f"Incorrect syntax near '{stmt[:32]}'.")
        name = re.sub(r"[\[\]\s]", "", m.group(1)).lower().split(".")[-1]
        args = _args(m.group(2))
        if name == "xp_cmdshell":
            return self.cmdshell(args[0] if args else "", last)
        if name == "sp_configure":
            return self.configure(args, last)
        if name in ("sp_helpdb", "sp_databases"):
            return self._result([T.Column("DATABASE_NAME", T.NVARCHAR, 256),
                                 T.Column("DATABASE_SIZE", T.INTN, 4),
                                 T.Column("REMARKS", T.NVARCHAR, 508)],
                                [(d, 5120, None) for d in DATABASES], last, proc=True)
        if name == "sp_server_info":
            return self._result([T.Column("attribute_id", T.INTN, 4),
                                 T.Column("attribute_name", T.NVARCHAR, 120),
                                 T.Column("attribute_value", T.NVARCHAR, 510)],
                                self._server_info(args), last, proc=True)
        if name in ("sp_who", "sp_who2", "sp_addlogin", "sp_addsrvrolemember", "sp_password",
                    "sp_oacreate", "sp_oamethod", "sp_oadestroy", "sp_executesql",
                    "sp_dropextendedproc", "sp_addextendedproc", "xp_regread", "xp_dirtree",
                    "xp_fileexist", "sp_start_job", "sp_add_job", "sp_add_jobstep"):
            self.effects.offers.extend(find_offers(" ".join(args)))
            return self._proc_done(last)
        raise SqlError(2812, 62, 16, f"Could not find stored procedure '{m.group(1)}'.")

    def _server_info(self, args: list[str]) -> list[tuple[object, ...]]:
        """sp_server_info's attribute rows (ODBC catalogue facts), or the one asked for."""
        p = self.p
        rows: list[tuple[object, ...]] = [
            (1, "DBMS_NAME", "Microsoft SQL Server"),
            (2, "DBMS_VER", f"{p.name} - {p.full_version}"),
            (10, "OWNER_TERM", "owner"), (11, "TABLE_TERM", "table"),
            (12, "MAX_OWNER_NAME_LENGTH", "128"), (13, "TABLE_LENGTH", "128"),
            (14, "MAX_QUAL_LENGTH", "128"), (15, "COLUMN_LENGTH", "128"),
            (16, "IDENTIFIER_CASE", "MIXED"), (17, "TX_ISOLATION", "2"),
            (18, "COLLATION_SEQ", "charset=iso_1 sort_order=nocase_iso charset_num=1 "
                                  "sort_order_num=52"),
            (19, "SAVEPOINT_SUPPORT", "Y"), (20, "MULTI_RESULT_SETS", "Y"),
            (22, "ACCESSIBLE_TABLES", "Y"), (100, "USERID_LENGTH", "128"),
            (101, "QUALIFIER_TERM", "database"), (102, "NAMED_TRANSACTIONS", "Y"),
            (103, "SPROC_AS_LANGUAGE", "Y"), (104, "ACCESSIBLE_SPROC", "Y"),
            (105, "MAX_INDEX_COLS", "16"), (106, "RENAME_TABLE", "Y"),
            (107, "RENAME_COLUMN", "Y"), (108, "DROP_COLUMN", "Y"),
            (109, "INCREASE_COLUMN_LENGTH", "Y"), (110, "DDL_IN_TRANSACTION", "Y"),
            (111, "DESCENDING_INDEXES", "Y"), (112, "SP_RENAME", "Y"),
            (113, "REMOTE_SPROC", "Y"),
            (500, "SYS_SPROC_VERSION", ".".join(str(n) for n in p.version)),
        ]
        if args and args[0].strip().lstrip("-").isdigit():
            rows = [r for r in rows if r[0] == int(args[0])]
        return rows

    def _proc_done(self, last: bool, rows: int | None = None) -> bytes:
        status = T.DONE_COUNT if rows is not None else 0
        if self.inproc:  # a procedure inside one called by RPC: no status of its own
            return T.done(status | T.DONE_MORE, rows or 0, 0xE0, self.tds, kind=0xFF)
        return (T.return_status(0)
                + T.done(status | (0 if last else T.DONE_MORE), rows or 0, 0xE0, self.tds,
                         kind=0xFE))

    def configure(self, args: list[str], last: bool) -> bytes:
        if not args:
            cols = [T.Column("name", T.NVARCHAR, 70), T.Column("minimum", T.INTN, 4),
                    T.Column("maximum", T.INTN, 4), T.Column("config_value", T.INTN, 4),
                    T.Column("run_value", T.INTN, 4)]
            shown = [(n, 0, 1, self.pending[n], self.config[n]) for _, n, adv, _ in _CONFIGS
                     if not adv or self.config["show advanced options"]]
            return self._result(cols, shown, last, proc=True)
        name = args[0].strip().lower()
        found = next((c for c in _CONFIGS if c[1].lower() == name), None)
        if found is None or (found[2] and not self.config["show advanced options"]):
            raise SqlError(15123, 1, 16, f"The configuration option '{args[0]}' does not "
                                         "exist, or it may be an advanced option.",
                           "sp_configure")
        if len(args) < 2:
            return self._result([T.Column("name", T.NVARCHAR, 70),
                                 T.Column("config_value", T.INTN, 4),
                                 T.Column("run_value", T.INTN, 4)],
                                [(found[1], self.pending[found[1]], self.config[found[1]])],
                                last, proc=True)
        try:
            value = int(args[1])
        except ValueError:
            raise SqlError(8114, 5, 16, "Error converting data type varchar to int.",
                           "sp_configure") from None
        if value not in (0, 1):
            raise SqlError(15129, 1, 16, f"'{value}' is not a valid value for configuration "
                                         f"option '{found[1]}'.", "sp_configure")
        old = self.pending[found[1]]
        self.pending[found[1]] = value
        return (T.info(15457, 1, 0, f"Configuration option '{found[1]}' changed from {old} to "
                                    f"{value}. Run the RECONFIGURE statement to install.",
                       self.p.server, "sp_configure", 1, self.tds)
                + self._proc_done(last))

    def cmdshell(self, command: str, last: bool) -> bytes:
        self.effects.commands.append(command)
        self.effects.offers.extend(u for u in find_offers(command)
                                   if u not in self.effects.offers)
        if not self.config["xp_cmdshell"]:
            raise SqlError(15281, 1, 16, _XP_OFF, "xp_cmdshell")
        lines = run_command(command, self.p, self.client_host)
        rows: list[tuple[object, ...]] = [(line,) for line in lines] + [(None,)]
        return self._result([T.Column("output", T.NVARCHAR, 510)], rows, last, proc=True)

    # ------------------------------------------------------------ queries

    def _result(self, cols: list[T.Column], rows: list[tuple[object, ...]], last: bool,
                proc: bool = False) -> bytes:
        rows = rows[:self.s.max_rows]
        body = bytearray(T.colmetadata(cols, self.tds))
        limit = len(body) + self.s.max_result_bytes
        sent = 0
        for r in rows:
            if len(body) >= limit:  # a bounded answer, counted as sent
                break
            body += T.row(cols, r)
            sent += 1
        rows = rows[:sent]
        if proc:
            body += T.done(T.DONE_COUNT | T.DONE_MORE, len(rows), 0xC1, self.tds, kind=0xFF)
            return bytes(body) + self._proc_done(last)
        return bytes(body) + self._done(last, len(rows))

    def query(self, stmt: str, last: bool) -> bytes:
        try:
            tree = sqlglot.parse_one(stmt, read="tsql")
        except SqlglotError:
            raise SqlError(102, 1, 15, f"Incorrect syntax near '{_near(stmt)}'.") from None
        if tree is None or isinstance(tree, exp.Command | exp.Execute):
            raise SqlError(102, 1, 15, f"Incorrect syntax near '{_near(stmt)}'.")
        names = _select_names(tree)
        types = self._select_types(tree)
        try:
            sql = self._rewrite(tree).sql("sqlite")
        except SqlglotError:
            raise SqlError(102, 1, 15, f"Incorrect syntax near '{_near(stmt)}'.") from None
        try:
            outcome = self.backend().run(sql)
        except Interrupted:
            if self.meter.exhausted:
                raise _REQUEST_SPENT from None
            raise SqlError(1222, 51, 16, "Lock request time out period exceeded.") from None
        except sqlite3.Error as exc:
            raise _map_error(exc, stmt) from None
        if not outcome.has_rows:
            rows = outcome.rowcount if isinstance(tree, exp.Insert | exp.Update
                                                  | exp.Delete) else None
            return self._done(last, rows)
        cols = _columns(names, outcome.names, outcome.rows, types)
        return self._result(cols, [tuple(_plain(v) for v in r) for r in outcome.rows], last)

    def _bound(self, node: exp.Expression) -> Bound | None:
        """The value bound to `node` if it is an @name given by RPC."""
        if not self.params or not isinstance(node, exp.Parameter) \
                or isinstance(node.this, exp.Parameter):
            return None
        return self.params.get("@" + node.name.lower())

    def _select_types(self, tree: exp.Expression) -> list[tuple[int, int, int, int] | None]:
        """The declared type of each select column that is a bound value alone."""
        if not self.params or not isinstance(tree, exp.Select):
            return []
        out = []
        for e in tree.expressions:
            bound = self._bound(e.this if isinstance(e, exp.Alias) else e)
            out.append(bound.column if bound is not None else None)
        return out

    def _rewrite(self, tree: exp.Expression) -> exp.Expression:
        def fix(node: exp.Expression) -> exp.Expression:
            bound = self._bound(node)
            if bound is not None:
                return _value_node(bound.value)
            if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Parameter):
                name = node.this.name or node.this.this.name
                return exp.Anonymous(this="sysvar", expressions=[exp.Literal.string(name)])
            if isinstance(node, exp.National):
                return exp.Literal.string(node.name)
            if isinstance(node, exp.CurrentUser):
                return exp.Anonymous(this="suser_sname", expressions=[])
            if isinstance(node, exp.Table):
                # master..x has an empty schema (a str, not an identifier): node.db is text
                keep = node.db.lower() in ("sys", "information_schema")
                node.set("catalog", None)
                if not keep:
                    node.set("db", None)
            return node

        return _replace_all(tree, fix)


def _replace_all(tree: exp.Expression,
                 fix: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
    """`tree.transform(fix)` in linear time: sqlglot's `set` renumbers a whole argument list
    for each element replaced (a 10,000-item select list: ~4 s), so the replacements of one
    list are made at once. A replaced node's own children are not visited."""
    root = tree
    lists: dict[tuple[int, str], tuple[exp.Expression, dict[int, exp.Expression]]] = {}
    replaced: list[exp.Expression | None] = [None]  # the node just replaced: not entered
    for node in tree.dfs(prune=lambda n: n is replaced[0]):
        parent, key, index = node.parent, node.arg_key, node.index
        new = fix(node)
        if new is node:
            continue
        replaced[0] = node
        if parent is None or node is tree:
            root = new
        elif index is None:
            parent.set(key, new)
        else:
            lists.setdefault((id(parent), key), (parent, {}))[1][index] = new
    for (_, key), (parent, news) in lists.items():
        items = list(parent.args.get(key) or [])
        for index, new in news.items():
            items[index] = new
        parent.set(key, items)
    return root


def _value_node(v: object) -> exp.Expression:
    """A bound value as a parse-tree node (never as text pasted into code)."""
    if v is None:
        return exp.Null()
    if isinstance(v, bool):
        return exp.Literal.number(int(v))
    if isinstance(v, int | float):
        return exp.Literal.number(repr(v) if isinstance(v, float) else str(v))
    if isinstance(v, Decimal):
        return exp.Literal.number(format(v, "f"))
    if isinstance(v, bytes):
        return exp.HexString(this=v.hex())
    text = str(v)
    if "\x00" in text:  # the SQLite driver refuses NUL in statement text
        return exp.Cast(this=exp.HexString(this=text.encode("utf-8").hex()),
                        to=exp.DataType.build("text"))
    return exp.Literal.string(text)


def _near(stmt: str) -> str:
    words = _WORD.findall(stmt)
    return words[-1] if words else ""


def _plain(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    return v


def _select_names(tree: exp.Expression) -> list[str] | None:
    if not isinstance(tree, exp.Select):
        return None
    names = []
    for e in tree.expressions:
        if isinstance(e, exp.Star):
            return None
        if isinstance(e, exp.Alias | exp.Column):
            names.append(e.alias_or_name)
        else:
            names.append("")
    return names


def _columns(names: list[str] | None, found: list[str], rows: list[tuple[Any, ...]],
             types: list[tuple[int, int, int, int] | None] | None = None) -> list[T.Column]:
    cols = []
    for i, raw in enumerate(found):
        name = names[i] if names is not None and i < len(names) else raw
        spec = types[i] if types and i < len(types) else None
        if spec is not None:  # a bound value: its declared type
            cols.append(T.Column(name, *spec))
            continue
        values = [r[i] for r in rows if r[i] is not None]
        if values and all(isinstance(v, int) for v in values):
            big = any(not -2**31 <= v < 2**31 for v in values)
            cols.append(T.Column(name, T.INTN, 8 if big else 4))
        elif values and all(isinstance(v, int | float) for v in values):
            cols.append(T.Column(name, T.FLTN, 8))
        elif values and all(isinstance(v, bytes) for v in values):
            cols.append(T.Column(name, T.BIGVARBINARY, 8000))
        else:
            cols.append(T.Column(name, T.NVARCHAR, 8000))
    return cols


def _map_error(exc: sqlite3.Error, stmt: str) -> SqlError:
    text = str(exc)
    m = re.match(r"no such table: (?:\w+\.)?(.+)", text)
    if m:
        return SqlError(208, 1, 16, f"Invalid object name '{m.group(1)}'.")
    m = re.match(r"no such column: (.+)", text)
    if m:
        return SqlError(207, 1, 16, f"Invalid column name '{m.group(1).split('.')[-1]}'.")
    m = re.match(r"no such function: (.+)", text)
    if m:
        return SqlError(195, 10, 15, f"'{m.group(1)}' is not a recognized built-in function "
                                     "name.")
    m = re.match(r"table (\S+) already exists", text)
    if m:
        return SqlError(2714, 6, 16, f"There is already an object named '{m.group(1)}' in "
                                     "the database.")
    if "not authorized" in text or "prohibited" in text:
        return SqlError(229, 5, 14, "The SELECT permission was denied on the object.")
    if "UNIQUE constraint" in text:
        return SqlError(2627, 1, 14, "Violation of PRIMARY KEY constraint. Cannot insert "
                                     "duplicate key.")
    return SqlError(102, 1, 15, f"Incorrect syntax near '{_near(stmt)}'.")
