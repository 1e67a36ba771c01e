"""SIP (5060 udp/tcp, 5061 tls): the persona's PBX, Asterisk (chan_pjsip) or 3CX.

Answers OPTIONS, REGISTER with a digest challenge, INVITE with a ringing call and a
configured outcome, ACK, CANCEL and BYE; records every request in the reference system's sip_*
tables and every digest answer as a login with its hashcat line. An answered call has a real
RTP port (media.py): its packets, payload types and DTMF digits become a `sip.rtp` row, and
with `rtp.record` its G.711 audio a stored .au file.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from muscipula.config import Port, PositiveInt, Seconds, ServiceConfig, Strict
from muscipula.machine import Peer
from muscipula.protocols.sip import records as _records  # noqa: F401 - registers writers
from muscipula.protocols.sip.digest import Nonces
from muscipula.protocols.sip.machine import Setup, SipSession
from muscipula.protocols.sip.media import MediaSetup, PortBudget
from muscipula.protocols.sip.policy import LoginPolicy
from muscipula.protocols.sip.products import for_agent
from muscipula.services import ServiceContext, ServiceSpec


class SipLogin(Strict):
    #: list: an extension's configured password; refuse_first: any after N tries; never
    mode: Literal["list", "refuse_first", "never"] = "list"
    #: extension -> password
    accounts: dict[str, str] = {}
    refuse_first: Annotated[int, Field(ge=0, le=1000)] = 3


class SipInvite(Strict):
    #: challenge an INVITE before it rings (401 Asterisk, 407 3CX)
    auth: bool = True
    #: how a ringing call ends: busy 486, unavailable 480, not_found 404, answer 200 (with
    #: an RTP port, see `rtp`)
    final: Literal["busy", "unavailable", "not_found", "answer"] = "busy"
    ring_delay: Annotated[float, Field(ge=0, le=60)] = 0.5
    answer_delay: Annotated[float, Field(ge=0, le=120)] = 2.0


class SipRtp(Strict):
    #: media ports of answered calls, inclusive; an even one is used (Asterisk's rtp.conf)
    ports: tuple[Port, Port] = (10000, 20000)
    #: keep the caller's G.711 audio as a .au file in the store
    record: bool = False
    #: per stream: past either, the stream ends and its port is closed
    max_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = 4 * 1024 * 1024
    max_packets: Annotated[int, Field(ge=1, le=10_000_000)] = 30_000
    #: seconds without a packet from the caller before the stream ends
    idle_timeout: Seconds = 30.0
    #: calls of one peer with a media port at once; past it, calls are refused with 488
    max_calls_with_media: Annotated[int, Field(ge=0, le=1024)] = 4
    #: media ports of all sessions together (one address can open many UDP sessions)
    max_media_ports: Annotated[int, Field(ge=0, le=65536)] = 256
    #: seconds of silence the PBX sends back once the caller's media arrives (0: none)
    send_seconds: Annotated[float, Field(ge=0, le=60)] = 3.0

    @model_validator(mode="after")
    def _even_port(self) -> SipRtp:
        low, high = self.ports
        if low > high or (low == high and low & 1):
            raise ValueError("ports must be [low, high] holding an even port")
        return self


class SipConfig(ServiceConfig):
    udp_ports: list[Port] = [5060]
    tcp_ports: list[Port] = [5060]
    #: extensions that exist besides those in login.accounts; None: a per-install block
    extensions: list[str] | None = None
    #: REGISTER/INVITE to an extension that does not exist: 404, 403, or challenged as
    #: if it existed (which hides extensions from enumeration)
    unknown_extension: Literal["not_found", "forbidden", "challenge"] = "not_found"
    login: SipLogin = SipLogin()
    invite: SipInvite = SipInvite()
    rtp: SipRtp = SipRtp()
    #: realm in challenges; None: the product's default
    realm: str | None = None
    #: seconds a nonce is accepted after it was made
    nonce_lifetime: Seconds = 32.0
    #: largest message (header block and body); larger ones get 513
    max_message: Annotated[int, Field(ge=512, le=1024 * 1024)] = 16384
    max_headers: Annotated[int, Field(ge=8, le=1000)] = 100
    #: calls one peer may have ringing or up at once
    max_calls: Annotated[int, Field(ge=1, le=1024)] = 16
    #: the longest registration granted
    max_expires: PositiveInt = 3600


def _extensions(ctx: ServiceContext) -> set[str]:
    cfg: SipConfig = ctx.config
    if cfg.extensions is not None:
        return set(cfg.extensions)
    base = (100, 200, 1000, 2000)[ctx.persona.secrets.number("sip.extension_plan", 0, 3)]
    count = ctx.persona.secrets.number("sip.extension_count", 4, 12)
    return {str(base + i) for i in range(count)}


def build(ctx: ServiceContext):
    cfg: SipConfig = ctx.config
    product = for_agent(ctx.persona.product("sip").get("user_agent", "Asterisk PBX 20.6.0"))
    secret = ctx.persona.secrets.token("sip.nonce_secret", 32)
    setup = Setup(
        product=product,
        policy=LoginPolicy(cfg.login.mode, dict(cfg.login.accounts), _extensions(ctx),
                           cfg.login.refuse_first),
        nonces=Nonces(secret, product.nonce_style, cfg.nonce_lifetime),
        secret=ctx.persona.secrets.token("sip.tag_secret", 32),
        realm=cfg.realm or product.realm,
        unknown_extension=cfg.unknown_extension,
        invite_auth=cfg.invite.auth,
        invite_final=cfg.invite.final,
        ring_delay=cfg.invite.ring_delay,
        answer_delay=cfg.invite.answer_delay,
        max_message=cfg.max_message,
        max_headers=cfg.max_headers,
        max_calls=cfg.max_calls,
        expires=cfg.max_expires,
        media=MediaSetup(cfg.rtp.ports, cfg.rtp.record, cfg.rtp.max_bytes, cfg.rtp.max_packets,
                         cfg.rtp.idle_timeout, cfg.rtp.max_calls_with_media,
                         cfg.rtp.send_seconds, PortBudget(cfg.rtp.max_media_ports)),
    )

    def factory(peer: Peer) -> SipSession:
        return SipSession(setup, peer)

    return factory


def _max_buffer(cfg: SipConfig) -> int:
    # the TCP buffer, plus the bodies of the calls kept for their final answer
    return cfg.max_message + 4 + cfg.max_calls * cfg.max_message


FUZZ_SEEDS = (
    b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/UDP nm;branch=foo;rport\r\n"
    b"From: <sip:nm@nm>;tag=root\r\nTo: <sip:nm2@nm2>\r\nCall-ID: 50000\r\nCSeq: 42 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\nContact: <sip:nm@nm>\r\n"
    b"Accept: application/sdp\r\n\r\n",
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n"
    b"f: \"100\" <sip:100@127.0.0.1>;tag=abc\r\nt: \"100\" <sip:100@127.0.0.1>\r\ni: 1234\r\n"
    b"CSeq: 2 REGISTER\r\nm: <sip:100@10.0.0.1:5060>\r\nExpires: 3600\r\n"
    b"Authorization: Digest username=\"100\",realm=\"asterisk\",nonce=\"1/x\","
    b"uri=\"sip:127.0.0.1\",response=\"" + b"e" * 32 + b"\",algorithm=MD5,"
    b"qop=auth,cnonce=\"c\",nc=00000001\r\nl: 0\r\n\r\n",
    b"INVITE sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK2\n"
    b"From: sip:200@10.0.0.1;tag=1\nTo: sip:100@127.0.0.1\nCall-ID: c1@10.0.0.1\n"
    b"CSeq: 1 INVITE\nContact: sip:200@10.0.0.1\nContent-Type: application/sdp\n"
    b"Content-Length: 91\n\nv=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
    b"m=audio 6000 RTP/AVP 0 8\n\n",
    b"CANCEL sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2\r\n"
    b"From: <sip:200@10.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: c1@10.0.0.1\r\n"
    b"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
    b"BYE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK3\r\n"
    b"From: <sip:200@10.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>;tag=2\r\n"
    b"Call-ID: c1@10.0.0.1\r\nCSeq: 2 BYE\r\n\r\n",
)

SERVICE = ServiceSpec("sip", "SipSession", SipConfig, build,
                      "SIP PBX: OPTIONS, REGISTER digest, INVITE, records sip_* tables",
                      max_buffer=_max_buffer, fuzz_seeds=FUZZ_SEEDS)
