"""httptools (llhttp) behind a small adapter: heads in, bodies streamed, exact message ends.

The machine frames each head itself (so the size limits are checked before any
parsing and nothing unbounded sits inside the C parser), checks the request
line the way the persona's server does, then hands the head to llhttp for the
header syntax, Content-Length/Transfer-Encoding rules and keep-alive. Bodies
go through the same parser: Content-Length bodies are fed exactly; chunked
bodies are fed up to each LF, since a chunked message can only end on one, so
the bytes of a pipelined next request are never swallowed.
"""

from __future__ import annotations

import re

import httptools

_LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH "
    b"SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY "
    b"SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split())
_BARE_LF = re.compile(rb"(?<!\r)\n")
_VERSION = re.compile(rb"^HTTP/(\d)\.(\d)$")


class ParseError(Exception):
    """`kind` is one of profile.REJECTS."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind = kind
        self.detail = detail or kind


def split_request_line(line: bytes) -> tuple[bytes, bytes, bytes | None]:
    """(method, target, version or None for HTTP/0.9); ParseError if not a request line."""
    parts = line.split(b" ")
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1], None
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ParseError("bad_request", "malformed request line")
    return parts[0], parts[1], parts[2]


def check_version(version: bytes) -> str:
    if version == b"HTTP/1.1":  # nearly every request
        return "1.1"
    m = _VERSION.match(version)
    if m is None:
        raise ParseError("bad_request", "not an HTTP version")
    major, minor = int(m.group(1)), int(m.group(2))
    if major > 1:
        raise ParseError("bad_version", f"HTTP/{major}.{minor}")
    if major == 0:
        raise ParseError("bad_request", "HTTP/0.x with a version")
    return "1.1" if minor >= 1 else "1.0"


class MessageParser:
    """One llhttp request parser; a new one per message keeps error states from leaking."""

    __slots__ = ("_p", "body_parts", "chunked", "complete", "headers", "keep", "length")

    def __init__(self) -> None:
        self._p = httptools.HttpRequestParser(self)
        self._p.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_parts: list[bytes] = []
        self.complete = False
        self.chunked = False
        self.length: int | None = None
        self.keep = True

    def reset(self) -> None:
        """Ready for the next message on the same connection (llhttp itself already is)."""
        self.headers = []
        self.body_parts = []
        self.complete = False
        self.chunked = False
        self.length = None

    # llhttp callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # llhttp clears its keep-alive flags once the message completes: read them now
        self.keep = self._p.should_keep_alive()
        for name, value in self.headers:
            low = name.lower()
            if low == b"transfer-encoding" and value.strip().lower().endswith(b"chunked"):
                self.chunked = True
            elif low == b"content-length":
                self.length = int(value.strip())

    def on_body(self, body: bytes) -> None:
        self.body_parts.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    # feeding
    def feed_head(self, head: bytes, method: bytes) -> bool:
        """Parse a complete head; returns whether the connection may be kept alive."""
        if method not in _LLHTTP_METHODS:
            # llhttp knows a fixed method list; the server decides on the method itself
            head = b"GET" + head[len(method):]
        if head.count(b"\n") != head.count(b"\r\n"):
            # nginx and HTTP.sys take bare LF line ends; llhttp wants CRLF after the version
            head = _BARE_LF.sub(b"\r\n", head)
        self._feed(head)
        return self.keep

    def feed_body(self, data: bytes | memoryview) -> list[bytes]:
        self.body_parts = []
        self._feed(data)
        return self.body_parts

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self._p.feed_data(data)
        except httptools.HttpParserInvalidMethodError as exc:
            raise ParseError("bad_method", str(exc)) from None
        except httptools.HttpParserInvalidURLError as exc:
            raise ParseError("bad_url", str(exc)) from None
        except httptools.HttpParserError as exc:
            raise ParseError(classify(str(exc)), str(exc)) from None
        except (ValueError, OverflowError) as exc:
            raise ParseError("bad_request", str(exc)) from None


def classify(reason: str) -> str:
    r = reason.lower()
    if "transfer-encoding" in r and "invalid" in r:
        return "te_unsupported"
    if "chunk" in r:
        return "bad_chunk"
    if "header" in r:
        return "bad_header"
    return "bad_request"
