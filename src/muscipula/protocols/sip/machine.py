"""SipSession: one UDP peer's datagrams or one TCP connection, answered as the persona's PBX.

UDP: each datagram is one message. TCP/TLS: messages are framed by
Content-Length in a bounded buffer. Requests are answered statelessly except
for calls: an INVITE that rings is kept (bounded) so that CANCEL, ACK and BYE
find it, and its final answer is sent by a timer. An answered call gets a media
port first (media.py): the 200 names it, or the call is refused with 488 as
Asterisk refuses a call whose media it cannot set up.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from muscipula.capture.urls import find_offers
from muscipula.machine import Action, BaseMachine, ChildEvent, Close, Emit, Peer, Send, Wake
from muscipula.protocols.sip import digest, sdp
from muscipula.protocols.sip.media import Media, MediaSetup
from muscipula.protocols.sip.message import (
    Request,
    SipError,
    content_length,
    cseq,
    digits,
    head_end,
    parse_head,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_commas,
)
from muscipula.protocols.sip.policy import LoginPolicy
from muscipula.protocols.sip.products import REASONS, Product
from muscipula.protocols.sip.rtp import G711

#: dionaea's sip_commands.sip_command_allow bits
ALLOW_BITS = {
    "UNKNOWN": 1, "ACK": 2, "BYE": 4, "CANCEL": 8, "INFO": 16, "INVITE": 32, "MESSAGE": 64,
    "NOTIFY": 128, "OPTIONS": 256, "PRACK": 512, "PUBLISH": 1024, "REFER": 2048,
    "REGISTER": 4096, "SUBSCRIBE": 8192, "UPDATE": 16384,
}
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_FINALS = {"busy": 486, "unavailable": 480, "not_found": 404, "answer": 200}
#: seconds the driver may take to bind a media port before the call is refused
_OPEN_TIMEOUT = 5.0
#: the answer's telephone-event type when the offer named none (a late offer)
_EVENT_PT = 101


@dataclass(frozen=True)
class Setup:
    """What every session of the service shares, made once from its config."""

    product: Product
    policy: LoginPolicy
    nonces: digest.Nonces
    secret: bytes
    realm: str
    unknown_extension: str  # not_found, forbidden, challenge
    invite_auth: bool
    invite_final: str
    ring_delay: float
    answer_delay: float
    max_message: int
    max_headers: int
    max_calls: int
    expires: int
    media: MediaSetup | None = None


@dataclass(slots=True)
class _Call:
    req: Request
    due: float
    answered: bool = False
    #: the caller's audio offer (None: the INVITE had no SDP, the 200 makes the offer)
    offer: sdp.AudioOffer | None = None
    #: the media channel's tag once one is asked for, and the SDP the 200 carried
    tag: str = ""
    answer: bytes = b""


class SipSession(BaseMachine):
    protocol = "SipSession"

    def __init__(self, setup: Setup, peer: Peer) -> None:
        self.s = setup
        self.peer = peer
        self.udp = peer.transport == "udp"
        self.buf = bytearray()
        self.calls: dict[str, _Call] = {}  # call-id -> ringing or answered call
        self.closing = False
        self.media = Media(setup.media, setup.secret, peer.remote_host) \
            if setup.media is not None else None

    def buffered(self) -> int:
        return len(self.buf) + sum(len(c.req.body) for c in self.calls.values())

    # ------------------------------------------------------------- framing

    def receive(self, data: bytes, now: float) -> list[Action]:
        if self.closing:
            return []
        if self.udp:
            if not data.strip(b"\r\n\x00 "):
                return []  # keep-alive
            return self._datagram(data, now) + self._wake()
        self.buf += data
        out: list[Action] = []
        while self.buf and not self.closing:
            stripped = self.buf.lstrip(b"\r\n")
            if len(stripped) != len(self.buf):
                if bytes(self.buf[:4]) == b"\r\n\r\n":
                    out.append(Send(b"\r\n"))  # RFC 5626 keep-alive pong
                del self.buf[: len(self.buf) - len(stripped)]
                continue
            end = head_end(bytes(self.buf[: self.s.max_message + 4]))
            if end is None:
                if len(self.buf) > self.s.max_message:
                    out += self._too_big(bytes(self.buf[:512]))
                break
            try:
                req = parse_head(bytes(self.buf[: end[0]]), self.s.max_headers)
                size = content_length(req) or 0
            except SipError as err:
                out += self._refuse(err, bytes(self.buf[:512]), None)
                self.buf.clear()
                out.append(Close("unparsable message"))
                self.closing = True
                break
            if end[1] + size > self.s.max_message:
                out += self._too_big(bytes(self.buf[:512]), req)
                break
            if len(self.buf) < end[1] + size:
                break
            req.body = bytes(self.buf[end[1]: end[1] + size])
            del self.buf[: end[1] + size]
            out += self._request(req, now)
        return out + self._wake()

    def _datagram(self, data: bytes, now: float) -> list[Action]:
        if len(data) > self.s.max_message:
            return self._too_big(data[:512])
        end = head_end(data)
        head, body = (data[: end[0]], data[end[1]:]) if end else (data, b"")
        try:
            req = parse_head(head, self.s.max_headers)
            size = content_length(req)
        except SipError as err:
            return self._refuse(err, data[:512], None)
        if size is not None:
            if size > len(body):
                short = SipError(400, "Bad Request", "body shorter than Content-Length")
                return self._refuse(short, data[:512], req)
            body = body[:size]
        req.body = body
        return self._request(req, now)

    def _too_big(self, sample: bytes, req: Request | None = None) -> list[Action]:
        err = SipError(513, "Message Too Large", "message over max_message")
        out = self._refuse(err, sample, req)
        self.buf.clear()
        if not self.udp:
            self.closing = True
            out.append(Close("message too large"))
        return out

    def _refuse(self, err: SipError, sample: bytes, req: Request | None) -> list[Action]:
        out: list[Action] = [Emit("protocol.error", {"detail": err.detail, "data": sample})]
        if req is None:
            try:
                req = parse_head(sample.split(b"\r\n\r\n")[0], self.s.max_headers)
            except SipError:
                req = None
        if req is None:
            return out
        answered = err.status and req.vias() and req.method != "ACK"
        # a request refused is still a request: its row says what it was and what it got
        out.append(self._command(req, None, err.status if answered else 0))
        if answered:
            out.append(Send(self._response(req, err.status, err.reason)))
        return out

    # ------------------------------------------------------------- requests

    def _request(self, req: Request, now: float) -> list[Action]:
        missing = [h for h in _REQUIRED if req.get(h) is None]
        cs = cseq(req)
        if "via" in missing:
            return [Emit("protocol.error", {"detail": "no Via: no answer possible",
                                            "data": req.method.encode()[:64]}),
                    self._command(req, None, 0)]
        if missing or cs is None or cs[1] != req.method:
            detail = f"missing {', '.join(missing)}" if missing else "bad CSeq"
            return self._refuse(SipError(400, "Bad Request", detail), req.method.encode(), req)
        out: list[Action] = []
        body_sdp = None
        ctype = (req.get("content-type") or "").lower()
        if req.body and "application/sdp" in ctype:
            body_sdp = sdp.parse(req.body)
            if body_sdp is None and req.method in ("INVITE", "ACK", "UPDATE", "PRACK"):
                out.append(self._command(req, None, 400))
                out.append(Emit("protocol.error", {"detail": "unreadable SDP",
                                                   "data": req.body[:512]}))
                out.append(Send(self._response(req, 400, "Bad Request")))
                return out
        handler = getattr(self, f"_on_{req.method.lower()}", None) \
            if req.method in ALLOW_BITS else None
        status, replies = handler(req, now) if handler is not None else self._other(req, now)
        out.append(self._command(req, body_sdp, status))
        out += self._offers(req)
        out += replies
        return out

    def _command(self, req: Request, body_sdp: dict[str, Any] | None, status: int) -> Emit:
        def addr(value: str | None) -> dict[str, Any] | None:
            if value is None:
                return None
            na = parse_name_addr(value)
            return _addr_fields(na.display, na.uri)

        vias = []
        for v in req.vias()[:16]:
            via = parse_via(v)
            if via is not None:
                vias.append({"protocol": via.protocol, "address": via.address,
                             "port": via.port})
        allow = [m.strip().upper() for m in split_commas(req.get("allow") or "") if m.strip()]
        contacts = [addr(c) for c in split_commas(req.get("contact") or "") if c.strip()][:16]
        return Emit("sip.command", {
            "method": req.method[:64], "call_id": (req.get("call-id") or "")[:256],
            "addr": _addr_fields("", parse_uri(req.uri)), "to": addr(req.get("to")),
            "contact": contacts, "from": [addr(f) for f in req.all("from")[:4]],
            "via": vias, "sdp": body_sdp, "allow": allow[:32],
            "user_agent": (req.get("user-agent") or "")[:256], "status": status,
        })

    def _offers(self, req: Request) -> list[Action]:
        if not req.body:
            return []
        text = req.body.decode("utf-8", "replace")
        return [Emit("download.offer", {"url": u, "source": "sip"}) for u in find_offers(text)]

    # ------------------------------------------------------------- methods

    def _on_options(self, req: Request, now: float) -> tuple[int, list[Action]]:
        extra = list(self.s.product.options_headers)
        if self.s.product.key == "3cx":
            extra.insert(0, ("Contact", f"<sip:{self._host()}:{self.peer.local_port}>"))
        return 200, [Send(self._response(req, 200, extra=extra))]

    def _on_register(self, req: Request, now: float) -> tuple[int, list[Action]]:
        to = parse_name_addr(req.get("to") or "")
        user = to.uri.user
        return self._authenticated(req, now, user, 401, self._registered)

    def _registered(self, req: Request, now: float) -> tuple[int, list[Action]]:
        expires = req.get("expires") or ""
        secs = int(expires) if digits(expires) and len(expires) < 9 else self.s.expires
        secs = min(secs, self.s.expires)
        extra: list[tuple[str, str]] = []
        for c in split_commas(req.get("contact") or "")[:8]:
            if c.strip() and c.strip() != "*" and secs:
                na = parse_name_addr(c)
                extra.append(("Contact", f"<{na.uri_text}>;expires={secs}"))
        extra += [("Date", formatdate(now, usegmt=True)), ("Expires", str(secs))]
        return 200, [Send(self._response(req, 200, extra=extra))]

    def _on_invite(self, req: Request, now: float) -> tuple[int, list[Action]]:
        user = parse_uri(req.uri).user
        if not self.s.policy.exists(user) and self.s.unknown_extension != "challenge":
            code = 404 if self.s.unknown_extension == "not_found" else 403
            return code, [Send(self._response(req, code))]
        if self.s.invite_auth:
            return self._authenticated(req, now, None, self.s.product.invite_challenge,
                                       self._ring)
        return self._ring(req, now)

    def _ring(self, req: Request, now: float) -> tuple[int, list[Action]]:
        call_id = req.get("call-id") or ""
        out: list[Action] = [Send(self._response(req, 100, to_tag=False))]
        known = self.calls.get(call_id)
        if known is not None and known.answered:
            # the 200 was lost, or a re-INVITE of the call that is up: the same media
            out.append(Send(self._answer(req, known.answer)))
            return 200, out
        if known is not None:  # a retransmission while it rings: it rings on
            out.append(Send(self._response(req, 180)))
            return 180, out
        offer = None
        if req.body and "application/sdp" in (req.get("content-type") or "").lower():
            offer = sdp.audio_offer(req.body)
            if offer is None or offer.codec(G711) is None:
                # nothing in the offer we can play: Asterisk refuses it before ringing
                out.append(Send(self._response(req, 488)))
                return 488, out
        if len(self.calls) >= self.s.max_calls:
            out.append(Emit("connection.limit", {"limit": "max_calls", "value": self.s.max_calls}))
            out.append(Send(self._response(req, 486)))
            return 486, out
        out.append(Send(self._response(req, 180)))
        self.calls[call_id] = _Call(req, now + self.s.ring_delay + self.s.answer_delay,
                                    offer=offer)
        return 180, out

    def timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        for call_id, call in list(self.calls.items()):
            if call.due > now:
                continue
            if call.answered:
                del self.calls[call_id]  # the caller never hung up: forget the call
                if call.tag and self.media is not None:
                    out += self.media.finish(call.tag, "call_end", now)
                continue
            code = _FINALS[self.s.invite_final]
            if code != 200:
                del self.calls[call_id]
                out.append(Send(self._response(call.req, code)))
            elif self.media is None:
                out += self._answered(call, 0, now)
            elif call.tag:  # the media port never came: refused as if it failed
                del self.calls[call_id]
                out += self.media.finish(call.tag, "failed", now)
                out.append(Send(self._response(call.req, 488)))
            elif (limit := self.media.busy()) is not None:
                del self.calls[call_id]
                out.append(Emit("connection.limit", {"limit": limit[0], "value": limit[1]}))
                out.append(Send(self._response(call.req, 488)))
            else:
                codec, event_pt = self._codecs(call)
                call.tag, listen = self.media.open(call_id, codec, event_pt, now)
                call.due = now + _OPEN_TIMEOUT
                out.append(listen)
        if self.media is not None:
            out += self.media.timer(now)
        return out + self._wake()

    def child(self, event: ChildEvent, now: float) -> list[Action]:
        if self.media is None or self.closing:
            return []
        call_id, outcome, port, out = self.media.child(event, now)
        if not outcome:
            return out + self._wake()
        call = self.calls.get(call_id)
        live = call is not None and call.tag == event.tag and not call.answered
        if outcome == "open":
            if call is None or not live:  # cancelled while the port was being opened
                return out + self.media.finish(event.tag, "cancel", now) + self._wake()
            return out + self._answered(call, port, now) + self._wake()
        if call is not None and live:
            del self.calls[call_id]
            out.append(Send(self._response(call.req, 488)))
        return out + self._wake()

    def _codecs(self, call: _Call) -> tuple[int, int]:
        """The codec and telephone-event type the answer names (our own offer: PCMU, 101)."""
        if call.offer is None:
            return 0, _EVENT_PT
        codec = call.offer.codec(G711)
        event_pt = call.offer.event_type()
        return (0 if codec is None else codec), (_EVENT_PT if event_pt is None else event_pt)

    def _answered(self, call: _Call, port: int, now: float) -> list[Action]:
        call.answered = True
        call.due = now + 3600
        call.answer = self._answer_sdp(call, port)
        return [Send(self._answer(call.req, call.answer))]

    def _answer(self, req: Request, body: bytes) -> bytes:
        host = self._media_host(req)
        host = f"[{host}]" if ":" in host else host
        return self._response(req, 200, extra=[
            ("Contact", f"<sip:{host}:{self.peer.local_port}>"),
            ("Content-Type", "application/sdp")], body=body)

    def _answer_sdp(self, call: _Call, port: int) -> bytes:
        """Asterisk's answer: the codec it picked from the offer and telephone-event if
        offered (to a late offer: its own list); the port is the media channel's."""
        req = call.req
        host = self._media_host(req)
        family = "IP6" if ":" in host else "IP4"
        sess = int.from_bytes(self._hash("sess", req.get("call-id") or "")[:4], "big")
        if not port:  # no media configured: a port in Asterisk's range all the same
            port = 10000 + sess % 5000 * 2
        codec, event_pt = self._codecs(call)
        if call.offer is None:
            formats = [0, 8, event_pt]
        else:
            formats = [codec] + ([event_pt] if call.offer.event_type() is not None else [])
        lines = [
            "v=0", f"o=- {sess} {sess + 2} IN {family} {host}",
            "s=Asterisk" if self.s.product.key == "asterisk" else "s=3CX Phone System",
            f"c=IN {family} {host}", "t=0 0",
            f"m=audio {port} RTP/AVP {' '.join(str(f) for f in formats)}",
        ]
        lines += [f"a=rtpmap:{pt} {G711[pt]}/8000" for pt in formats if pt in G711]
        if event_pt in formats:
            lines += [f"a=rtpmap:{event_pt} telephone-event/8000", f"a=fmtp:{event_pt} 0-16"]
        lines += ["a=ptime:20", "a=sendrecv"]
        return ("\r\n".join(lines) + "\r\n").encode()

    def _media_host(self, req: Request) -> str:
        """The address the SDP names: ours as the socket says, or, on a wildcard listener
        (which cannot tell), the address the caller dialled when that is an IP literal."""
        host = self._host()
        try:
            unspecified = ipaddress.ip_address(host).is_unspecified
        except ValueError:
            unspecified = False
        if not unspecified:
            return host
        dialled = (parse_uri(req.uri).host or "").strip("[]")
        try:
            return str(ipaddress.ip_address(dialled))
        except ValueError:
            return host

    def _on_ack(self, req: Request, now: float) -> tuple[int, list[Action]]:
        call = self.calls.get(req.get("call-id") or "")
        if call is not None and call.offer is None and call.tag and self.media is not None \
                and req.body and "application/sdp" in (req.get("content-type") or "").lower():
            answer = sdp.audio_offer(req.body)  # the answer to the offer our 200 made
            codec = answer.codec(G711) if answer is not None else None
            if answer is not None and codec is not None:
                self.media.set_codec(call.tag, codec, answer.event_type())
        return 0, []

    def _on_cancel(self, req: Request, now: float) -> tuple[int, list[Action]]:
        call = self.calls.get(req.get("call-id") or "")
        if call is None or call.answered:
            return 481, [Send(self._response(req, 481))]
        del self.calls[req.get("call-id") or ""]
        out: list[Action] = []
        if call.tag and self.media is not None:
            out += self.media.finish(call.tag, "cancel", now)
        return 200, [*out, Send(self._response(req, 200)), Send(self._response(call.req, 487))]

    def _on_bye(self, req: Request, now: float) -> tuple[int, list[Action]]:
        call_id = req.get("call-id") or ""
        call = self.calls.get(call_id)
        if call is None or not call.answered:
            return 481, [Send(self._response(req, 481))]
        del self.calls[call_id]
        out: list[Action] = [Send(self._response(req, 200))]
        if call.tag and self.media is not None:
            out += self.media.finish(call.tag, "bye", now)
        return 200, out

    def _other(self, req: Request, now: float) -> tuple[int, list[Action]]:
        if req.method in ALLOW_BITS and req.method != "UNKNOWN":
            if req.method in ("SUBSCRIBE", "PUBLISH", "MESSAGE", "NOTIFY", "REFER"):
                return self._authenticated(req, now, None, 401, self._no_event)
            return 481, [Send(self._response(req, 481))]
        return 501, [Send(self._response(req, 501, extra=[("Allow", self.s.product.allow)]))]

    def _no_event(self, req: Request, now: float) -> tuple[int, list[Action]]:
        code = 489 if req.method in ("SUBSCRIBE", "PUBLISH") else 403
        return code, [Send(self._response(req, code))]

    # ------------------------------------------------------------- auth

    def _authenticated(self, req: Request, now: float, user: str | None, challenge: int,
                       then: Any) -> tuple[int, list[Action]]:
        """Challenge, check credentials by policy, or go on with `then`."""
        header = "proxy-authorization" if challenge == 407 else "authorization"
        value = req.get(header) or req.get("authorization") or req.get("proxy-authorization")
        fields = digest.parse_auth(value) if value else None
        if user is not None and not self.s.policy.exists(user) \
                and self.s.unknown_extension != "challenge":
            code = 404 if self.s.unknown_extension == "not_found" else 403
            out: list[Action] = [Send(self._response(req, code))]
            if fields:
                out.insert(0, self._login(req, fields, False, now))
            return code, out
        if fields is None:
            return challenge, [Send(self._challenge(req, challenge, now))]
        name = fields.get("username", "")
        peer = self.peer.remote_host
        fresh = self.s.nonces.fresh(fields.get("nonce", ""), now, peer)
        ok = fresh and self.s.policy.decide(
            user if user is not None else name, peer,
            lambda pw: digest.matches(fields, req.method, pw))
        if user is not None and name != user and ok:
            ok = False  # credentials of another extension
        out = [self._login(req, fields, ok, now)]
        if ok:
            status, rest = then(req, now)
            return status, out + rest
        if not fresh:
            out.append(Send(self._challenge(req, challenge, now, stale=True)))
            return challenge, out
        if self.s.product.key == "3cx":
            out.append(Send(self._response(req, 403)))
            return 403, out
        out.append(Send(self._challenge(req, challenge, now)))
        return challenge, out

    def _login(self, req: Request, f: dict[str, str], ok: bool, now: float) -> Emit:
        extra = {k: f.get(k) for k in ("realm", "nonce", "uri", "response", "cnonce", "nc",
                                        "qop", "algorithm", "opaque")}
        extra["hash"] = digest.hashcat(f, req.method, self.peer.local_host,
                                       self.peer.remote_host)
        return Emit("login", {"username": f.get("username", ""), "password": None,
                              "success": ok, "method": "sip-digest", "extra": extra})

    def _challenge(self, req: Request, code: int, now: float, stale: bool = False) -> bytes:
        p = self.s.product
        nonce = self.s.nonces.make(now, self.peer.remote_host)
        name = "Proxy-Authenticate" if code == 407 else "WWW-Authenticate"
        if p.key == "asterisk":
            opaque = self._hash("opaque", nonce).hex()[:16]
            value = (f'Digest realm="{self.s.realm}",nonce="{nonce}",opaque="{opaque}",'
                     f'{"stale=true," if stale else ""}algorithm={p.algorithm},qop="auth"')
        else:
            value = (f'Digest nonce="{nonce}",algorithm={p.algorithm},realm="{self.s.realm}",'
                     f'qop="auth"{",stale=true" if stale else ""}')
        return self._response(req, code, extra=[(name, value)])

    # ------------------------------------------------------------- answers

    def _hash(self, kind: str, text: str) -> bytes:
        return hashlib.blake2b(f"{kind}\0{text}".encode("utf-8", "surrogateescape"),
                               key=self.s.secret[:64], digest_size=16).digest()

    def _host(self) -> str:
        host = self.peer.local_host
        if host.startswith("::ffff:"):
            host = host[7:]
        return host

    def _via(self, value: str) -> str:
        via = parse_via(value)
        if via is None:
            return value
        rhost, rport = self.peer.remote_host, self.peer.remote_port
        if rhost.startswith("::ffff:"):
            rhost = rhost[7:]
        sent, _, rest = value.strip().partition(" ")
        by = rest.split(";", 1)[0].strip()
        has_rport = via.param("rport") is not None
        params = [(k, v) for k, v in via.params if k not in ("rport", "received")]
        if self.s.product.rport_first:
            front: list[tuple[str, str | None]] = []
            if has_rport:
                front.append(("rport", str(rport)))
            front.append(("received", rhost))
            params = front + params
        else:
            params = []
            for k, v in via.params:
                if k == "rport":
                    params.append(("rport", str(rport)))
                elif k != "received":
                    params.append((k, v))
            params.append(("received", rhost))
        text = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)
        return f"{sent} {by}{text}"

    def _to_tag(self, req: Request) -> str:
        via = parse_via(req.vias()[0]) if req.vias() else None
        branch = via.param("branch") if via else None
        if self.s.product.key == "asterisk":
            if branch and branch.startswith("z9hG4bK"):
                return branch
            h = self._hash("tag", (req.get("call-id") or "") + (req.get("from") or "")).hex()
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        return self._hash("tag", (req.get("call-id") or "") + (req.get("from") or "")).hex()[:8]

    def _response(self, req: Request, code: int, reason: str | None = None,
                  extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                  to_tag: bool = True) -> bytes:
        p = self.s.product
        lines = [f"SIP/2.0 {code} {reason or p.reasons.get(code) or REASONS.get(code, '')}"]
        names = {"via": "Via", "call-id": "Call-ID", "from": "From", "to": "To",
                 "cseq": "CSeq"}
        for key in p.copy_order:
            if key == "via":
                lines += [f"Via: {self._via(v)}" for v in req.vias()[:16]]
            elif key == "to":
                value = req.get("to")
                if value is None:
                    continue
                if to_tag and code > 100 and parse_name_addr(value).tag() is None:
                    value = f"{value};tag={self._to_tag(req)}"
                lines.append(f"To: {value}")
            else:
                value = req.get(key)
                if value is not None:
                    lines.append(f"{names[key]}: {value}")
        lines += [f"{k}: {v}" for k, v in extra or []]
        lines.append(f"{p.agent_header}: {p.agent}")
        lines.append(f"{p.content_length}{len(body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + body

    def _wake(self) -> list[Action]:
        dues = [c.due for c in self.calls.values()]
        media = self.media.deadline() if self.media is not None else None
        if media is not None:
            dues.append(media)
        return [Wake(min(dues))] if dues else [Wake(None)]

    def closed(self, now: float) -> list[Action]:
        self.calls.clear()
        self.buf.clear()
        return self.media.finish_all("closed", now) if self.media is not None else []


def _addr_fields(display: str, uri: Any) -> dict[str, Any]:
    return {"display_name": display, "scheme": uri.scheme, "user": uri.user,
            "password": uri.password, "host": uri.host, "port": uri.port}
