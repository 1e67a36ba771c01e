"""IIS 7.x on HTTP.sys: IIS's custom error pages for what reaches IIS, HTTP.sys's own
short pages (Server: Microsoft-HTTPAPI/2.0) for what the kernel driver refuses first.

Page sizes match the shipped files and published captures (404.htm 1245 bytes,
501.htm 1508, iisstart.htm 689; HTTP.sys pages: badly formed 311, invalid verb
326, invalid header 339, invalid hostname 334, length required 344, request too
long 346, range not satisfiable 362). Header order follows captured IIS 7.5
answers: a HEAD names Content-Length first, a 206/416 ends with Content-Range.
"""

from __future__ import annotations

import functools
import re

from muscipula.protocols.http.conditional import (
    UNSATISFIABLE,
    etag_listed,
    http_time,
    simple_range,
)
from muscipula.protocols.http.content import File, LureBody, Site
from muscipula.protocols.http.profile import ProductLimits
from muscipula.protocols.http.request import Context, Reply, Request, http_date

REASONS = {
    200: "OK", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 411: "Length Required", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 416: "Requested Range Not Satisfiable",
    500: "Internal Server Error", 501: "Not Implemented",
    505: "HTTP Version Not Supported",
}

# custerr/<lang>/<status>.htm: (title and heading, explanation)
CUSTERR = {
    403: ("403 - Forbidden: Access is denied.",
          "You do not have permission to view this directory or page using the credentials "
          "that you supplied."),
    404: ("404 - File or directory not found.",
          "The resource you are looking for might have been removed, had its name changed, or "
          "is temporarily unavailable."),
    405: ("405 - HTTP verb used to access this page is not allowed.",
          "The page you are looking for cannot be displayed because an invalid method (HTTP "
          "verb) was used to attempt access."),
    500: ("500 - Internal server error.",
          "There is a problem with the resource you are looking for, and it cannot be "
          "displayed."),
    501: ("501 - Header values specify a method that is not implemented.",
          "The page you are looking for cannot be displayed because a header value in the "
          "request does not match certain configuration settings on the Web server. For "
          "example, a request header might specify a POST to a static file that cannot be "
          "posted to, or specify a Transfer-Encoding value that cannot make use of "
          "compression."),
}

_CUSTERR_PAGE = (
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
    '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n'
    '<html xmlns="http://www.w3.org/1999/xhtml">\r\n<head>\r\n'
    '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>\r\n'
    "<title>{title}</title>\r\n"
    '<style type="text/css">\r\n<!--\r\n'
    "body{{margin:0;font-size:.7em;font-family:Verdana, Arial, Helvetica, sans-serif;"
    "background:#EEEEEE;}}\r\n"
    "fieldset{{padding:0 15px 10px 15px;}} \r\n"
    "h1{{font-size:2.4em;margin:0;color:#FFF;}}\r\n"
    "h2{{font-size:1.7em;margin:0;color:#CC0000;}} \r\n"
    "h3{{font-size:1.2em;margin:10px 0 0 0;color:#000000;}} \r\n"
    '#header{{width:96%;margin:0 0 0 0;padding:6px 2% 6px 2%;font-family:"trebuchet MS", '
    "Verdana, sans-serif;color:#FFF;\r\nbackground-color:#555555;}}\r\n"
    "#content{{margin:0 0 0 2%;position:relative;}}\r\n"
    ".content-container{{background:#FFF;width:96%;margin-top:8px;padding:10px;"
    "position:relative;}}\r\n"
    "-->\r\n</style>\r\n</head>\r\n<body>\r\n"
    '<div id="header"><h1>Server Error</h1></div>\r\n<div id="content">\r\n'
    ' <div class="content-container"><fieldset>\r\n'
    "  <h2>{title}</h2>\r\n  <h3>{text}</h3>\r\n </fieldset></div>\r\n</div>\r\n"
    "</body>\r\n</html>\r\n"
)

# HTTP.sys refusals: status, heading, explanation
HTTPAPI = {
    "bad_request": (400, "Bad Request", "The request is badly formed."),
    "bad_method": (400, "Bad Request - Invalid Verb", "The request verb is invalid."),
    "bad_url": (400, "Bad Request - Invalid URL", "The request URL is invalid."),
    "connect": (400, "Bad Request - Invalid URL", "The request URL is invalid."),
    "bad_header": (400, "Bad Request - Invalid Header", "The request has an invalid header name."),
    "no_host": (400, "Bad Request - Invalid Hostname", "The request hostname is invalid."),
    "header_too_large": (400, "Bad Request - Request Too Long",
                         "The size of the request headers is too long."),
    "bad_chunk": (400, "Bad Request", "The request is badly formed."),
    "uri_too_long": (414, "Request URL Too Long", "The request URL is too long."),
    "length_required": (411, "Length Required",
                        "The request must be chunked or have a content length."),
    "te_unsupported": (501, "Not Implemented",
                       "The request transfer encoding type is not supported."),
    "bad_version": (505, "HTTP Version Not Supported",
                    "The request HTTP version is not supported."),
    # not a refusal: the page HTTP.sys puts under a static file's 416 headers
    "range": (416, "Requested Range Not Satisfiable",
              "The requested range is not satisfiable."),
}
_HTTPAPI_PAGE = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">'
    "\r\n<HTML><HEAD><TITLE>{reason}</TITLE>\r\n"
    '<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>\r\n'
    "<BODY><h2>{heading}</h2>\r\n<hr><p>HTTP Error {status}. {text}</p>\r\n</BODY></HTML>\r\n"
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
STATIC_ALLOW = "GET, HEAD, OPTIONS, TRACE"
OPTIONS_ALLOW = "OPTIONS, TRACE, GET, HEAD, POST"


