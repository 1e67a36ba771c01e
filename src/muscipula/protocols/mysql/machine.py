"""The MySQL server machine: handshake, authentication, then one command at a time."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from muscipula.machine import (
    Action,
    BaseMachine,
    CaptureData,
    CaptureEnd,
    Close,
    Emit,
    Send,
    StartTLS,
)
from muscipula.protocols.mysql import auth as A
from muscipula.protocols.mysql import errors as E
from muscipula.protocols.mysql import wire as w
from muscipula.protocols.mysql.compress import CompressError, Inflater, deflate
from muscipula.protocols.mysql.policy import LoginPolicy
from muscipula.protocols.mysql.query import Identity, SqlSession
from muscipula.protocols.mysql.results import (
    Column,
    Done,
    Result,
    Rows,
    binary_row,
    column_def,
    text_row,
)
from muscipula.protocols.mysql.statements import (
    Cursor,
    Prepared,
    StatementError,
    parse_execute,
    prepare,
    rows_size,
    skip_query_attributes,
)

CAPTURE_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Setup:
    """What every connection of the service shares, made once by `build`."""

    profile: A.Profile
    policy: LoginPolicy
    make_sql: Callable[[Identity, float], SqlSession]
    decrypt: Callable[[bytes], bytes | None]
    public_pem: bytes
    account_plugin: str
    tls: bool
    max_packet: int
    max_prepared: int
    max_long_data: int
    max_arg: int
    statistics: Callable[[float, int], str]
    max_protocol_errors: int = 100
    max_inflated: int = 4 * 1024 * 1024 + 1024
    #: plain bytes the compressed stream of one connection may inflate to, in all
    max_inflated_total: int = 64 * 1024 * 1024
    #: commands one read of compressed packets may carry before the connection is dropped
    max_commands_per_read: int = 4096
    #: plain bytes per compressed byte over the connection's life, past inflate_slack
    max_inflate_ratio: int = 32
    inflate_slack: int = 256 * 1024
    #: result-set bytes the open cursors of one connection may hold together
    max_cursor_bytes: int = 16 * 1024 * 1024
    #: the path of a connection's n-th internal temporary table (thread id, n)
    tmp_table: Callable[[int, int], str] = lambda thread, n: f"/tmp/#sql_{thread:x}_{n:x}"


class MysqlMachine(BaseMachine):
    protocol: ClassVar[str] = "mysqld"

    def __init__(self, setup: Setup, peer_host: str, peer_port: int, local_host: str,
                 thread_id: int, tls: bool = False) -> None:
        self.s = setup
        self.host = peer_host
        self.port = peer_port
        self.local_host = local_host
        self.thread_id = thread_id
        self.tls = tls
        self.frames = w.Deframer(setup.max_packet)
        self.state = "greeting"
        self.seq = 0
        self.salt = A.scramble(setup.profile.modern)
        self.client = A.Response()
        self.caps = 0
        self.plugin = ""
        self.proof = b""
        self.sql: SqlSession | None = None
        self.stmts: dict[int, Prepared] = {}
        self.cursors: dict[int, Cursor] = {}
        self.next_stmt = 1
        self.captures = 0
        self.multi = False
        self.login_done = False
        self.switched = False
        self.protocol_errors = 0
        #: during COM_CHANGE_USER: who to fall back to when the new login fails
        self.previous: tuple[A.Response, str | None, str] | None = None
        self.inflater: Inflater | None = None
        self.compress_next = False
        self.pending = b""
        self.cseq = 0
        #: while a compressed read is handled: commands it may still carry
        self.work_left: int | None = None
        #: internal temporary tables made so far (a cursor's rows are materialized in one)
        self.tmp_tables = 0

    # ------------------------------------------------------------- contract

    def buffered(self) -> int:
        held = self.frames.buffered() + len(self.pending)
        if self.inflater is not None:
            held += self.inflater.buffered()
        for st in self.stmts.values():
            held += st.long_data_size()
        return held + self._cursor_bytes()

    def _cursor_bytes(self) -> int:
        return sum(c.size for c in self.cursors.values())

    def start(self, now: float) -> list[Action]:
        self.seq = 0
        return [self._packet(A.greeting(self.s.profile, self.thread_id, self.salt))]

    def receive(self, data: bytes, now: float) -> list[Action]:
        if self.state == "closed":
            return []
        if self.inflater is not None:
            return self._receive_compressed(data, now)
        out = self._receive_plain(data, now)
        if self.inflater is not None and self.pending and self.state != "closed":
            rest, self.pending = self.pending, b""
            out += self._receive_compressed(rest, now)
        return out

    def _receive_compressed(self, data: bytes, now: float) -> list[Action]:
        """One compressed packet inflated and handled at a time, then the next."""
        inflater = self.inflater
        assert inflater is not None
        inflater.feed(data)
        out: list[Action] = []
        self.work_left = self.s.max_commands_per_read
        try:
            while self.state != "closed":
                try:
                    item = inflater.next()
                except CompressError as exc:
                    out += self._compress_failed(exc, data)
                    break
                if item is None:
                    break
                seq, plain = item
                self.cseq = (seq + 1) & 0xFF
                out += self._deflated(self._receive_plain(plain, now))
        finally:
            self.work_left = None
        return out

    def _compress_failed(self, exc: CompressError, data: bytes) -> list[Action]:
        self.state = "closed"
        err = E.packet_too_large() if exc.code == 1153 else E.uncompress()
        self.cseq = (exc.seq + 1) & 0xFF
        out: list[Action] = [Emit("protocol.error", {"detail": str(exc), "data": data[:64]})]
        if exc.limit:
            value = (self.s.max_inflate_ratio if exc.limit == "max_inflate_ratio"
                     else self.s.max_inflated_total)
            out.append(Emit("connection.limit", {"limit": exc.limit, "value": value}))
        return self._deflated([*out, self._error(err), Close("bad compressed packet")])

    def _deflated(self, actions: list[Action]) -> list[Action]:
        """The Sends of one reply as compressed packets, where the first Send stood."""
        sends = [a.data for a in actions if isinstance(a, Send)]
        if not sends:
            return actions
        data, self.cseq = deflate(b"".join(sends), self.cseq)
        out: list[Action] = []
        for a in actions:
            if isinstance(a, Send):
                if data:
                    out.append(Send(data))
                    data = b""
                continue
            out.append(a)
        return out

    def _receive_plain(self, data: bytes, now: float) -> list[Action]:
        most = None if self.work_left is None else self.work_left + 1
        packets = self.frames.feed(data, most)
        if packets is None:
            self.state = "closed"
            return [Emit("protocol.error", {"detail": "packet too large", "data": data[:64]}),
                    self._error(E.packet_too_large()), Close("packet too large")]
        out: list[Action] = []
        self.switched = False
        for i, (seq, payload) in enumerate(packets):
            if self.work_left is not None:
                if self.work_left == 0:
                    # a compressed packet packed with commands: ours to bound, not the peer's
                    self.state = "closed"
                    self.frames.buf.clear()
                    out += [Emit("connection.limit", {"limit": "max_commands_per_read",
                                                      "value": self.s.max_commands_per_read}),
                            self._error(E.uncompress()), Close("too many commands in one read")]
                    break
                self.work_left -= 1
            self.seq = (seq + 1) & 0xFF
            try:
                out += self._dispatch(payload, now, packets, i)
            except (w.Truncated, struct.error, IndexError, ValueError, UnicodeError) as exc:
                out += self._malformed(payload, exc)
            if self.state == "closed" or self.switched:
                break
            if self.compress_next:
                # the OK just sent is the last plain packet: what follows is compressed
                self.compress_next = False
                self.inflater = Inflater(self.s.max_packet + 8, self.s.max_inflated,
                                         self.s.max_inflated_total, self.s.max_inflate_ratio,
                                         self.s.inflate_slack)
                self.pending = b"".join(w.frame(s, p) for s, p in packets[i + 1:]) \
                    + bytes(self.frames.buf)
                self.frames.buf.clear()
                break
        return out

    def closed(self, now: float) -> list[Action]:
        out: list[Action] = []
        if not self.login_done and self.client.username and self.state != "greeting":
            out.append(self._login(False, None))
        if self.sql is not None:
            self.sql.close()
            self.sql = None
        self.state = "closed"
        return out

    # ------------------------------------------------------------- framing

    def _packet(self, payload: bytes) -> Send:
        data = w.frame(self.seq, payload)
        self.seq = (self.seq + 1 + len(payload) // w.MAX_CHUNK) & 0xFF
        return Send(data)

    def _error(self, err: E.SqlError) -> Send:
        return self._packet(w.err_payload(err.code, err.state, err.message))

    def _status(self, more: bool = False) -> int:
        status = w.STATUS_AUTOCOMMIT if self.sql is None or self.sql.autocommit() else 0
        return status | (w.STATUS_MORE_RESULTS if more else 0)

    def _ok(self, done: Done | None = None, more: bool = False) -> Send:
        d = done or Done()
        return self._packet(w.ok_payload(d.affected, d.insert_id, self._status(more),
                                         d.warnings, d.info,
                                         session_track=bool(self.caps & w.SESSION_TRACK)))

    def _eof(self, more: bool = False, status: int = 0) -> Send:
        if self.caps & w.DEPRECATE_EOF:
            return self._packet(w.ok_payload(status=self._status(more) | status, header=0xFE,
                                             session_track=bool(self.caps & w.SESSION_TRACK)))
        return self._packet(w.eof_payload(self._status(more) | status))

    def _malformed(self, payload: bytes, exc: Exception) -> list[Action]:
        out: list[Action] = [Emit("protocol.error", {"detail": f"malformed packet in "
                                                               f"{self.state}",
                                                     "data": payload[:64]})]
        if self.state == "command":
            out.append(self._error(E.SqlError(1835, "HY000", "Malformed communication packet.")))
            return out
        self.state = "closed"
        out += [self._error(E.bad_handshake()), Close("bad handshake")]
        return out

    # ---------------------------------------------------------- handshake

    def _dispatch(self, payload: bytes, now: float, packets: list[tuple[int, bytes]],
                  index: int) -> list[Action]:
        state = self.state
        if state == "command":
            return self._command(payload, now)
        if state == "greeting":
            return self._response(payload, now, packets, index)
        if state == "switch":
            self.proof = payload
            return self._check(now)
        if state in ("sha2_full", "sha2_key"):
            return self._full_auth(payload, now)
        return []

    def _response(self, payload: bytes, now: float, packets: list[tuple[int, bytes]],
                  index: int) -> list[Action]:
        resp = A.parse_response(payload)
        if resp.ssl_request:
            if not self.s.tls or self.tls:
                self.state = "closed"
                return [self._error(E.bad_handshake()), Close("ssl refused")]
            self.tls = True
            self.state = "greeting"
            # anything behind the SSLRequest is the TLS ClientHello
            rest = b"".join(w.frame(s, p) for s, p in packets[index + 1:])
            rest += bytes(self.frames.buf)
            self.frames.buf.clear()
            self.switched = True
            return [StartTLS(rest)]
        self.client = resp
        self.caps = resp.capabilities & self.s.profile.capabilities
        self.multi = bool(self.caps & w.MULTI_STATEMENTS)
        return self._authenticate(resp, now)

    def _authenticate(self, resp: A.Response, now: float) -> list[Action]:
        """The account's plugin against the client's: switch, or check what it sent."""
        wanted = self.s.account_plugin
        offered = resp.plugin or (A.NATIVE if resp.capabilities & w.SECURE_CONNECTION else "")
        self.proof = resp.auth
        if offered != wanted and (resp.capabilities & w.PLUGIN_AUTH):
            self.plugin = wanted
            self.state = "switch"
            return [self._packet(A.switch_request(wanted, self.salt))]
        self.plugin = wanted
        return self._check(now)

    def _check(self, now: float) -> list[Action]:
        proof = self.proof
        if self.plugin == A.CACHING_SHA2 and proof and proof != b"\0":
            self.state = "sha2_full"
            return [self._packet(b"\x01\x04")]
        if proof in (b"", b"\0"):
            return self._decide("", now)
        return self._decide(None, now)

    def _full_auth(self, payload: bytes, now: float) -> list[Action]:
        if self.tls:
            return self._decide(payload.split(b"\0", 1)[0].decode("utf-8", "replace"), now)
        if payload == b"\x02" and self.state == "sha2_full":
            self.state = "sha2_key"
            return [self._packet(b"\x01" + self.s.public_pem)]
        plain = self.s.decrypt(payload) if len(payload) >= 128 else None
        if plain is None and payload.endswith(b"\0"):
            # some clients send the password in the clear even without TLS
            return self._decide(payload[:-1].decode("utf-8", "replace"), now)
        if plain is None:
            self.state = "closed"
            self.login_done = True
            return [self._login(False, None), Emit("protocol.error", {
                "detail": "undecryptable password", "data": payload[:64]}),
                    self._error(E.access_denied(self.client.username, self.host, True)),
                    Close("auth failed")]
        return self._decide(A.unmask(plain, self.salt), now)

    def _decide(self, password: str | None, now: float) -> list[Action]:
        user = self.client.username

        def matches(candidate: str) -> bool:
            if self.plugin == A.NATIVE:
                return A.native_proof(candidate, self.salt) == self.proof
            return A.sha2_proof(candidate, self.salt) == self.proof

        ok = self.s.policy.decide(user, self.host, password, matches)
        if ok and password is None and self.s.policy.mode == "list":
            password = self.s.policy.users.get(user)
        self.login_done = True
        out: list[Action] = [self._login(ok, password)]
        if self.previous is not None:
            return out + self._changed(ok, password, now)
        if not ok:
            self.state = "closed"
            used = bool(self.proof not in (b"", b"\0") or password)
            return [*out, self._error(E.access_denied(user, self.host, used)),
                    Close("auth failed")]
        self.sql = self.s.make_sql(Identity(user, self.host, self.thread_id, self.local_host,
                                            self.port), now)
        self.state = "command"
        if self.client.database:
            try:
                self.sql.use(self.client.database)
            except E.SqlError as err:
                self.state = "closed"
                return [*out, self._error(err), Close("unknown database")]
        if self.plugin == A.CACHING_SHA2 and password is None:
            out.append(self._packet(b"\x01\x03"))
        out.append(self._ok())
        self.compress_next = bool(self.caps & w.COMPRESS) and self.inflater is None
        return out

    def _change_user(self, body: bytes, now: float) -> list[Action]:
        """COM_CHANGE_USER: a new login on this connection; the session starts afresh."""
        resp = A.parse_change_user(body, self.client.capabilities)
        record = self._record(17, [resp.username, resp.database])
        self.previous = (self.client, self.sql.db if self.sql else None, self.plugin)
        self.client = resp
        self.login_done = False
        self.stmts.clear()
        self.cursors.clear()
        return [record, *self._authenticate(resp, now)]

    def _changed(self, ok: bool, password: str | None, now: float) -> list[Action]:
        """The end of COM_CHANGE_USER: the new user's session, or the old user back."""
        assert self.previous is not None
        old_client, old_db, old_plugin = self.previous
        self.previous = None
        self.state = "command"
        err: E.SqlError | None = None
        if ok:
            session = self.s.make_sql(Identity(self.client.username, self.host,
                                               self.thread_id, self.local_host, self.port), now)
            if self.client.database:
                try:
                    session.use(self.client.database)
                except E.SqlError as exc:
                    err = exc
            if err is None:
                if self.sql is not None:
                    self.sql.close()
                self.sql = session
                out: list[Action] = []
                if self.plugin == A.CACHING_SHA2 and password is None:
                    out.append(self._packet(b"\x01\x03"))
                return [*out, self._ok()]
            session.close()
        else:
            used = bool(self.proof not in (b"", b"\0"))
            err = E.access_denied(self.client.username, self.host, used)
        # mysqld resets the session before it authenticates: the old user comes back
        # with the old database, but without its prepared statements
        self.client, self.plugin = old_client, old_plugin
        if self.sql is not None:
            self._reset(now)
            self.sql.db = old_db
        return [self._error(err)]

    def _login(self, ok: bool, password: str | None) -> Emit:
        c = self.client
        extra: dict[str, Any] = {"plugin": self.plugin or c.plugin, "client_plugin": c.plugin,
                                 "database": c.database, "attributes": c.attributes,
                                 "tls": self.tls, "capabilities": c.capabilities}
        if password is None and self.proof not in (b"", b"\0"):
            extra["hash"] = A.hashcat(self.plugin or A.NATIVE, self.salt, self.proof)
        return Emit("login", {"username": c.username, "password": password,
                              "success": ok, "method": self.plugin or c.plugin, "extra": extra})

    # ------------------------------------------------------------- commands

    def _command(self, payload: bytes, now: float) -> list[Action]:
        out = self._command_inner(payload or b"\x00", now)
        if any(isinstance(a, Emit) and a.name == "protocol.error" for a in out):
            self.protocol_errors += 1
            if self.protocol_errors >= self.s.max_protocol_errors:
                self.state = "closed"
                out.append(Close("too many protocol errors"))
        else:
            self.protocol_errors = 0
        return out

    def _command_inner(self, payload: bytes, now: float) -> list[Action]:
        cmd = payload[0]
        body = payload[1:]
        name = w.COMMANDS.get(cmd, "")
        if cmd == 3:
            text = self._query_text(body)
            return [self._record(cmd, [text]), *self._query(text, now)]
        if cmd == 1:
            self.state = "closed"
            return [self._record(cmd, []), Close("quit")]
        if cmd == 2:
            db = body.decode("utf-8", "replace")
            out: list[Action] = [self._record(cmd, [db])]
            return out + self._run(lambda: [self._sql().use(db)], now)
        if cmd == 4:
            table, _, wild = body.partition(b"\0")
            return [self._record(cmd, [table.decode("utf-8", "replace"),
                                       wild.decode("utf-8", "replace")]),
                    *self._field_list(table.decode("utf-8", "replace"))]
        if cmd == 14:
            return [self._record(cmd, []), self._ok()]
        if cmd == 17:
            return self._change_user(body, now)
        if cmd == 9:
            text = self.s.statistics(now, self._sql().questions)
            return [self._record(cmd, []), self._packet(text.encode())]
        if cmd == 31:
            self._reset(now)
            return [self._record(cmd, []), self._ok()]
        if cmd == 27:
            opt = struct.unpack("<H", body[:2])[0] if len(body) >= 2 else 0
            self.multi = opt == 0
            return [self._record(cmd, [str(opt)]), self._eof()]
        if cmd == 22:
            text = body.decode("utf-8", "replace")
            return [self._record(cmd, [text]), *self._prepare(text, now)]
        if cmd == 23:
            return self._execute(body, now)
        if cmd == 24:
            if len(body) >= 6:
                stmt_id, param = struct.unpack("<IH", body[:6])
                st = self.stmts.get(stmt_id)
                if st is not None:
                    held = sum(x.long_data_size() for x in self.stmts.values())
                    st.add_long_data(param, body[6:], st.long_data_size()
                                     + self.s.max_long_data - held)
            return [self._record(cmd, [])]
        if cmd == 25:
            stmt_id = struct.unpack("<I", body[:4])[0] if len(body) >= 4 else 0
            self.stmts.pop(stmt_id, None)
            self.cursors.pop(stmt_id, None)
            return [self._record(cmd, [str(stmt_id)])]
        if cmd == 26:
            stmt_id = struct.unpack("<I", body[:4])[0] if len(body) >= 4 else 0
            st = self.stmts.get(stmt_id)
            if st is None:
                return [self._record(cmd, [str(stmt_id)]),
                        self._error(E.unknown_stmt(stmt_id, "mysqld_stmt_reset"))]
            st.reset()
            self.cursors.pop(stmt_id, None)
            return [self._record(cmd, [str(stmt_id)]), self._ok()]
        if cmd == 28:
            return self._fetch(body)
        if cmd == 12:
            target = struct.unpack("<I", body[:4])[0] if len(body) >= 4 else 0
            return [self._record(cmd, [str(target)]),
                    self._error(E.SqlError(1094, "HY000", f"Unknown thread id: {target}"))]
        if cmd == 8:
            return [self._record(cmd, []), self._error(E.privilege("SHUTDOWN"))]
        if cmd in (7, 13):
            return [self._record(cmd, []), self._ok() if cmd == 7 else self._eof()]
        out = [Emit("protocol.error", {"detail": f"unsupported command {name or cmd}",
                                       "data": payload[:64]})]
        out.append(self._record(cmd, [body[:self.s.max_arg].decode("utf-8", "replace")]
                                if body else []))
        out.append(self._error(E.unknown_command()))
        return out

    def _sql(self) -> SqlSession:
        assert self.sql is not None
        return self.sql

    def _record(self, cmd: int, args: list[str]) -> Emit:
        cap = self.s.max_arg
        return Emit("mysql.command", {"cmd": cmd, "args": [a[:cap] for a in args]})

    def _reset(self, now: float) -> None:
        old = self._sql()
        self.sql = self.s.make_sql(old.who, now)
        self.sql.db = old.db
        old.close()
        self.stmts.clear()
        self.cursors.clear()

    def _query_text(self, body: bytes) -> str:
        if self.caps & w.QUERY_ATTRIBUTES:
            body = skip_query_attributes(body)
        return body.decode("utf-8", "surrogateescape")

    def _run(self, fn: Callable[[], list[Result]], now: float, binary: bool = False,
             cursor: int | None = None) -> list[Action]:
        sql = self._sql()
        sql.now = now
        try:
            results = fn()
        except E.SqlError as err:
            return [*self._effects(), self._error(err)]
        except RecursionError:
            return [*self._effects(), self._error(E.syntax(""))]
        out = self._effects()
        if cursor is not None and len(results) == 1 and isinstance(results[0], Rows):
            return out + self._open_cursor(cursor, results[0])
        for i, result in enumerate(results):
            more = i < len(results) - 1
            if isinstance(result, Rows):
                out += self._rows(result, binary, more)
            else:
                out.append(self._ok(result, more))
        return out

    def _query(self, text: str, now: float) -> list[Action]:
        sql = self._sql()

        def go() -> list[Result]:
            if not self.multi:
                sql.effects.offers.clear()
                stmts = sql.execute(text, now)
                if len(stmts) > 1:
                    raise E.syntax(text.split(";", 1)[1].strip())
                return stmts
            return sql.execute(text, now)

        sql.effects.offers.clear()
        sql.effects.captures.clear()
        sql.effects.udfs.clear()
        return self._run(go, now)

    def _effects(self) -> list[Action]:
        sql = self._sql()
        out: list[Action] = []
        fx = sql.effects
        for url in fx.offers:
            out.append(Emit("download.offer", {"url": url, "source": "mysql"}))
        for udf in fx.udfs:
            out.append(Emit("mysql.udf", dict(udf)))
        for url, data in fx.captures:
            self.captures += 1
            stream = f"mysql-{self.captures}"
            for i in range(0, len(data), CAPTURE_CHUNK):
                out.append(CaptureData(stream, data[i:i + CAPTURE_CHUNK]))
            if not data:
                out.append(CaptureData(stream, b""))
            out.append(CaptureEnd(stream, url))
        fx.offers.clear()
        fx.captures.clear()
        fx.udfs.clear()
        return out

    def _charset(self) -> int:
        return self.s.profile.charset if self.s.profile.charset != 8 else 8

    def _rows(self, rows: Rows, binary: bool, more: bool = False) -> list[Action]:
        cs = self._charset()
        head = w.lenenc_int(len(rows.columns))
        if self.caps & w.OPTIONAL_METADATA:
            head += b"\x01"
        out: list[Action] = [self._packet(head)]
        for col in rows.columns:
            out.append(self._packet(column_def(col, cs)))
        if not self.caps & w.DEPRECATE_EOF:
            out.append(self._eof())
        if binary:
            for row in rows.rows:
                out.append(self._packet(binary_row(rows.columns, row)))
        else:
            for row in rows.rows:
                out.append(self._packet(text_row(row, rows.columns)))
        out.append(self._eof(more))
        return out

    def _open_cursor(self, stmt_id: int, rows: Rows) -> list[Action]:
        """CURSOR_TYPE_READ_ONLY: the metadata now, the rows on COM_STMT_FETCH.

        mysqld materializes the rows into an internal temporary table; when that
        runs out of room the execute fails with ER_RECORD_FILE_FULL naming it,
        which is how a result past our cursor budget is answered.
        """
        size = rows_size(rows.rows)
        table = self.s.tmp_table(self.thread_id, self.tmp_tables)
        self.tmp_tables += 1
        if self._cursor_bytes() + size > self.s.max_cursor_bytes:
            return [self._error(E.table_full(table))]
        self.cursors[stmt_id] = Cursor(rows.columns, rows.rows, size=size)
        cs = self._charset()
        head = w.lenenc_int(len(rows.columns))
        if self.caps & w.OPTIONAL_METADATA:
            head += b"\x01"
        out: list[Action] = [self._packet(head)]
        out += [self._packet(column_def(col, cs)) for col in rows.columns]
        out.append(self._eof(status=w.STATUS_CURSOR_EXISTS))
        return out

    def _fetch(self, body: bytes) -> list[Action]:
        stmt_id, count = struct.unpack("<II", body[:8])
        record = self._record(28, [str(stmt_id), str(count)])
        if stmt_id not in self.stmts:
            return [record, self._error(E.unknown_stmt(stmt_id, "mysqld_stmt_fetch"))]
        cur = self.cursors.get(stmt_id)
        if cur is None:
            return [record, self._error(E.no_cursor(stmt_id))]
        chunk, done = cur.take(count)
        out: list[Action] = [record]
        out += [self._packet(binary_row(cur.columns, row)) for row in chunk]
        if done:
            del self.cursors[stmt_id]
        out.append(self._eof(status=w.STATUS_LAST_ROW_SENT if done else w.STATUS_CURSOR_EXISTS))
        return out

    def _field_list(self, table: str) -> list[Action]:
        sql = self._sql()
        try:
            result = sql.describe_table(sql._db_or_error(None), table, False)
        except E.SqlError as err:
            return [self._error(err)]
        assert isinstance(result, Rows)
        out: list[Action] = []
        for row in result.rows:
            col = Column(str(row[0]), table=table, schema=sql.db or "")
            out.append(self._packet(column_def(col, self._charset()) + b"\xfb"))
        out.append(self._eof())
        return out

    # ---------------------------------------------------- prepared statements

    def _prepare(self, text: str, now: float) -> list[Action]:
        if len(self.stmts) >= self.s.max_prepared:
            return [self._error(E.SqlError(
                1461, "42000", "Can't create more than max_prepared_stmt_count statements "
                               f"(current value: {self.s.max_prepared})"))]
        try:
            st = prepare(self.next_stmt, text)
        except StatementError as exc:
            return [self._error(E.syntax(str(exc)))]
        sql = self._sql()
        columns: list[Column] = []
        if st.returns_rows():
            sql.now = now
            try:
                results = sql.execute(st.bind([None] * st.params), now)
            except E.SqlError as err:
                return [self._error(err)]
            finally:
                sql.effects.captures.clear()
            if results and isinstance(results[-1], Rows):
                columns = results[-1].columns
        st.columns = len(columns)
        self.stmts[st.id] = st
        self.next_stmt += 1
        head = b"\x00" + struct.pack("<IHHBH", st.id, len(columns), st.params, 0, 0)
        if self.caps & w.OPTIONAL_METADATA:
            head += b"\x01"
        out: list[Action] = [*self._effects(), self._packet(head)]
        cs = self._charset()
        if st.params:
            for _ in range(st.params):
                out.append(self._packet(column_def(Column("?", w.T_VAR_STRING, 0,
                                                          charset=63), cs)))
            if not self.caps & w.DEPRECATE_EOF:
                out.append(self._eof())
        if columns:
            for col in columns:
                out.append(self._packet(column_def(col, cs)))
            if not self.caps & w.DEPRECATE_EOF:
                out.append(self._eof())
        return out

    def _execute(self, body: bytes, now: float) -> list[Action]:
        stmt_id = struct.unpack("<I", body[:4])[0] if len(body) >= 4 else 0
        st = self.stmts.get(stmt_id)
        if st is None:
            return [self._record(23, [str(stmt_id)]),
                    self._error(E.unknown_stmt(stmt_id, "mysqld_stmt_execute"))]
        try:
            values = parse_execute(st, body, bool(self.caps & w.QUERY_ATTRIBUTES))
        except (StatementError, w.Truncated, struct.error) as exc:
            return [self._record(23, [st.text]),
                    Emit("protocol.error", {"detail": f"bad execute: {exc}",
                                            "data": body[:64]}),
                    self._error(E.wrong_args("mysqld_stmt_execute"))]
        text = st.bind(values)
        st.reset()
        self.cursors.pop(stmt_id, None)
        cursor = stmt_id if body[4] & w.CURSOR_TYPE_READ_ONLY else None
        return [self._record(23, [text]),
                *self._run(lambda: self._sql().execute(text, now), now, binary=True,
                           cursor=cursor)]
