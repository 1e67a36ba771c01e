"""Parsing SIP requests (RFC 3261 §7, §20, §25) the tolerant way a PBX's stack does.

Accepts LF-only line ends, folded header lines and compact header names; every
failure is a `SipError` carrying the status and reason the product answers with,
never an exception out of the machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: RFC 3261 §7.3.3 and later RFCs' one-letter header names
COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "u": "allow-events", "r": "refer-to", "b": "referred-by",
    "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity", "n": "identity-info",
}

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_REQUEST_LINE = re.compile(r"^(\S+) (\S+) (SIP/\d+\.\d+)$")


def digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²', which int() refuses."""
    return text.isascii() and text.isdigit()


class SipError(Exception):
    """Input the product refuses: `status` and `reason` are its answer (0: silence)."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Request:
    method: str
    uri: str
    version: str
    headers: list[tuple[str, str]]  # (lower-case full name, value) in arrival order
    body: bytes = b""
    #: the header block could not be fully parsed; set when answering 400 needs the rest
    raw_names: list[str] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def get(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def vias(self) -> list[str]:
        """Every Via value, a comma-separated header split into its entries."""
        out: list[str] = []
        for value in self.all("via"):
            out += [v.strip() for v in split_commas(value) if v.strip()]
        return out


def split_commas(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def head_end(data: bytes) -> tuple[int, int] | None:
    """Where the header block ends and the body begins (CRLFCRLF or LF LF), if it does."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    ends = [(crlf, crlf + 4)] if crlf >= 0 else []
    if lf >= 0:
        ends.append((lf, lf + 2))
    if not ends:
        return None
    return min(ends)


def parse_head(head: bytes, max_headers: int) -> Request:
    """The request line and headers of one message (body not included)."""
    text = head.decode("utf-8", "surrogateescape")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise SipError(0, "", "empty message")
    first = lines[0].strip()
    if first.startswith("SIP/"):
        raise SipError(0, "", "a response where a request was expected")
    m = _REQUEST_LINE.match(re.sub(r"[ \t]+", " ", first))
    if m is None or not _TOKEN.match(m.group(1)):
        raise SipError(400, "Bad Request", "unparsable request line")
    method, uri, version = m.groups()
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            if not headers:
                raise SipError(400, "Bad Request", "folded line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or not _TOKEN.match(name):
            raise SipError(400, "Bad Request", "unparsable header line")
        if len(headers) >= max_headers:
            raise SipError(400, "Bad Request", "too many headers")
        low = name.lower()
        headers.append((COMPACT.get(low, low), value.strip()))
    req = Request(method, uri, version, headers)
    if version != "SIP/2.0":
        raise SipError(505, "Version Not Supported", f"version {version}")
    return req


def content_length(req: Request) -> int | None:
    """The declared body size; None when absent; SipError when unreadable."""
    values = req.all("content-length")
    if not values:
        return None
    value = values[0].strip()
    if not digits(value) or len(value) > 9 or any(v.strip() != value for v in values):
        raise SipError(400, "Bad Request", f"bad Content-Length {value[:40]!r}")
    return int(value)


# ------------------------------------------------------------ addresses


@dataclass(frozen=True, slots=True)
class Uri:
    scheme: str = ""
    user: str = ""
    password: str = ""
    host: str = ""
    port: int | None = None


@dataclass(frozen=True, slots=True)
class NameAddr:
    display: str
    uri_text: str
    uri: Uri
    params: str  # header parameters after the URI, with their leading ';'

    def tag(self) -> str | None:
        for p in self.params.split(";"):
            k, _, v = p.partition("=")
            if k.strip().lower() == "tag":
                return v.strip()
        return None


def parse_uri(text: str) -> Uri:
    """sip:user:password@host:port;params (best effort; never raises)."""
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep:
        return Uri(host=text[:256])
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    user = password = ""
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, _, password = userinfo.partition(":")
    host, port = rest, None
    if rest.startswith("["):
        close = rest.find("]")
        host = rest[: close + 1] if close > 0 else rest
        tail = rest[close + 1:] if close > 0 else ""
        if tail.startswith(":") and digits(tail[1:]):
            port = int(tail[1:][:5])
    elif rest.count(":") == 1:
        host, _, p = rest.partition(":")
        if digits(p) and len(p) <= 5:
            port = int(p)
    return Uri(scheme.lower()[:16], user[:256], password[:256], host[:256], port)


def parse_name_addr(value: str) -> NameAddr:
    """`"Name" <sip:u@h>;tag=x` or `sip:u@h;tag=x` (RFC 3261 §20.10)."""
    value = value.strip()
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            gt = len(value)
        display = value[:lt].strip().strip('"')
        uri_text = value[lt + 1: gt]
        params = value[gt + 1:].strip()
    else:
        display = ""
        uri_text, sep, rest = value.partition(";")
        params = sep + rest
    return NameAddr(display[:256], uri_text, parse_uri(uri_text), params)


@dataclass(frozen=True, slots=True)
class Via:
    protocol: str
    address: str
    port: int | None
    params: list[tuple[str, str | None]]

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v if v is not None else ""
        return None


def parse_via(value: str) -> Via | None:
    """`SIP/2.0/UDP host:port;branch=...;rport` or None when it is not one."""
    sent, _, rest = value.strip().partition(" ")
    parts = [p.strip() for p in sent.split("/")]
    if len(parts) != 3 or parts[0].upper() != "SIP":
        return None
    by, *params = rest.strip().split(";")
    uri = parse_uri("x:" + by.strip())
    plist: list[tuple[str, str | None]] = []
    for p in params:
        k, eq, v = p.partition("=")
        plist.append((k.strip().lower(), v.strip() if eq else None))
    return Via(parts[2].upper(), uri.host, uri.port, plist)


def cseq(req: Request) -> tuple[int, str] | None:
    value = req.get("cseq")
    if value is None:
        return None
    num, _, method = value.strip().partition(" ")
    if not digits(num) or len(num) > 10 or not method.strip():
        return None
    return int(num), method.strip()