@functools.lru_cache(maxsize=256)
def iis_etag(mtime: int, frac: int = 0) -> str:
    """IIS prints the file's FILETIME byte by byte, little end first, each in bare hex,
    then its change number (":0"); `frac` is the 100 ns ticks within the second."""
    filetime = (mtime + 11644473600) * 10_000_000 + frac
    return '"' + "".join(f"{b:x}" for b in filetime.to_bytes(8, "little")) + ':0"'


class IIS:
    windows = True
    #: HTTP.sys wants a length or chunking on these (411)
    length_required: tuple[str, ...] = ("POST", "PUT")
    default_type = "application/octet-stream"

    def __init__(self, server: str, powered_by: str = "ASP.NET", listing: bool = False) -> None:
        self.server = server
        self.powered_by = powered_by
        self.listing = listing
        # HTTP.sys: MaxFieldLength and MaxRequestBytes 16 KB; IIS maxAllowedContentLength
        self.limits = ProductLimits(
            request_line=16384, header_line=16384, header_bytes=16384, body_size=30_000_000,
            header_timeout=120.0, body_timeout=120.0, keepalive_timeout=120.0)
        self._pages: dict[int, bytes] = {}

    def custerr(self, status: int) -> bytes:
        page = self._pages.get(status)
        if page is None:
            title, text = CUSTERR.get(status, CUSTERR[500])
            page = self._pages[status] = _CUSTERR_PAGE.format(title=title, text=text).encode()
        return page

    def head(self, status: int, ctx: Context, keep: bool, version: str, *,
             pre: tuple[tuple[str, str], ...] = (), ctype: str | None = "text/html",
             file_fields: tuple[tuple[str, str], ...] = (), location: str | None = None,
             app: tuple[tuple[str, str], ...] = (), length: int | None = 0,
             length_first: bool = False, tail: tuple[tuple[str, str], ...] = ()) -> bytes:
        """IIS's order; HTTP.sys adds Content-Length last unless the handler set it itself
        (a static file's HEAD: first), and Content-Range after it."""
        out = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"]
        if length_first and length is not None:
            out.append(f"Content-Length: {length}\r\n")
        out += [f"{k}: {v}\r\n" for k, v in pre]
        if ctype:
            out.append(f"Content-Type: {ctype}\r\n")
        out += [f"{k}: {v}\r\n" for k, v in file_fields]
        if location:
            out.append(f"Location: {location}\r\n")
        out.append(f"Server: {self.server}\r\n")
        out += [f"{k}: {v}\r\n" for k, v in app]
        if self.powered_by:
            out.append(f"X-Powered-By: {self.powered_by}\r\n")
        out.append(f"Date: {http_date(ctx.now)}\r\n")
        if not keep:
            out.append("Connection: close\r\n")
        elif version == "1.0":
            out.append("Connection: keep-alive\r\n")
        if not length_first and length is not None:
            out.append(f"Content-Length: {length}\r\n")
        out += [f"{k}: {v}\r\n" for k, v in tail]
        out.append("\r\n")
        return "".join(out).encode("latin-1", "replace")

    def error(self, status: int, req: Request, ctx: Context, keep: bool,
              pre: tuple[tuple[str, str], ...] = ()) -> Reply:
        body = self.custerr(status)
        data = self.head(status, ctx, keep, req.version, pre=pre, length=len(body))
        if not req.head_only:
            data += body
        return Reply(status, data, close=not keep)

    # ----------------------------------------------------------------- answers

    def valid_method(self, method: str) -> bool:
        return bool(_TOKEN.match(method))

    def httpapi_page(self, kind: str) -> tuple[int, bytes]:
        status, heading, text = HTTPAPI.get(kind, HTTPAPI["bad_request"])
        title = heading if status in (414, 416) else REASONS[status]
        return status, _HTTPAPI_PAGE.format(reason=title, heading=heading, status=status,
                                            text=text).encode()

    def reject(self, kind: str, req: Request | None, ctx: Context) -> Reply:
        if kind == "body_too_large":  # request filtering: 404.13, answered by IIS itself
            if req is not None:
                return self.error(404, req, ctx, False)
            kind = "bad_request"
        status, body = self.httpapi_page(kind)
        data = (f"HTTP/1.1 {status} {REASONS[status]}\r\n"
                "Content-Type: text/html; charset=us-ascii\r\n"
                "Server: Microsoft-HTTPAPI/2.0\r\n"
                f"Date: {http_date(ctx.now)}\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        if req is None or not req.head_only:
            data += body
        return Reply(status, data, close=True)

    def http09(self, site: Site, target: str) -> bytes | None:
        return None  # HTTP.sys refuses requests without a version

    def serve(self, req: Request, ctx: Context, site: Site, lure: LureBody | None,
              path: str | None) -> Reply:
        keep = ctx.keep_alive
        if req.method == "OPTIONS":
            data = self.head(200, ctx, keep, req.version, pre=(("Allow", OPTIONS_ALLOW),),
                             ctype=None, app=(("Public", OPTIONS_ALLOW),))
            return Reply(200, data, close=not keep)
        if req.method == "TRACE":
            # TRACEVerbHandler (ProtocolSupportModule) lists TRACE but answers 501.htm
            return self.error(501, req, ctx, keep)
        if path is None:
            return self.reject("bad_url", req, ctx)
        if lure is not None:
            return self.lure(req, ctx, lure, keep)
        kind, f = site.lookup(path)
        if kind == "missing":
            return self.error(404, req, ctx, keep)
        if kind == "dir-noslash":
            loc = ctx.base_url(req.host or "localhost") + path + "/"
            body = (f'<head><title>Document Moved</title></head>\n<body><h1>Object Moved</h1>'
                    f'This document may be found <a HREF="{loc}">here</a></body>').encode()
            data = self.head(301, ctx, keep, req.version, ctype="text/html; charset=UTF-8",
                             location=loc, length=len(body))
            return Reply(301, data if req.head_only else data + body, close=not keep)
        if req.method not in ("GET", "HEAD"):
            return self.error(405, req, ctx, keep, pre=(("Allow", STATIC_ALLOW),))
        if kind == "dir" or f is None:
            return self.error(403, req, ctx, keep)
        return self.file(req, ctx, f, keep)

    def file(self, req: Request, ctx: Context, f: File, keep: bool) -> Reply:
        etag = iis_etag(f.mtime, f.frac)
        size = len(f.data)
        fields = (("Last-Modified", http_date(f.mtime)), ("Accept-Ranges", "bytes"),
                  ("ETag", etag))
        if self.not_modified(req, f, etag):
            data = self.head(304, ctx, keep, req.version, ctype=None, file_fields=fields,
                             length=None)
            return Reply(304, data, close=not keep)
        rng = self.range(req, f, etag)
        if rng == "overflow":  # HTTP.sys since MS15-034 refuses bounds past 2^63 - 1
            return self.reject("bad_header", req, ctx)
        if rng == UNSATISFIABLE:
            _, body = self.httpapi_page("range")
            data = self.head(416, ctx, keep, req.version, ctype=f.content_type,
                             file_fields=fields, length=len(body),
                             tail=(("Content-Range", f"bytes */{size}"),))
            return Reply(416, data if req.head_only else data + body, close=not keep)
        if isinstance(rng, tuple):
            start, end = rng
            data = self.head(206, ctx, keep, req.version, ctype=f.content_type,
                             file_fields=fields, length=end - start,
                             tail=(("Content-Range", f"bytes {start}-{end - 1}/{size}"),))
            if not req.head_only:
                data += f.data[start:end]
            return Reply(206, data, close=not keep)
        data = self.head(200, ctx, keep, req.version, ctype=f.content_type, file_fields=fields,
                         length=size, length_first=req.head_only)
        if not req.head_only:
            data += f.data
        return Reply(200, data, close=not keep)

    @staticmethod
    def not_modified(req: Request, f: File, etag: str) -> bool:
        """If-None-Match decides when sent; else a file not newer than If-Modified-Since."""
        inm = req.header("if-none-match")
        if inm is not None:
            return etag_listed(inm, etag, weak=True)
        ims = http_time(req.header("if-modified-since"))
        return ims is not None and f.mtime <= ims

    @staticmethod
    def range(req: Request, f: File, etag: str) -> tuple[int, int] | str | None:
        """One byte range (HTTP.sys vets the bounds first); If-Range must match."""
        value = req.header("range")
        if value is None or value[:6].lower() != "bytes=":
            return None
        rng = simple_range(value[6:], len(f.data))
        if rng is None or rng == "overflow":
            return rng
        if_range = req.header("if-range")
        if if_range is not None:
            if if_range.endswith('"'):
                if if_range != etag:
                    return None
            elif http_time(if_range) != f.mtime:
                return None
        return rng

    def lure(self, req: Request, ctx: Context, lb: LureBody, keep: bool) -> Reply:
        lure = lb.lure
        data = self.head(lure.status, ctx, keep, req.version, ctype=lure.content_type,
                         app=tuple(lure.headers), length=len(lb.body))
        if not req.head_only:
            data += lb.body
        return Reply(lure.status, data, close=not keep)
