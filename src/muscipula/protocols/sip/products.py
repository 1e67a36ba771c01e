"""What each PBX product says and how: header order, capabilities, realm, challenge shape.

Asterisk (chan_pjsip): responses copy Via, Call-ID, From, To, CSeq in that order,
Via gains `;rport=<port>;received=<addr>` ahead of its branch, the To tag is the
branch when it is an RFC 3261 one, capabilities come after CSeq, `Server:` last
but Content-Length, which pjsip prints with two spaces. Unauthenticated requests
are challenged with 401 `realm="asterisk"`, `algorithm=md5`, `qop="auth"`.

3CX Phone System: Via, From, To, Call-ID, CSeq, then its own headers with
`User-Agent:` (not Server), realm "3CXPhoneSystem", INVITE challenged with 407.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Product:
    key: str
    agent_header: str  # "Server" or "User-Agent"
    agent: str
    realm: str
    nonce_style: str
    algorithm: str
    #: copied request headers, in the order the product writes them
    copy_order: tuple[str, ...]
    allow: str
    #: OPTIONS 200 capability headers, in order
    options_headers: tuple[tuple[str, str], ...]
    #: status for an INVITE without credentials: 401 or 407
    invite_challenge: int
    content_length: str  # the header's prefix as printed, value follows
    rport_first: bool
    opaque: bool
    #: reason phrases where the product's differ from RFC 3261's
    reasons: dict[int, str]


_ASTERISK_ALLOW = ("OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, "
                   "UPDATE, PRACK, MESSAGE, REFER")
_3CX_ALLOW = "INVITE, ACK, CANCEL, OPTIONS, BYE, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO"


def asterisk(agent: str) -> Product:
    return Product(
        key="asterisk", agent_header="Server", agent=agent, realm="asterisk",
        nonce_style="asterisk", algorithm="md5",
        copy_order=("via", "call-id", "from", "to", "cseq"),
        allow=_ASTERISK_ALLOW,
        options_headers=(
            ("Accept", "application/sdp, application/dialog-info+xml, application/xpidf+xml, "
                       "application/cpim-pidf+xml, application/simple-message-summary, "
                       "application/pidf+xml, message/sipfrag;version=2.0"),
            ("Allow", _ASTERISK_ALLOW),
            ("Supported", "100rel, timer, replaces, norefersub, histinfo"),
            ("Accept-Encoding", "text/plain"),
            ("Accept-Language", "en"),
        ),
        invite_challenge=401, content_length="Content-Length:  ", rport_first=True,
        opaque=True, reasons={},
    )


def threecx(agent: str) -> Product:
    return Product(
        key="3cx", agent_header="User-Agent", agent=agent, realm="3CXPhoneSystem",
        nonce_style="3cx", algorithm="MD5",
        copy_order=("via", "from", "to", "call-id", "cseq"),
        allow=_3CX_ALLOW,
        options_headers=(
            ("Accept", "application/sdp"),
            ("Accept-Language", "en"),
            ("Allow", _3CX_ALLOW),
            ("Supported", "replaces"),
            ("Allow-Events", "presence, message-summary, tunnel-info"),
        ),
        invite_challenge=407, content_length="Content-Length: ", rport_first=False,
        opaque=False, reasons={},
    )


def for_agent(agent: str) -> Product:
    """The dialect that fits the persona's user agent string."""
    if agent.lower().startswith("3cx"):
        return threecx(agent)
    return asterisk(agent)


#: RFC 3261 §21 reason phrases for what this service answers
REASONS = {
    100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event", 500: "Server Internal Error", 501: "Not Implemented",
    505: "Version Not Supported", 513: "Message Too Large",
}
