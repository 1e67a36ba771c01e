"""nginx (Debian's build, default site): answers, pages and header order as it sends them.

Checked byte for byte against nginx 1.22.1 from Debian 12 (tests/unit/data).
"""

from __future__ import annotations

import re
import zlib

from muscipula.protocols.http.conditional import (
    UNSATISFIABLE,
    etag_listed,
    http_time,
    nginx_ranges,
)
from muscipula.protocols.http.content import File, LureBody, Site
from muscipula.protocols.http.profile import ProductLimits
from muscipula.protocols.http.request import Context, Reply, Request, http_date

REASONS = {
    200: "OK", 206: "Partial Content", 301: "Moved Permanently", 302: "Moved Temporarily",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Not Allowed", 408: "Request Time-out", 411: "Length Required",
    413: "Request Entity Too Large", 414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Temporarily Unavailable",
    505: "HTTP Version Not Supported",
}
_PADDING = b"<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n" * 6
_METHOD = re.compile(r"^[A-Z_-]{1,32}$")
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"

# status for each refusal; nginx closes the connection after every one of them
_REJECT_STATUS = {
    "bad_version": 505, "uri_too_long": 414, "te_unsupported": 501, "body_too_large": 413,
    "length_required": 411,
}


def _reason(status: int) -> str:
    return REASONS.get(status, "Unknown")


