"""nginx 1.22.1's 304, 206 and 416 for the default page, as its filters build them.

The 206 for `bytes=0-9` is also in the recorded corpus (test_http_nginx_reference);
the rest follows ngx_http_not_modified_filter_module and ngx_http_range_filter_module:
exact If-Modified-Since, weak If-None-Match, the range parser's 416 and decline cases.
"""

from __future__ import annotations

import pytest

from muscipula.protocols.http.conditional import UNSATISFIABLE, nginx_ranges
from tests.unit.http_helpers import Conn, split

GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def ask(c: Conn, *lines: str) -> tuple[str, list[tuple[str, str]], bytes]:
    extra = "".join(f"{x}\r\n" for x in lines)
    return split(c.send(f"GET / HTTP/1.1\r\nHost: h\r\n{extra}\r\n".encode()))


def test_not_modified():
    c = Conn()
    _, headers, page = split(c.send(GET))
    h = dict(headers)
    for conds in ([f"If-Modified-Since: {h['Last-Modified']}"],
                  [f"If-None-Match: {h['ETag']}"], ["If-None-Match: *"],
                  [f"If-None-Match: W/{h['ETag']}"],
                  [f"If-Modified-Since: {h['Last-Modified']}", f"If-None-Match: {h['ETag']}"],
                  # the 304 is decided before gzip would weaken the ETag
                  ["Accept-Encoding: gzip", f"If-None-Match: {h['ETag']}"]):
        line, got, body = ask(c, *conds)
        assert line == "HTTP/1.1 304 Not Modified" and body == b"", conds
        assert [k for k, _ in got] == ["Server", "Date", "Last-Modified", "Connection", "ETag"]
        assert dict(got)["ETag"] == h["ETag"] and dict(got)["Connection"] == "keep-alive"
    # exact match only: an earlier or later date, another tag, or one failing validator
    for conds in (["If-Modified-Since: Sat, 01 Jan 2100 00:00:00 GMT"],
                  ["If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT"],
                  ['If-None-Match: "0-0"'],
                  ["If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT",
                   f"If-None-Match: {h['ETag']}"]):
        line, _, body = ask(c, *conds)
        assert line == "HTTP/1.1 200 OK" and body == page, conds


def test_ranges():
    c = Conn()
    page = split(c.send(GET))[2]
    n = len(page)
    line, headers, body = ask(c, "Range: bytes=-5")
    assert line == "HTTP/1.1 206 Partial Content" and body == page[-5:]
    assert [k for k, _ in headers] == ["Server", "Date", "Content-Type", "Content-Length",
                                       "Last-Modified", "Connection", "ETag", "Content-Range"]
    assert dict(headers)["Content-Range"] == f"bytes {n - 5}-{n - 1}/{n}"
    _, headers, body = ask(c, "Range: bytes=600-")
    assert body == page[600:] and dict(headers)["Content-Length"] == str(n - 600)
    _, headers, body = ask(c, "Range: BYTES= 10 - 10000")
    assert body == page[10:] and dict(headers)["Content-Range"] == f"bytes 10-{n - 1}/{n}"
    # If-Range must match the ETag (or the date) exactly, else the whole file
    etag = dict(headers)["ETag"]
    assert ask(c, "Range: bytes=0-9", f"If-Range: {etag}")[2] == page[:10]
    assert ask(c, "Range: bytes=0-9", 'If-Range: "1-1"')[0] == "HTTP/1.1 200 OK"
    # with gzip the length is unknown when the range filter runs: 200, compressed
    line, headers, _ = ask(c, "Range: bytes=0-9", "Accept-Encoding: gzip")
    assert line == "HTTP/1.1 200 OK" and dict(headers)["Content-Encoding"] == "gzip"


def test_unsatisfiable_and_declined():
    c = Conn()
    n = len(split(c.send(GET))[2])
    for spec in (f"bytes={n}-", "bytes=abc", "bytes=5-1", "bytes=-0",
                 "bytes=0-99999999999999999999"):
        line, headers, body = ask(c, f"Range: {spec}")
        assert line == "HTTP/1.1 416 Requested Range Not Satisfiable", spec
        assert [k for k, _ in headers] == ["Server", "Date", "Content-Type", "Content-Length",
                                           "Connection", "Content-Range"]
        assert dict(headers)["Content-Range"] == f"bytes */{n}"
        assert body.startswith(b"<html>\r\n<head><title>416 Requested Range Not Satisfiable")
        assert not c.closed
    for spec in ("bits=0-9", "bytes=", f"bytes=0-{n},0-{n}"):
        line, headers, _ = ask(c, f"Range: {spec}")
        assert line == "HTTP/1.1 200 OK" and dict(headers)["Accept-Ranges"] == "bytes", spec


@pytest.mark.parametrize(("spec", "want"), [
    ("0-9", [(0, 10)]), ("-3", [(97, 100)]), ("-300", [(0, 100)]), ("90-", [(90, 100)]),
    ("0-0,5-", [(0, 1), (5, 100)]), ("100-", UNSATISFIABLE), ("x", UNSATISFIABLE),
    ("1-2;", UNSATISFIABLE), ("-0", UNSATISFIABLE), ("0-99,0-99", None),
])
def test_range_parser(spec, want):
    assert nginx_ranges(spec, 100) == want


def test_range_of_an_empty_file_is_declined():
    assert nginx_ranges("0-", 0) is None and nginx_ranges("-5", 0) is None
