"""The HTTP/1.x connection machine: framing, limits, keep-alive and pipelining, capture.

States: IDLE (between requests), HEAD (part of a head received), BODY (reading
a request body), DONE (answered with close, or timed out). Every request is
answered in order in the same call that completed it, so pipelined requests
need no queue. Answers come from the persona's server profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from muscipula.machine import (
    Action,
    BaseMachine,
    CaptureData,
    CaptureEnd,
    Close,
    Emit,
    Peer,
    Send,
    Wake,
)
from muscipula.protocols.http import exploits, forms
from muscipula.protocols.http.answers import Answer, AnswerCache
from muscipula.protocols.http.config import HttpConfig
from muscipula.protocols.http.content import LureBody, Site, find_lure, normalise
from muscipula.protocols.http.parser import (
    MessageParser,
    ParseError,
    check_version,
    split_request_line,
)
from muscipula.protocols.http.profile import Profile
from muscipula.protocols.http.request import Context, Reply, Request

IDLE, HEAD, BODY, DONE = 0, 1, 2, 3
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Limits:
    request_line: int
    header_line: int
    header_bytes: int
    headers: int
    body_size: int
    requests: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    body_keep: int
    body_log: int
    header_log: int
    files: int


@dataclass(frozen=True, slots=True)
class HttpService:
    """Everything machines share for one service: built once at start."""

    config: HttpConfig
    profile: Profile
    site: Site
    lures: list[LureBody]
    limits: Limits
    #: one answer cache per (scheme, local port): answers name both in redirects
    caches: dict[tuple[str, int], AnswerCache] = field(default_factory=dict)

    def cache(self, scheme: str, port: int) -> AnswerCache:
        cache = self.caches.get((scheme, port))
        if cache is None:
            cfg = self.config
            cache = self.caches[(scheme, port)] = AnswerCache(
                cfg.answer_cache_entries, cfg.answer_cache_max_head, cfg.answer_cache_max_reply)
        return cache

    @classmethod
    def make(cls, cfg: HttpConfig, profile: Profile, site: Site,
             lures: list[LureBody]) -> HttpService:
        d = profile.limits
        limits = Limits(
            request_line=cfg.max_request_line or d.request_line,
            header_line=cfg.max_header_line or d.header_line,
            header_bytes=cfg.max_header_bytes or d.header_bytes,
            headers=cfg.max_headers,
            body_size=cfg.max_body_size or d.body_size,
            requests=cfg.max_requests_per_connection,
            header_timeout=cfg.header_timeout or d.header_timeout,
            body_timeout=cfg.body_timeout or d.body_timeout,
            keepalive_timeout=cfg.keepalive_timeout or d.keepalive_timeout,
            body_keep=cfg.max_body_keep, body_log=cfg.max_body_log,
            header_log=cfg.max_header_log, files=cfg.max_files,
        )
        return cls(cfg, profile, site, lures, limits)


class HttpMachine(BaseMachine):
    protocol = "httpd"
    __slots__ = ("answers", "buf", "count", "deadline", "head_started", "left", "msg", "peer",
                 "req", "scan_from", "scheme", "state", "svc", "wake_at")

    def __init__(self, svc: HttpService, peer: Peer) -> None:
        self.svc = svc
        self.peer = peer
        self.scheme = "https" if peer.transport == "tls" else "http"
        self.answers = svc.cache(self.scheme, peer.local_port)
        self.buf = bytearray()
        self.state = IDLE
        self.scan_from = 0
        self.count = 0
        self.req: Request | None = None
        self.msg: MessageParser | None = None
        self.left = 0
        self.deadline = 0.0
        self.head_started = 0.0
        self.wake_at: float | None = None

    # ------------------------------------------------------------ contract

    def start(self, now: float) -> list[Action]:
        self.deadline = now + self.svc.limits.header_timeout
        self.wake_at = self.deadline
        return [Wake(self.deadline)]

    def receive(self, data: bytes, now: float) -> list[Action]:
        if self.state == IDLE and not self.buf:
            # the common case, one whole request per read, seen before this second
            answer = self._cached(data, now)
            if answer is not None:
                return self._reuse(answer, now)
        if self.state == DONE:
            return []
        out: list[Action] = []
        self.buf += data
        self._process(out, now)
        if self.state == DONE:
            self.buf.clear()
        else:
            self._arm(out, now)
        return out

    def timer(self, now: float) -> list[Action]:
        self.wake_at = None
        if self.state == DONE:
            return []
        if now + 0.001 < self.deadline:
            self.wake_at = self.deadline
            return [Wake(self.deadline)]
        out: list[Action] = []
        lim = self.svc.limits
        if self.state == BODY:
            out.append(Emit("connection.limit", {"limit": "body_timeout",
                                                 "value": lim.body_timeout}))
            if self.req is not None:
                self._record_request(self.req, 0, out)
        elif self.state == HEAD or self.count == 0:
            out.append(Emit("connection.limit", {"limit": "header_timeout",
                                                 "value": lim.header_timeout}))
        # nginx and HTTP.sys both close on these timers without an answer
        out.append(Close("timeout"))
        self._finish()
        return out

    def closed(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self.state == BODY and self.req is not None:
            self._record_request(self.req, 0, out)
        self._finish()
        return out

    def buffered(self) -> int:
        held = len(self.buf)
        if self.req is not None:
            held += len(self.req.body)
        return held

    # ------------------------------------------------------------ framing

    def _process(self, out: list[Action], now: float) -> None:
        buf = self.buf
        while self.state != DONE:
            if self.state == BODY:
                if not buf:
                    return
                self._body(out, now)
                if self.state == BODY:
                    return
                continue
            if self.state == IDLE:
                i = 0
                n = len(buf)
                while i < n and buf[i] in (13, 10):  # blank lines before a request are skipped
                    i += 1
                if i:
                    del buf[:i]
                if not buf:
                    return
                self.state = HEAD
                self.head_started = now
                self.scan_from = 0
            end = self._head_end()
            if end < 0:
                first = buf.find(b"\n")
                if first >= 0 and buf[:first].rstrip(b"\r").count(b" ") == 1:
                    end = first + 1  # HTTP/0.9: the request is one line, no headers
                else:
                    self._partial_limits(out, now)
                    return
            head = bytes(buf[:end])
            del buf[:end]
            self.scan_from = 0
            answer = self._cached(head, now)
            if answer is not None:
                out += self._reuse(answer, now)
                continue
            self._head(head, out, now)

    def _head_end(self) -> int:
        buf = self.buf
        start = max(self.scan_from - 3, 0)
        a = buf.find(b"\n\r\n", start)
        b = buf.find(b"\n\n", start, a + 2 if a >= 0 else len(buf))
        if b >= 0 and (a < 0 or b < a):
            return b + 2
        if a >= 0:
            return a + 3
        self.scan_from = len(buf)
        return -1

    def _partial_limits(self, out: list[Action], now: float) -> None:
        lim = self.svc.limits
        buf = self.buf
        n = len(buf)
        space = buf.find(b" ", 0, 34)
        verb = bytes(buf[: space if space >= 0 else min(n, 33)])
        if verb and verb[-1:] != b"\r" and not self.svc.profile.valid_method(
                verb.decode("latin-1")):
            # not a request line (a TLS hello, binary): refused at once, as the parser does
            self._reject("bad_method", None, out, now, bytes(buf[:512]))
            return
        first = buf.find(b"\n")
        if first < 0:
            if n > lim.request_line:
                self._reject("uri_too_long", None, out, now, bytes(buf[:512]))
            return
        if first > lim.request_line:
            self._reject("uri_too_long", None, out, now, bytes(buf[:512]))
        elif n > lim.header_bytes or n - buf.rfind(b"\n") - 1 > lim.header_line:
            self._reject("header_too_large", None, out, now, bytes(buf[:512]))

    def _head(self, head: bytes, out: list[Action], now: float) -> None:
        lim = self.svc.limits
        profile = self.svc.profile
        self.count += 1
        nl = head.find(b"\n")
        line = head[:nl].rstrip(b"\r")
        try:
            method_b, target_b, version_b = split_request_line(line)
        except ParseError as exc:
            self._reject(exc.kind, None, out, now, line[:512])
            return
        if len(line) > lim.request_line:
            self._reject("uri_too_long", None, out, now, line[:512])
            return
        method = method_b.decode("latin-1")
        target = target_b.decode("latin-1")
        if version_b is None:
            self._http09(method, target, out, now)
            return
        req = Request(method, target, "1.1", raw_head=head)
        try:
            req.version = check_version(version_b)
        except ParseError as exc:
            self._reject(exc.kind, req, out, now, line[:512])
            return
        if not profile.valid_method(method):
            self._reject("bad_method", req, out, now, line[:512])
            return
        if (len(head) > lim.header_bytes or head.count(b"\n") - 2 > lim.headers
                or (len(head) > lim.header_line  # no line is longer than the whole head
                    and any(len(h) > lim.header_line for h in head.split(b"\n")))):
            self._reject("header_too_large", req, out, now, line[:512])
            return
        if method == "CONNECT":  # never tunnelled: answered as the server refuses it
            self._reject("connect", req, out, now, line[:512])
            return
        msg = self.msg
        if msg is None:
            msg = self.msg = MessageParser()
        msg.reset()
        try:
            req.keep_alive = msg.feed_head(head, method_b)
        except ParseError as exc:
            self.msg = None
            req.headers = _pairs(msg.headers)
            self._reject(exc.kind, req, out, now, exc.detail)
            return
        req.headers = _pairs(msg.headers)
        if req.version == "1.1" and req.header("host") is None:
            self._reject("no_host", req, out, now, "no Host header")
            return
        req.chunked, req.length = msg.chunked, msg.length
        if msg.complete:
            if method in profile.length_required and req.version == "1.1":
                self._reject("length_required", req, out, now, "no body length")
                return
            first = len(out)
            self._answer(req, out, now)
            self._keep_answer(head, req, out[first:], now)
            return
        if req.length is not None and req.length > lim.body_size:
            self._reject("body_too_large", req, out, now, f"Content-Length {req.length}")
            return
        expect = req.header("expect")
        if expect and expect.lower() == "100-continue" and req.version == "1.1":
            out.append(Send(CONTINUE))
        self.req = req
        self.left = req.length or 0
        self.state = BODY

    def _body(self, out: list[Action], now: float) -> None:
        msg, req, buf = self.msg, self.req, self.buf
        assert msg is not None and req is not None
        try:
            if req.chunked:
                pos, n = 0, len(buf)
                while pos < n and not msg.complete:
                    lf = buf.find(b"\n", pos)
                    stop = lf + 1 if lf >= 0 else n
                    if not self._take(msg.feed_body(bytes(buf[pos:stop])), req, out, now):
                        return
                    pos = stop
                del buf[:pos]
            else:
                take = min(self.left, len(buf))
                piece = bytes(buf[:take])
                del buf[:take]
                self.left -= take
                if not self._take(msg.feed_body(piece), req, out, now):
                    return
        except ParseError as exc:
            self.msg = None
            self._reject(exc.kind, req, out, now, exc.detail)
            return
        if msg.complete:
            self.req = None
            self.state = IDLE
            self._answer(req, out, now)

    def _take(self, parts: list[bytes], req: Request, out: list[Action], now: float) -> bool:
        lim = self.svc.limits
        stream = f"http-{self.count}"
        for part in parts:
            req.body_size += len(part)
            if req.body_size > lim.body_size:
                self._reject("body_too_large", req, out, now, f"body over {lim.body_size}")
                return False
            out.append(CaptureData(stream, part))
            room = lim.body_keep - len(req.body)
            if room > 0:
                req.body += part[:room]
        return True

    # ------------------------------------------------------------ answers

    def _keep_answer(self, head: bytes, req: Request, actions: list[Action],
                     now: float) -> None:
        """Keep a bodiless request's answer for its repeats if it is only a reply, its
        record and maybe a close: anything else (exploits, logins) is never reused."""
        n = len(actions)
        if n < 2 or n > 3 or type(actions[0]) is not Send or type(actions[1]) is not Emit:
            return
        if actions[1].name != "http.request" or (n == 3 and type(actions[2]) is not Close):
            return
        close = n == 3
        # a keep-alive request closed only because its budget ran out is not reusable
        if close and req.keep_alive:
            return
        budgeted = not close
        self.answers.put(head, Answer(int(now), actions, close, budgeted),
                         len(actions[0].data))

    def _cached(self, head: bytes, now: float) -> Answer | None:
        """The answer kept for `head` this second, if this request may reuse it."""
        answer = self.answers.get(head, int(now))
        if answer is None or (answer.budgeted and self.count + 1 >= self.svc.limits.requests):
            return None
        return answer

    def _reuse(self, answer: Answer, now: float) -> list[Action]:
        """The kept actions, in a list of this call's own (callers may extend it)."""
        self.count += 1
        if answer.close:
            self._finish()
            return list(answer.actions)
        self.state = IDLE
        self.deadline = now + self.svc.limits.keepalive_timeout
        if self.wake_at is None or self.deadline < self.wake_at:
            self.wake_at = self.deadline
            return [*answer.actions, Wake(self.deadline)]
        return list(answer.actions)

    def _context(self, now: float, keep: bool) -> Context:
        return Context(now, keep, self.scheme, self.peer.local_port)

    def _answer(self, req: Request, out: list[Action], now: float) -> None:
        svc = self.svc
        keep = req.keep_alive and self.count < svc.limits.requests
        path = normalise(req.target, svc.profile.windows)
        lure = find_lure(svc.lures, path, svc.profile.windows) if path is not None else None
        reply = svc.profile.serve(req, self._context(now, keep), svc.site, lure, path)
        self._send(reply, req, out, path, lure)

    def _send(self, reply: Reply, req: Request | None, out: list[Action], path: str | None,
              lure: LureBody | None = None) -> None:
        out.append(Send(reply.data))
        if req is not None:
            self._record_request(req, reply.status, out, path, lure)
        if reply.close:
            out.append(Close("answered"))
            self._finish()
        else:
            self.state = IDLE

    def _reject(self, kind: str, req: Request | None, out: list[Action], now: float,
                detail: object) -> None:
        out.append(Emit("protocol.error", {"detail": f"http {kind}", "data": detail}))
        reply = self.svc.profile.reject(kind, req, self._context(now, False))
        if req is None:
            req = Request("", "", "", raw_head=b"")
            raw = detail if isinstance(detail, bytes) else str(detail).encode()
            req.target = raw.decode("latin-1")
        self._send(reply, req, out, None)

    def _http09(self, method: str, target: str, out: list[Action], now: float) -> None:
        body = self.svc.profile.http09(self.svc.site, target) if method == "GET" else None
        req = Request(method, target, "0.9")
        if body is None:
            self._reject("bad_request", req, out, now, "HTTP/0.9")
            return
        self._send(Reply(200, body, close=True), req, out, None)

    def _finish(self) -> None:
        self.state = DONE
        self.req = None
        self.msg = None
        self.buf.clear()

    def _arm(self, out: list[Action], now: float) -> None:
        lim = self.svc.limits
        if self.state == BODY:
            self.deadline = now + lim.body_timeout
        elif self.state == HEAD:
            self.deadline = self.head_started + lim.header_timeout
        elif self.count:
            self.deadline = now + lim.keepalive_timeout
        if self.wake_at is None or self.deadline < self.wake_at:
            self.wake_at = self.deadline
            out.append(Wake(self.deadline))

    # ------------------------------------------------------------ recording

    def _url(self, req: Request, path: str | None) -> str:
        host = req.host or self.peer.local_host
        return f"{self.scheme}://{host}{quote(path, safe='/') if path else req.target}"

    def _record_request(self, req: Request, status: int, out: list[Action],
                        path: str | None = None, lure: LureBody | None = None) -> None:
        lim = self.svc.limits
        body = bytes(req.body)
        if req.body_size:
            url = self._url(req, path)
            out.append(CaptureEnd(f"http-{self.count}", url, complete=status != 0))
            ctype = req.header("content-type") or ""
            if status and ctype.lower().startswith("multipart/") and req.body_size == len(body):
                files = [p for p in forms.multipart(body, ctype) if p.filename is not None]
                for i, part in enumerate(files[: lim.files]):
                    stream = f"http-{self.count}-file{i}"
                    out.append(CaptureData(stream, part.data))
                    out.append(CaptureEnd(stream, f"{url}#{quote(part.filename or '')}"))
        if lure is not None and body:
            pairs = forms.fields(body, req.header("content-type") or "")
            cred = forms.credentials(pairs, lure.lure.username_fields, lure.lure.password_fields)
            if cred is not None:
                out.append(Emit("login", {"username": cred[0], "password": cred[1],
                                          "success": False, "method": "http-form",
                                          "extra": {"path": path}}))
        auth = req.header("authorization")
        if auth and auth[:6].lower() == "basic ":
            import base64
            import binascii

            try:
                user, _, pw = base64.b64decode(auth[6:].strip()).decode("utf-8", "replace") \
                    .partition(":")
                out.append(Emit("login", {"username": user, "password": pw, "success": False,
                                          "method": "http-basic", "extra": {"path": path}}))
            except (binascii.Error, ValueError):
                pass
        offered: list[str] = []
        for f in exploits.scan(req.target, req.headers, body):
            out.append(Emit("http.exploit", {"kind": f.kind, "where": f.where,
                                             "detail": f.detail, "urls": f.urls}))
            for url in f.urls:
                if url not in offered:
                    offered.append(url)
                    out.append(Emit("download.offer", {"url": url, "source": "http"}))
        hl = lim.header_log
        out.append(Emit("http.request", {
            "method": req.method, "target": req.target, "version": req.version,
            "host": req.host, "user_agent": req.header("user-agent") or "",
            "headers": [(k, v[:hl]) for k, v in req.headers], "status": status,
            "body_size": req.body_size, "body": body[: lim.body_log],
        }))

    def plain_on_tls(self, data: bytes, now: float) -> list[Action]:
        """Plain HTTP on the TLS port (BaseMachine.plain_on_tls): nginx reads the request
        head and answers its 497 page (a 400) and closes; HTTP.sys sends nothing."""
        if self.state == DONE:
            return []
        out: list[Action] = []
        if not self.buf and not self.count:  # the first chunk: the incident, once
            out.append(Emit("protocol.error", {"detail": "http plain request on TLS port",
                                               "data": data[:512]}))
        to_https = getattr(self.svc.profile, "to_https", None)
        if to_https is None:
            out.append(Close("not tls"))
            self._finish()
            return out
        self.count = 1  # marks the first chunk as seen; bounded by the header limits below
        self.buf += data
        end = self._head_end()
        line_end = self.buf.find(b"\n")
        http09 = end < 0 and line_end >= 0 and self.buf[:line_end].rstrip(b"\r").count(b" ") == 1
        if end < 0 and not http09:
            self._partial_limits(out, now)  # refuses what is too long or not a request line
            return out
        head = bytes(self.buf[: end if end >= 0 else line_end + 1])
        line = head[: head.find(b"\n")].rstrip(b"\r")
        try:
            method_b, target_b, version_b = split_request_line(line)
            req = Request(method_b.decode("latin-1"), target_b.decode("latin-1"), "0.9",
                          raw_head=head)
            if version_b is not None:
                req.version = check_version(version_b)
                msg = MessageParser()
                msg.feed_head(head, method_b)
                req.headers = _pairs(msg.headers)
        except ParseError as exc:
            self._reject(exc.kind, None, out, now, line[:512])
            return out
        if not self.svc.profile.valid_method(req.method) or (
                version_b is None and req.method != "GET"):
            self._reject("bad_method", None, out, now, line[:512])
            return out
        reply = to_https(req, self._context(now, False))
        if version_b is None:  # an HTTP/0.9 answer is the page alone
            reply = Reply(reply.status, reply.data.partition(b"\r\n\r\n")[2], close=True)
        self._send(reply, req, out, None)
        return out


def _pairs(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
