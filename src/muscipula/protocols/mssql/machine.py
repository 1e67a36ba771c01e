"""One TDS connection: PRELOGIN, TLS inside TDS, LOGIN7 (SQL or NTLM), then SQL batches.

Replies follow SQL Server's token order and widths for the client's TDS version
(7.1 for impacket, 7.4 for FreeTDS, pytds and pymssql).
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from muscipula.machine import Action, BaseMachine, Close, Emit, Send
from muscipula.protocols.mssql import login as L
from muscipula.protocols.mssql import tds as T
from muscipula.protocols.mssql.ntlm import is_negotiate, parse_authenticate
from muscipula.protocols.mssql.procs import ProcRunner, final
from muscipula.protocols.mssql.rpc import MAX_PARAMS, RpcError
from muscipula.protocols.mssql.rpc import calls as rpc_calls
from muscipula.protocols.mssql.sql import CALL_STEPS, PARAM_STEPS, SqlError, SqlSession
from muscipula.protocols.mssql.sql import Setup as SqlSetup
from muscipula.protocols.mssql.tls import TdsTls, TlsFailure

if TYPE_CHECKING:
    from muscipula.protocols.mssql.product import Product
    from muscipula.protocols.mysql.policy import LoginPolicy


@dataclass(frozen=True, slots=True)
class Setup:
    product: Product
    policy: LoginPolicy
    sql: SqlSetup
    max_packet: int
    max_message: int
    max_protocol_errors: int
    #: now -> (NTLM CHALLENGE message, its server challenge); None: no integrated login
    ntlm: Callable[[float], tuple[bytes, bytes]] | None
    #: the fallback certificate's context; None: no TLS (ENCRYPT_NOT_SUP to all)
    tls: ssl.SSLContext | None = None
    encryption: str = "none"
    max_tls_buffer: int = 64 * 1024
    #: prepared statements (sp_prepare handles) one session keeps; the oldest give way
    max_prepared: int = 1000
    #: parameters one RPC call may carry (SQL Server's own ceiling: 2100, error 8003)
    max_call_params: int = MAX_PARAMS


class MssqlMachine(BaseMachine):
    protocol = "mssqld"

    def __init__(self, setup: Setup, remote_host: str, spid: int) -> None:
        self.s = setup
        self.remote_host = remote_host
        self.spid = spid & 0xFFFF
        self.framer = T.Framer(setup.max_packet, setup.max_message)
        self.tds = 0x74
        self.packet_size = 4096
        self.sql: SqlSession | None = None
        self.procs: ProcRunner | None = None
        self.pending: L.Login7 | None = None  # an integrated login waiting for its SSPI
        self.errors = 0
        self.challenge = b""
        self.xact = 0
        self.closed_ = False
        self.tls: TdsTls | None = None
        #: ENCRYPT_OFF: TLS for the LOGIN7 only; ENCRYPT_ON/REQ: for everything
        self.encrypt = L.ENCRYPT_NOT_SUP
        self.encryption: dict[str, object] = {}  # what was negotiated, for the record

    def buffered(self) -> int:
        return (self.framer.held() + (self.tls.held() if self.tls is not None else 0)
                + (self.procs.held() if self.procs is not None else 0))

    def closed(self, now: float) -> list[Action]:
        if self.sql is not None:
            self.sql.close()
        return []

    def receive(self, data: bytes, now: float) -> list[Action]:
        out: list[Action] = []
        if self.closed_:
            return out
        if self.tls is not None:
            data = self._tls_in(data, out)
            if self.closed_:
                return out
        for item in self.framer.feed(data):
            if isinstance(item, str):
                self.closed_ = True
                return [*out, Emit("connection.limit", {"limit": item, "value": len(data)}),
                        Close(item)]
            kind, payload = item
            out += self._sealed(self._message(kind, payload, now))
            if self.closed_:
                break
        return out

    # ------------------------------------------------------------ TLS

    def _tls_in(self, data: bytes, out: list[Action]) -> bytes:
        """Raw bytes through TLS: the handshake answered, the plaintext TDS returned."""
        tls = self.tls
        assert tls is not None
        try:
            fed = tls.feed(data)
        except TlsFailure as exc:
            self.closed_ = True
            if exc.detail == "max_tls_buffer":
                out += [Emit("connection.limit", {"limit": exc.detail, "value": tls.held()}),
                        Close(exc.detail)]
                return b""
            alert = exc.alert
            if alert and not tls.handshaken:
                alert = T.packets(T.PRELOGIN, alert, 4096, 0)
            out.append(Emit("protocol.error", {"detail": exc.detail, "data": data[:512]}))
            if alert:
                out.append(Send(alert))
            out.append(Close("tls error"))
            return b""
        if fed.hello is not None:
            out.append(Emit("connection.tls.hello", fed.hello.fields()))
        if fed.send:
            out.append(Send(fed.send))
        if fed.done:
            self.encryption.update(tls=tls.version(), cipher=tls.cipher())
        if fed.clear:
            # TDS in the clear where the handshake was due: SQL Server would hang up,
            # but the login inside is worth more than the imitation; served as plain
            self.tls = None
            self.encrypt = L.ENCRYPT_NOT_SUP
            self.encryption["skipped_tls"] = True
            out.append(Emit("protocol.error", {"detail": "TDS in the clear during the TLS "
                                                         "handshake", "data": fed.clear[:512]}))
            return fed.clear
        return fed.plain

    def _sealed(self, actions: list[Action]) -> list[Action]:
        """Replies through TLS while it is on (all of them with ENCRYPT_ON)."""
        tls = self.tls
        if tls is None or not tls.handshaken:
            return actions
        return [Send(tls.encrypt(a.data)) if isinstance(a, Send) else a for a in actions]

    # ------------------------------------------------------------ dispatch

    def _reply(self, tokens: bytes) -> Send:
        return Send(T.packets(T.REPLY, tokens, self.packet_size, self.spid))

    def _bad(self, detail: str, data: bytes) -> list[Action]:
        """What SQL Server does with a packet it cannot use: it drops the connection."""
        self.closed_ = True
        return [Emit("protocol.error", {"detail": detail, "data": data[:512]}), Close(detail)]

    def _message(self, kind: int, payload: bytes, now: float) -> list[Action]:
        if kind == T.PRELOGIN and self.sql is None and self.pending is None:
            return self._prelogin(payload)
        if kind == T.LOGIN7 and self.sql is None and self.pending is None:
            return self._login7(payload, now)
        if kind == T.SSPI and self.pending is not None:
            return self._sspi(payload, now)
        if self.sql is None:
            return self._bad(f"packet type {kind:#x} before login", payload)
        if kind == T.SQL_BATCH:
            return self._batch(payload, now)
        if kind == T.RPC:
            return self._rpc(payload, now)
        if kind == T.TRANSACTION:
            return [self._reply(self._transaction(payload))]
        if kind == T.ATTENTION:
            return [self._reply(T.done(T.DONE_ATTN, 0, 0, self.tds))]
        self.errors += 1
        if self.errors >= self.s.max_protocol_errors:
            return self._bad(f"packet type {kind:#x}", payload)
        err = T.error(102, 1, 15, "Incorrect syntax near ''.", self.s.product.server,
                      tds=self.tds)
        return [Emit("protocol.error", {"detail": f"packet type {kind:#x}",
                                        "data": payload[:512]}),
                self._reply(err + T.done(T.DONE_ERROR, 0, 0, self.tds))]

    # ------------------------------------------------------------ login

    def _prelogin(self, payload: bytes) -> list[Action]:
        options = L.parse_prelogin(payload)
        if options is None:
            return self._bad("malformed PRELOGIN", payload)
        p = self.s.product
        again = bool(self.encryption)  # a second PRELOGIN never starts TLS twice
        setting = self.s.encryption if self.s.tls is not None and not again else "none"
        body, asked, answer = L.prelogin_reply(options, p.version, p.instance, setting)
        out: list[Action] = [Send(T.packets(T.REPLY, body, 4096, 0))]
        if answer is None or again:
            return out
        self.encryption = {"asked": asked, "answered": answer}
        if answer == L.ENCRYPT_REQ and asked & 0x0F == L.ENCRYPT_NOT_SUP:
            # Force Encryption and a client that cannot: told so, then dropped
            self.closed_ = True
            return [*out, Close("encryption required")]
        if answer == L.ENCRYPT_NOT_SUP:
            if asked & 0x0F in (L.ENCRYPT_ON, L.ENCRYPT_REQ):
                out.insert(0, Emit("protocol.error", {
                    "detail": "client requires encryption; answered ENCRYPT_NOT_SUP",
                    "data": payload[:512]}))
            return out
        assert self.s.tls is not None
        self.tls = TdsTls(self.s.tls, self.s.max_tls_buffer)
        self.encrypt = answer
        return out

    def _login7(self, payload: bytes, now: float) -> list[Action]:
        login = L.parse_login7(payload)
        if login is None:
            return self._bad("malformed LOGIN7", payload)
        self.tds, _ = self.s.product.tds_version(login.tds)
        if self.encryption:
            login.extra["encryption"] = dict(self.encryption)
        if self.tls is not None and self.encrypt == L.ENCRYPT_OFF:
            # ENCRYPT_OFF: TLS carried the LOGIN7 only; the answer and all after are clear
            rest = self.tls.leftover()
            self.tls = None
            if rest:
                self.framer.buf += rest  # behind the plaintext already framed
        out: list[Action] = [Emit("mssql.fingerprint", {
            "hostname": login.hostname, "appname": login.appname,
            "cltintname": login.cltintname, "extra": login.extra})]
        if login.integrated:
            if self.s.ntlm is None or not is_negotiate(login.sspi):
                return [*out, *self._fail(login, "", now, "ntlm")]
            self.pending = login
            message, self.challenge = self.s.ntlm(now)
            return [*out, self._reply(T.sspi(message))]
        return out + self._finish(login, login.username, login.password, now, "password")

    def _sspi(self, payload: bytes, now: float) -> list[Action]:
        login, self.pending = self.pending, None
        assert login is not None
        auth = parse_authenticate(payload, self.challenge)
        if auth is None:
            return self._fail(login, "", now, "ntlm")
        user = f"{auth['domain']}\\{auth['user']}" if auth["domain"] else auth["user"]
        login.extra = {**login.extra, "ntlm": auth}
        return self._fail(login, user, now, "ntlm", hash_=auth.get("hash"))

    def _emit_login(self, login: L.Login7, user: str, password: str | None, ok: bool,
                    method: str, hash_: Any = None) -> Emit:
        extra = dict(login.extra)
        if hash_:
            extra["hash"] = hash_
        return Emit("login", {"username": user, "password": password, "success": ok,
                              "method": method, "extra": extra})

    def _fail(self, login: L.Login7, user: str, now: float, method: str,
              hash_: Any = None) -> list[Action]:
        p = self.s.product
        text = f"Login failed for user '{user}'." if user else \
            "Login failed. The login is from an untrusted domain and cannot be used with " \
            "Windows authentication."
        number = 18456 if user else 18452
        tokens = (T.error(number, 1, 14, text, p.server, tds=self.tds)
                  + T.done(T.DONE_ERROR, 0, 0, self.tds))
        self.closed_ = True
        return [self._emit_login(login, user, None if method == "ntlm" else login.password,
                                 False, method, hash_),
                self._reply(tokens), Close("login failed")]

    def _finish(self, login: L.Login7, user: str, password: str, now: float,
                method: str) -> list[Action]:
        ok = self.s.policy.decide(user, self.remote_host, password, lambda _: False)
        if not ok:
            return self._fail(login, user, now, method)
        p = self.s.product
        self.tds, version = p.tds_version(login.tds)
        size = login.packet_size if 512 <= login.packet_size <= 32767 else 4096
        self.packet_size = size
        self.sql = SqlSession(self.s.sql, user, login.hostname, self.spid, self.tds)
        db = self.sql.db
        srv = p.server
        tokens = (T.envchange(1, db, "master")
                  + T.info(5701, 2, 0, f"Changed database context to '{db}'.", srv,
                           tds=self.tds)
                  + T.envchange_collation()
                  + T.envchange(2, "us_english", "")
                  + T.info(5703, 1, 0, "Changed language setting to us_english.", srv,
                           tds=self.tds)
                  + T.loginack(version, "Microsoft SQL Server", p.version)
                  + T.envchange(4, str(size), "4096")
                  + T.done(0, 0, 0, self.tds))
        return [self._emit_login(login, user, password, True, method), self._reply(tokens)]

    # ------------------------------------------------------------ batches

    def _transaction(self, payload: bytes) -> bytes:
        """Transaction manager requests (pytds begins one at connect): begin, commit,
        rollback answered with their ENVCHANGE; nothing is really transacted."""
        data = self._skip_headers(payload)
        request = struct.unpack_from("<H", data)[0] if len(data) >= 2 else -1
        if request == 5:  # TM_BEGIN_XACT
            self.xact += 1
            new = struct.pack("<Q", (self.spid << 32) | self.xact)
            return T.envchange_bytes(8, new, b"") + T.done(0, 0, 0, self.tds)
        if request in (7, 8):  # TM_COMMIT_XACT, TM_ROLLBACK_XACT
            old = struct.pack("<Q", (self.spid << 32) | self.xact)
            return T.envchange_bytes(request + 2, b"", old) + T.done(0, 0, 0, self.tds)
        return T.done(0, 0, 0, self.tds)

    def _skip_headers(self, data: bytes) -> bytes:
        """ALL_HEADERS leads a batch or request from TDS 7.2 on."""
        if self.tds >= 0x72 and len(data) >= 4:
            total = struct.unpack_from("<I", data)[0]
            if 4 <= total <= len(data):
                return data[total:]
        return data

    def _batch(self, payload: bytes, now: float) -> list[Action]:
        data = self._skip_headers(payload)
        text = data[:len(data) & ~1].decode("utf-16-le", "replace")
        sql = self.sql
        assert sql is not None
        # recorded before it is run: the batch that breaks something is the one to keep
        out: list[Action] = [Emit("mssql.command", {"status": "complete", "cmd": text})]
        sql.request()
        tokens = sql.batch(text, now)
        out += self._effects(sql)
        out.append(self._reply(tokens))
        return out

    @staticmethod
    def _effects(sql: SqlSession) -> list[Action]:
        """What a request did besides its answer: URLs offered, its work budget run out."""
        out: list[Action] = []
        fx = sql.effects
        for url in fx.offers:
            out.append(Emit("download.offer", {"url": url, "source": "mssql"}))
        fx.offers.clear()
        fx.commands.clear()
        if sql.meter.exhausted:  # answered 8645: what it was charged, refused work included
            out.append(Emit("connection.limit", {"limit": "max_request_steps",
                                                 "value": sql.meter.spent}))
        return out

    # ------------------------------------------------------------ RPC

    def _rpc(self, payload: bytes, now: float) -> list[Action]:
        """Procedure calls: each recorded as the EXEC it amounts to, then answered."""
        sql = self.sql
        assert sql is not None
        if self.procs is None:
            self.procs = ProcRunner(sql, self.s.max_prepared, sql.s.max_statement_chars,
                                    self.s.max_message)
        sql.request()
        it = rpc_calls(self._skip_headers(payload), self.s.max_call_params)
        try:
            ahead = next(it)
        except RpcError as err:
            return self._rpc_fault(err, payload, b"")
        out = []
        tokens = bytearray()
        limit = sql.s.max_batch_statements
        n = 0
        fault: RpcError | None = None
        while ahead is not None:
            call = ahead
            ahead = None
            if n < limit:  # one call decoded ahead: its DONEPROC says whether more follow
                try:
                    ahead = next(it, None)
                except RpcError as err:
                    fault = err
            out.append(Emit("mssql.command", {"status": "complete",
                                              "cmd": self.procs.describe(call)}))
            more = ahead is not None or fault is not None
            if n >= limit:  # as a batch's statements past the bound: one error for the rest
                tokens += self.procs.too_many(more=False)
                break
            n += 1
            try:
                sql.meter.charge(CALL_STEPS + PARAM_STEPS * len(call.params))
            except SqlError:
                tokens += self.procs.spent()
                fault = None
                break
            answer = self.procs.run(call, now, more)
            if sql.meter.exhausted:  # severity 17: the rest of the request is not run
                tokens += final(answer, self.tds)
                fault = None
                break
            tokens += answer
        out += self._effects(sql)
        if fault is not None:  # the calls before it were answered; then its error
            return out + self._rpc_fault(fault, payload, bytes(tokens))
        out.append(self._reply(bytes(tokens)))
        return out

    def _rpc_fault(self, err: RpcError, payload: bytes, before: bytes) -> list[Action]:
        """A request SQL Server cannot decode: its error, after the calls already answered."""
        self.errors += 1
        out: list[Action] = [Emit("protocol.error", {"detail": f"RPC: {err.text}",
                                                     "data": payload[:512]})]
        if self.errors >= self.s.max_protocol_errors:
            return out + self._bad("RPC", payload)
        tokens = (before + T.error(err.number, err.state, err.cls, err.text,
                                   self.s.product.server, tds=self.tds)
                  + T.done(T.DONE_ERROR, 0, 0, self.tds))
        return [*out, self._reply(tokens)]