class Nginx:
    windows = False
    length_required: tuple[str, ...] = ()
    default_type = "application/octet-stream"

    def __init__(self, server: str, gzip: bool = True, listing: bool = False) -> None:
        self.server = server
        self.gzip = gzip
        self.listing = listing
        self.limits = ProductLimits(
            request_line=8192, header_line=8192, header_bytes=4 * 8192, body_size=1024 * 1024,
            header_timeout=60.0, body_timeout=60.0, keepalive_timeout=75.0)
        self._pages: dict[tuple[int, str], bytes] = {}

    # ----------------------------------------------------------------- pieces

    def page(self, status: int, title: str = "") -> bytes:
        key = (status, title)
        page = self._pages.get(key)
        if page is None:
            head = f"{status} {_reason(status)}"
            if title:
                text = (f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
                        f"<center><h1>{head}</h1></center>\r\n<center>{title}</center>\r\n")
            else:
                text = (f"<html>\r\n<head><title>{head}</title></head>\r\n<body>\r\n"
                        f"<center><h1>{head}</h1></center>\r\n")
            text += f"<hr><center>{self.server}</center>\r\n</body>\r\n</html>\r\n"
            page = self._pages[key] = text.encode()
        return page

    def head(self, status: int, ctx: Context, ctype: str | None, length: int | None,
             keep: bool, last_modified: int | None = None, location: str | None = None,
             chunked: bool = False, tail: tuple[tuple[str, str], ...] = ()) -> bytes:
        """ngx_http_header_filter's order: fixed fields first, then the list ones."""
        out = [f"HTTP/1.1 {status} {_reason(status)}\r\nServer: {self.server}\r\n"
               f"Date: {http_date(ctx.now)}\r\n"]
        if ctype:
            out.append(f"Content-Type: {ctype}\r\n")
        if length is not None:
            out.append(f"Content-Length: {length}\r\n")
        if last_modified is not None:
            out.append(f"Last-Modified: {http_date(last_modified)}\r\n")
        if location:
            out.append(f"Location: {location}\r\n")
        if chunked:
            out.append("Transfer-Encoding: chunked\r\n")
        out.append("Connection: keep-alive\r\n" if keep else "Connection: close\r\n")
        for name, value in tail:
            out.append(f"{name}: {value}\r\n")
        out.append("\r\n")
        return "".join(out).encode("latin-1", "replace")

    def error(self, status: int, req: Request | None, ctx: Context, keep: bool,
              title: str = "", location: str | None = None,
              tail: tuple[tuple[str, str], ...] = ()) -> Reply:
        body = self.page(status, title)
        ua = req.header("user-agent") if req is not None else None
        if status >= 400 and ua and ("MSIE " in ua or "Chrome/" in ua):
            body += _PADDING
        data = self.head(status, ctx, "text/html", len(body), keep, location=location,
                         tail=tail)
        if req is None or not req.head_only:
            data += body
        return Reply(status, data, close=not keep)

    # ----------------------------------------------------------------- answers

    def valid_method(self, method: str) -> bool:
        return bool(_METHOD.match(method))

    def reject(self, kind: str, req: Request | None, ctx: Context) -> Reply:
        if kind == "header_too_large":
            return self.error(400, req, ctx, False, "Request Header Or Cookie Too Large")
        return self.error(_REJECT_STATUS.get(kind, 400), req, ctx, False)

    def http09(self, site: Site, target: str) -> bytes | None:
        """`GET /` with no version: nginx sends the bare body, no status line."""
        from muscipula.protocols.http.content import normalise

        path = normalise(target, False)
        if path is None:
            return None
        kind, f = site.lookup(path)
        return f.data if kind == "file" and f is not None else self.page(404)

    def serve(self, req: Request, ctx: Context, site: Site, lure: LureBody | None,
              path: str | None) -> Reply:
        keep = ctx.keep_alive
        if req.method == "TRACE":
            return self.error(405, req, ctx, False)
        if path is None:
            return self.error(400, req, ctx, False)
        if lure is not None:
            return self.lure(req, ctx, lure, keep)
        kind, f = site.lookup(path)
        if kind == "missing":
            return self.error(404, req, ctx, keep)
        if req.method not in ("GET", "HEAD", "POST"):
            return self.error(405, req, ctx, keep)
        if kind == "dir-noslash":
            loc = ctx.base_url(req.host or "localhost") + path + "/"
            return self.error(301, req, ctx, keep, location=loc)
        if kind == "dir" or f is None:
            return self.error(403, req, ctx, keep)
        if req.method == "POST":
            return self.error(405, req, ctx, keep)
        return self.file(req, ctx, f, keep)

    def file(self, req: Request, ctx: Context, f: File, keep: bool) -> Reply:
        """The static handler's answer through nginx's header filters, in their order:
        not_modified (304), gzip, then range (206/416)."""
        etag = f'"{f.mtime:x}-{len(f.data):x}"'
        if not_modified(req, f.mtime, etag):
            data = self.head(304, ctx, None, None, keep, f.mtime, tail=(("ETag", etag),))
            return Reply(304, data, close=not keep)
        ae = req.header("accept-encoding") or ""
        if (self.gzip and req.method == "GET" and req.version == "1.1" and "gzip" in ae
                and f.content_type == "text/html" and len(f.data) >= 20):
            chunk = gzip_like_nginx(f.data)
            data = self.head(200, ctx, f.content_type, None, keep, f.mtime, chunked=True,
                             tail=(("ETag", "W/" + etag), ("Content-Encoding", "gzip")))
            data += b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n"
            return Reply(200, data, close=not keep)
        ranges = self.ranges(req, f, etag)
        if ranges == UNSATISFIABLE:
            return self.error(416, req, ctx, keep,
                              tail=(("Content-Range", f"bytes */{len(f.data)}"),))
        if isinstance(ranges, list) and len(ranges) == 1:
            start, end = ranges[0]
            data = self.head(206, ctx, f.content_type, end - start, keep, f.mtime, tail=(
                ("ETag", etag), ("Content-Range", f"bytes {start}-{end - 1}/{len(f.data)}")))
            if not req.head_only:
                data += f.data[start:end]
            return Reply(206, data, close=not keep)
        data = self.head(200, ctx, f.content_type, len(f.data), keep, f.mtime,
                         tail=(("ETag", etag), ("Accept-Ranges", "bytes")))
        if not req.head_only:
            data += f.data
        return Reply(200, data, close=not keep)

    @staticmethod
    def ranges(req: Request, f: File, etag: str) -> list[tuple[int, int]] | str | None:
        """ngx_http_range_header_filter: the Range header if it applies (If-Range agrees).
        Several ranges would be a multipart answer: those get the whole file here."""
        value = req.header("range")
        if value is None or len(value) < 7 or value[:6].lower() != "bytes=":
            return None
        if_range = req.header("if-range")
        if if_range is not None:
            if len(if_range) >= 2 and if_range.endswith('"'):
                if if_range != etag:
                    return None
            elif http_time(if_range) != f.mtime:
                return None
        return nginx_ranges(value[6:], len(f.data))

    def lure(self, req: Request, ctx: Context, lb: LureBody, keep: bool) -> Reply:
        """As nginx in front of PHP-FPM answers: chunked, the app's headers after Connection."""
        lure = lb.lure
        tail = tuple(lure.headers)
        body = lb.body
        data = self.head(lure.status, ctx, lure.content_type, None, keep, chunked=True,
                         tail=tail)
        if not req.head_only:
            if body:
                data += b"%x\r\n" % len(body) + body + b"\r\n"
            data += b"0\r\n\r\n"
        return Reply(lure.status, data, close=not keep)

    def to_https(self, req: Request, ctx: Context) -> Reply:
        """A plain HTTP request on a `listen ... ssl` port: nginx's 497, sent as a 400 with
        its own page, and the connection closed."""
        return self.error(400, req, ctx, False, "The plain HTTP request was sent to HTTPS port")


def not_modified(req: Request, mtime: int, etag: str) -> bool:
    """ngx_http_not_modified_filter with `if_modified_since exact`: every validator sent
    must hold (the date equal to Last-Modified, the ETag listed, weakly compared)."""
    ims = req.header("if-modified-since")
    inm = req.header("if-none-match")
    if ims is None and inm is None:
        return False
    if ims is not None and http_time(ims) != mtime:
        return False
    return inm is None or etag_listed(inm, etag, weak=True)


def gzip_like_nginx(data: bytes) -> bytes:
    """gzip as nginx's filter makes it: level 1, window and memLevel shrunk to the size."""
    wbits, memlevel = 15, 8
    while len(data) < (1 << (wbits - 1)) and wbits > 9:
        wbits -= 1
        if memlevel > 1:
            memlevel -= 1
    comp = zlib.compressobj(1, zlib.DEFLATED, -wbits, memlevel)
    raw = comp.compress(data) + comp.flush()
    return (_GZIP_HEADER + raw + zlib.crc32(data).to_bytes(4, "little")
            + (len(data) & 0xFFFFFFFF).to_bytes(4, "little"))
