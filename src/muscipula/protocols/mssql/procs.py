"""Decoded RPC calls run: sp_executesql and the prepare family, other procedures as EXEC.

The statement text goes through the batch path (recon answers, xp_cmdshell and its
download offers, the SQLite guards), split at `;` but never at GO. Values are bound in
a query's parse tree, so its columns keep their declared types (sp_executesql's
definition); in other statements (EXEC, USE...) each `@name` token outside strings and
comments becomes the value's T-SQL literal. Parameter names of a procedure called by
name must be identifiers (error 8145). Every call counts against its request's work
budget (error 8645 past it). Bound text past the batch ceiling gets error 8623.
"""

from __future__ import annotations

import re
import struct
from collections import OrderedDict
from dataclasses import dataclass

from muscipula.protocols.mssql import tds as T
from muscipula.protocols.mssql.declared import column_spec, declarations
from muscipula.protocols.mssql.rpc import Call, Param, bound_literal, literal
from muscipula.protocols.mssql.sql import (
    _OUT_OF_RESOURCES,
    _REQUEST_SPENT,
    Bound,
    SqlError,
    SqlSession,
    bind,
)

_NTEXT = (0xE7, 0xEF, 0x63)  # the types sp_executesql takes its statement in
#: what may name a procedure called by RPC (up to server.database.schema.name)
_PROC_NAME = re.compile(r"(?:\[?\w*\]?\.){0,3}\[?\w+\]?")
#: what may name a parameter of a procedure called by name (it becomes part of an EXEC)
_PARAM_NAME = re.compile(r"@\w+")


@dataclass(frozen=True, slots=True)
class Prepared:
    definition: str
    statement: str


