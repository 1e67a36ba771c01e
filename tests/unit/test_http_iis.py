"""The IIS 7.5 persona against published captures of real IIS 7.5 / HTTP.sys answers.

Each expectation below is a header order, status line or page size taken from a
capture of a real server (scanner output, write-ups, MS15-034 checks), not from
memory; where IIS 8.5/10 captures were the only source the test says so.
"""

from __future__ import annotations

import pytest

from muscipula.protocols.http.conditional import UNSATISFIABLE, simple_range
from muscipula.protocols.http.iis import iis_etag
from muscipula.protocols.http.request import http_date
from tests.unit.http_helpers import Conn, split

GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [h[0] for h in headers]


def iis() -> Conn:
    return Conn("windows-2008r2")


def test_default_page_get_and_head_orders():
    c = iis()
    line, headers, body = split(c.send(GET))
    assert line == "HTTP/1.1 200 OK" and len(body) == 689
    assert names(headers) == ["Content-Type", "Last-Modified", "Accept-Ranges", "ETag",
                              "Server", "X-Powered-By", "Date", "Content-Length"]
    # curl -I on IIS 7.5: the static handler sets Content-Length itself, so it comes first
    line, headers, body = split(c.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert line == "HTTP/1.1 200 OK" and body == b""
    assert names(headers) == ["Content-Length", "Content-Type", "Last-Modified",
                              "Accept-Ranges", "ETag", "Server", "X-Powered-By", "Date"]
    assert dict(headers)["Content-Length"] == "689"


@pytest.mark.parametrize(("last_modified", "frac", "etag"), [
    (1290222811, 4056250, '"3a24cbe86088cb1:0"'),  # a stock 2008 R2 SP1 iisstart.htm
    (1489761450, 6898743, '"37b5ed12c9fd21:0"'),   # Sat 17 Mar 2017 14:37:30, IIS 7.5
])
def test_etag_is_the_filetime_with_its_ticks(last_modified, frac, etag):
    assert iis_etag(last_modified, frac) == etag


def test_etag_ticks_are_per_install_not_whole_seconds():
    c = iis()
    _, headers, _ = split(c.send(GET))
    h = dict(headers)
    f = c.m.svc.site.files["/iisstart.htm"]
    assert h["ETag"] == iis_etag(f.mtime, f.frac) and h["Last-Modified"] == http_date(f.mtime)
    # a whole-second FILETIME is a multiple of 128: its first byte would always be 0 or 80
    assert f.frac > 0 and h["ETag"] != iis_etag(f.mtime)
    png = c.m.svc.site.files["/welcome.png"]
    assert png.mtime == f.mtime and png.frac != f.frac


def test_trace_is_not_implemented():
    c = iis()
    line, headers, body = split(c.send(b"TRACE / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n\r\n"))
    assert line == "HTTP/1.1 501 Not Implemented" and len(body) == 1508
    assert b"X-A" not in body and b"501 - Header values specify a method" in body
    assert names(headers) == ["Content-Type", "Server", "X-Powered-By", "Date",
                              "Content-Length"]
    assert not c.closed


def test_options_order():
    _, headers, body = split(iis().send(b"OPTIONS / HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert headers == [("Allow", "OPTIONS, TRACE, GET, HEAD, POST"),
                       ("Server", "Microsoft-IIS/7.5"),
                       ("Public", "OPTIONS, TRACE, GET, HEAD, POST"),
                       ("X-Powered-By", "ASP.NET"), ("Date", headers[4][1]),
                       ("Content-Length", "0")]
    assert body == b""


def test_conditional_get():
    c = iis()
    _, headers, _ = split(c.send(GET))
    h = dict(headers)
    for cond in (f"If-Modified-Since: {h['Last-Modified']}",
                 "If-Modified-Since: Sat, 01 Jan 2100 00:00:00 GMT",
                 f"If-None-Match: {h['ETag']}", "If-None-Match: *"):
        line, got, body = split(c.send(f"GET / HTTP/1.1\r\nHost: h\r\n{cond}\r\n\r\n".encode()))
        assert line == "HTTP/1.1 304 Not Modified" and body == b"", cond
        assert names(got) == ["Last-Modified", "Accept-Ranges", "ETag", "Server",
                              "X-Powered-By", "Date"]
        assert dict(got)["ETag"] == h["ETag"]
    for cond in ("If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT",
                 'If-None-Match: "other:0"', "If-Modified-Since: yesterday"):
        line, _, body = split(c.send(f"GET / HTTP/1.1\r\nHost: h\r\n{cond}\r\n\r\n".encode()))
        assert line == "HTTP/1.1 200 OK" and len(body) == 689, cond


def test_single_range():
    c = iis()
    page = split(c.send(GET))[2]
    line, headers, body = split(c.send(b"GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-9\r\n\r\n"))
    assert line == "HTTP/1.1 206 Partial Content" and body == page[:10]
    assert names(headers) == ["Content-Type", "Last-Modified", "Accept-Ranges", "ETag",
                              "Server", "X-Powered-By", "Date", "Content-Length",
                              "Content-Range"]
    assert dict(headers)["Content-Range"] == "bytes 0-9/689"
    _, headers, body = split(c.send(b"GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=-5\r\n\r\n"))
    assert body == page[-5:] and dict(headers)["Content-Range"] == "bytes 684-688/689"
    _, headers, body = split(c.send(b"GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=680-\r\n\r\n"))
    assert body == page[680:] and dict(headers)["Content-Length"] == "9"
    # an If-Range that no longer matches gets the whole file
    line, _, body = split(c.send(b'GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-9\r\n'
                                 b'If-Range: "old:0"\r\n\r\n'))
    assert line == "HTTP/1.1 200 OK" and body == page


def test_unsatisfiable_range_is_httpsys_page_under_file_headers():
    c = iis()
    line, headers, body = split(c.send(b"GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=689-\r\n\r\n"))
    assert line == "HTTP/1.1 416 Requested Range Not Satisfiable" and len(body) == 362
    assert names(headers) == ["Content-Type", "Last-Modified", "Accept-Ranges", "ETag",
                              "Server", "X-Powered-By", "Date", "Content-Length",
                              "Content-Range"]
    assert dict(headers)["Content-Range"] == "bytes */689"
    assert b"<h2>Requested Range Not Satisfiable</h2>" in body


def test_ms15_034_probe_gets_the_patched_answer():
    c = iis()
    out = c.send(b"GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-18446744073709551615\r\n\r\n")
    line, headers, body = split(out)
    assert line == "HTTP/1.1 400 Bad Request" and len(body) == 339
    assert dict(headers)["Server"] == "Microsoft-HTTPAPI/2.0"
    assert b"The request has an invalid header name." in body and c.closed


@pytest.mark.parametrize(("request_bytes", "status", "size"), [
    (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", "400 Bad Request", 326),       # Invalid Verb
    (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request", 334),                  # Invalid Hostname
    (b"POST / HTTP/1.1\r\nHost: h\r\n\r\n", "411 Length Required", 344),
])
def test_httpsys_pages(request_bytes, status, size):
    c = iis()
    line, headers, body = split(c.send(request_bytes))
    assert line == f"HTTP/1.1 {status}" and len(body) == size and c.closed
    assert names(headers) == ["Content-Type", "Server", "Date", "Connection",
                              "Content-Length"]
    assert dict(headers)["Content-Type"] == "text/html; charset=us-ascii"


def test_head_of_range_has_no_body():
    c = iis()
    line, headers, body = split(c.send(b"HEAD / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-9\r\n\r\n"))
    assert line == "HTTP/1.1 206 Partial Content" and body == b""
    assert dict(headers)["Content-Length"] == "10"


@pytest.mark.parametrize(("spec", "want"), [
    ("0-9", (0, 10)), ("-5", (95, 100)), ("-500", (0, 100)), ("95-", (95, 100)),
    ("0-1000", (0, 100)), (" 1 - 2 ", (1, 3)), ("100-", UNSATISFIABLE), ("-0", UNSATISFIABLE),
    ("5-1", None), ("a-b", None), ("0-1,3-4", None), ("-", None), ("\uff11-2", None),
    ("0-18446744073709551615", "overflow"), ("18-18446744073709551615", "overflow"),
])
def test_single_range_parser(spec, want):
    assert simple_range(spec, 100) == want
