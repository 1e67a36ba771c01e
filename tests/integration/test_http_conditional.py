"""curl's byte ranges (-r) and conditional GETs (-z) against both personas, end to end."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import only


def curl(*args: str) -> str:
    r = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True,
                       timeout=20, check=True)
    return r.stdout.decode("latin-1")


def header(response: str, name: str) -> str:
    m = re.search(rf"^{name}: ([^\r]*)\r$", response, re.M)
    assert m is not None, (name, response[:400])
    return m.group(1)


@pytest.mark.parametrize(("preset", "size"), [("debian-12", 615), ("windows-2008r2", 689)])
def test_curl_range_and_if_modified_since(honeypot_factory, preset, size):
    hp = honeypot_factory(only({"http": {"tls_ports": []}}, persona={"preset": preset}))
    url = f"http://127.0.0.1:{hp.port(80)}/"
    full = curl("-i", url)
    page = full.split("\r\n\r\n", 1)[1].encode("latin-1")
    assert len(page) == size

    part = curl("-i", "-r", "0-9", url)
    head, body = part.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 206 Partial Content\r\n")
    assert header(part, "Content-Range") == f"bytes 0-9/{size}"
    assert body.encode("latin-1") == page[:10]
    # the last header of both servers' 206 is Content-Range
    assert head.rsplit("\r\n", 1)[1].startswith("Content-Range: ")

    stamp = header(full, "Last-Modified")
    same = curl("-i", "-z", stamp, url)
    assert same.startswith("HTTP/1.1 304 Not Modified\r\n")
    assert same.endswith("\r\n\r\n") and header(same, "ETag") == header(full, "ETag")
    older = curl("-i", "-z", "Sat, 01 Jan 2000 00:00:00 GMT", url)
    assert older.startswith("HTTP/1.1 200 OK\r\n")

    beyond = curl("-i", "-r", f"{size}-", url)
    assert beyond.startswith("HTTP/1.1 416 Requested Range Not Satisfiable\r\n")
    assert header(beyond, "Content-Range") == f"bytes */{size}"

    assert hp.stop() == 0
    rows = hp.rows("SELECT http_request_status FROM http_requests ORDER BY http_request")
    assert [r[0] for r in rows] == [200, 206, 304, 200, 416]
    ranged = hp.rows("SELECT http_header_value FROM http_headers "
                     "WHERE http_header_name = 'Range'")
    assert ranged == [("bytes=0-9",), (f"bytes={size}-",)]
    statuses = [r["status"] for line in hp.json_lines()
                for r in line.get("http", {}).get("requests", [])]
    assert sorted(statuses) == [200, 200, 206, 304, 416]