class ProcRunner:
    """One session's RPC calls; `handles` are its prepared statements: at most `limit` of
    them, holding at most `budget` bytes of text (UTF-16, as they came); the oldest give way."""

    def __init__(self, sql: SqlSession, limit: int, record_chars: int, budget: int) -> None:
        self.sql = sql
        self.limit = limit
        self.record_chars = record_chars
        self.budget = budget
        self.handles: OrderedDict[int, Prepared] = OrderedDict()
        self.next_handle = 1
        self._held = 0

    def held(self) -> int:
        """Bytes of prepared statement text kept."""
        return self._held

    # ------------------------------------------------------------ records

    def describe(self, call: Call) -> str:
        """The call as the T-SQL that would make it (what is recorded): each value cut at
        `record_chars`, the whole at the batch ceiling, as a batch's text is."""
        text = f"exec {call.name}"[:self.record_chars]
        limit = self.sql.s.max_batch_chars
        for n, p in enumerate(call.params):
            lit = literal(p.value)
            if len(lit) > self.record_chars:
                lit = lit[:self.record_chars] + "..."
            out = " OUTPUT" if p.output else ""
            text += (", " if n else " ") + (f"{p.name}={lit}{out}" if p.name else f"{lit}{out}")
            if len(text) > limit:
                return text[:limit] + "..."
        return text

    # ------------------------------------------------------------ dispatch

    def run(self, call: Call, now: float, more: bool) -> bytes:
        """The tokens answering `call`; `more`: another call of the request follows."""
        name = re.sub(r"[\[\]\s]", "", call.name).lower().split(".")[-1]
        try:
            if name == "sp_executesql":
                return self._executesql(call, now, more)
            if name == "sp_prepare":
                return self._prepare(call, now, more, execute=False)
            if name == "sp_prepexec":
                return self._prepare(call, now, more, execute=True)
            if name == "sp_execute":
                return self._execute(call, now, more)
            if name == "sp_unprepare":
                return self._unprepare(call, more)
        except SqlError as err:
            return self._error(err, more)
        return self._exec(call, now, more)

    def too_many(self, more: bool) -> bytes:
        """The answer to the calls of a request past max_batch_statements."""
        return self._error(_OUT_OF_RESOURCES, more)

    def spent(self) -> bytes:
        """The answer to the calls of a request past its work budget."""
        return self._error(_REQUEST_SPENT, more=False)

    def _error(self, err: SqlError, more: bool) -> bytes:
        return (T.error(err.number, err.state, err.cls, err.text, self.sql.p.server, err.proc,
                        1, self.sql.tds)
                + T.done(T.DONE_ERROR | (T.DONE_MORE if more else 0), 0, 0xE0, self.sql.tds,
                         kind=0xFE))

    def _end(self, tokens: bytes, more: bool, outputs: list[tuple[int, Param, bytes]],
             failed: bool) -> bytes:
        """A procedure's close: RETURNSTATUS, RETURNVALUE per OUTPUT parameter, DONEPROC."""
        out = bytearray(tokens)
        out += T.return_status(0)
        for ordinal, p, raw in outputs:
            out += _return_value(ordinal, p.name, raw, self.sql.tds)
        status = (T.DONE_MORE if more else 0) | (T.DONE_ERROR if failed else 0)
        out += T.done(status, 0, 0xE0, self.sql.tds, kind=0xFE)
        return bytes(out)

    def _run_bound(self, definition: str, statement: str, values: list[Param],
                   now: float) -> tuple[bytes, bool]:
        """`statement` with the values bound to the names `definition` declares, run."""
        decls = declarations(definition)
        names = [n for n, _ in decls]
        types = {n.lower(): column_spec(t) for n, t in decls}
        bound: dict[str, Bound] = {}
        positional = [p for p in values if not p.name]
        for p in values:
            if p.name:
                key = p.name.lower()
                bound[key] = Bound(bound_literal(p.value), p.value, types.get(key))
        for name, p in zip([n for n in names if n.lower() not in bound], positional,
                           strict=False):
            key = name.lower()
            bound[key] = Bound(bound_literal(p.value), p.value, types.get(key))
        for name in names:
            if name.lower() not in bound:
                raise SqlError(8178, 1, 16, f"The parameterized query '({definition})"
                                            f"{statement}' expects the parameter '{name}', "
                                            "which was not supplied."[:2047])
        if bound:  # bound whole once, for the ceiling (8623) before anything runs
            self.sql.charge_text(statement, go=False)
            bind(statement, {k: b.literal for k, b in bound.items()},
                 self.sql.s.max_batch_chars)
        before = self.sql.failures
        tokens = self.sql.batch(statement, now, inproc=True, rpc=True, params=bound)
        return tokens, self.sql.failures > before

    # ------------------------------------------------------------ procedures

    def _executesql(self, call: Call, now: float, more: bool) -> bytes:
        params = call.params
        if not params or params[0].value is None:
            raise SqlError(201, 4, 16, "Procedure or function 'sp_executesql' expects "
                                       "parameter '@statement', which was not supplied.",
                           "sp_executesql")
        if params[0].type not in _NTEXT:
            raise SqlError(214, 2, 16, "Procedure expects parameter '@statement' of type "
                                       "'ntext/nchar/nvarchar'.", "sp_executesql")
        definition = str(params[1].value or "") if len(params) > 1 else ""
        if len(params) > 1 and params[1].type not in _NTEXT:
            raise SqlError(214, 3, 16, "Procedure expects parameter '@params' of type "
                                       "'ntext/nchar/nvarchar'.", "sp_executesql")
        tokens, failed = self._run_bound(definition, str(params[0].value), params[2:], now)
        outputs = [(i, p, p.raw) for i, p in enumerate(params) if i >= 2 and p.output]
        return self._end(tokens, more, outputs, failed)

    def _prepare(self, call: Call, now: float, more: bool, execute: bool) -> bytes:
        params = call.params
        if len(params) < 3:
            proc = "sp_prepexec" if execute else "sp_prepare"
            missing = ("@handle", "@params", "@stmt")[len(params)]
            raise SqlError(201, 4, 16, f"Procedure or function '{proc}' expects parameter "
                                       f"'{missing}', which was not supplied.", proc)
        definition = str(params[1].value or "")
        statement = str(params[2].value or "")
        handle = self.next_handle
        self.next_handle += 1
        self._keep(handle, Prepared(definition, statement))
        tokens, failed = b"", False
        if execute:
            tokens, failed = self._run_bound(definition, statement, params[3:], now)
        outputs = [(0, params[0], _int_value(handle))] if params[0].output else []
        return self._end(tokens, more, outputs, failed)

    def _execute(self, call: Call, now: float, more: bool) -> bytes:
        params = call.params
        prepared = self._handle(params)
        tokens, failed = self._run_bound(prepared.definition, prepared.statement, params[1:],
                                         now)
        return self._end(tokens, more, [], failed)

    def _unprepare(self, call: Call, more: bool) -> bytes:
        self._handle(call.params)
        self._drop(int(call.params[0].value))  # type: ignore[call-overload]
        return self._end(b"", more, [], False)

    def _keep(self, handle: int, prepared: Prepared) -> None:
        self.handles[handle] = prepared
        self._held += _size(prepared)
        while len(self.handles) > self.limit or self._held > self.budget:
            self._drop(next(iter(self.handles)))

    def _drop(self, handle: int) -> None:
        gone = self.handles.pop(handle, None)
        if gone is not None:
            self._held -= _size(gone)

    def _handle(self, params: list[Param]) -> Prepared:
        value = params[0].value if params else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise SqlError(8179, 4, 16, f"Could not find prepared statement with handle "
                                        f"{literal(value) if value is not None else 0}.")
        prepared = self.handles.get(value)
        if prepared is None:
            raise SqlError(8179, 4, 16, f"Could not find prepared statement with handle "
                                        f"{value}.")
        return prepared

    def _exec(self, call: Call, now: float, more: bool) -> bytes:
        """Any other procedure: the EXEC the batch path answers (xp_cmdshell, sp_configure,
        sp_databases..., error 2812 for an unknown one), its closing DONE made a DONEPROC."""
        if not _PROC_NAME.fullmatch(call.name):
            return self._error(SqlError(2812, 62, 16, "Could not find stored procedure "
                                                      f"'{call.name[:128]}'."), more)
        for p in call.params:
            if p.name and not _PARAM_NAME.fullmatch(p.name):  # no procedure has it
                proc = re.sub(r"[\[\]]", "", call.name).split(".")[-1]
                return self._error(SqlError(8145, 2, 16, f"{p.name[:128]} is not a parameter "
                                                         f"for procedure {proc}.", proc), more)
        args = ", ".join(f"{p.name}={bound_literal(p.value)}" if p.name else bound_literal(p.value)
                         for p in call.params)
        text = f"EXEC {call.name} {args}".rstrip()
        if len(text) > self.sql.s.max_batch_chars:
            return self._error(_OUT_OF_RESOURCES, more)
        tokens = self.sql.batch(text, now, rpc=True)
        return _close_proc(tokens, self.sql.tds, more)


def _close_proc(tokens: bytes, tds: int, more: bool) -> bytes:
    """`tokens` with their closing DONE made a DONEPROC, its MORE bit as `more` says."""
    out = bytearray(tokens)
    size = 13 if tds >= 0x72 else 9
    if len(out) >= size and out[-size] in (0xFD, 0xFE):
        out[-size] = 0xFE
        status = struct.unpack_from("<H", out, len(out) - size + 1)[0]
        status = (status | T.DONE_MORE) if more else (status & ~T.DONE_MORE)
        struct.pack_into("<H", out, len(out) - size + 1, status)
    return bytes(out)


def final(tokens: bytes, tds: int) -> bytes:
    """A call's answer made the last of its request: its closing DONEPROC loses MORE."""
    return _close_proc(tokens, tds, False)


def declared(definition: str) -> list[str]:
    """The @names a parameter definition string declares, in order."""
    return [name for name, _ in declarations(definition)]


def _size(p: Prepared) -> int:
    return 2 * (len(p.definition) + len(p.statement))


def _int_value(n: int) -> bytes:
    """TYPE_INFO and value of an int (a prepared handle)."""
    return bytes([T.INTN, 4, 4]) + struct.pack("<i", n)


def _return_value(ordinal: int, name: str, raw: bytes, tds: int) -> bytes:
    """RETURNVALUE (0xAC): an OUTPUT parameter's value, with its TYPE_INFO."""
    user = struct.pack("<I", 0) if tds >= 0x72 else struct.pack("<H", 0)
    body = (struct.pack("<H", ordinal) + T.b_varchar(name) + b"\x01" + user
            + struct.pack("<H", 0x0001) + raw)
    return b"\xac" + body
