"""Plain HTTP sent to the TLS port: nginx's 497 page (a 400), IIS closes; and the default."""

from __future__ import annotations

import re

from muscipula.machine import BaseMachine, Close, Emit, Send
from tests.unit.http_helpers import NOW, factory

PAGE_497 = (b"<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title>"
            b"</head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
            b"<center>The plain HTTP request was sent to HTTPS port</center>\r\n"
            b"<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n")
HEAD_497 = (b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\nDate: X\r\n"
            b"Content-Type: text/html\r\nContent-Length: 255\r\nConnection: close\r\n\r\n")


def run(preset: str, *chunks: bytes) -> list:
    m = factory(preset, "tls")()
    m.start(NOW)
    out: list = []
    for chunk in chunks:
        out += m.plain_on_tls(chunk, NOW)
    return out


def sent(actions: list) -> bytes:
    return re.sub(rb"Date: [^\r]+", b"Date: X",
                  b"".join(a.data for a in actions if isinstance(a, Send)))


def test_nginx_answers_its_497_page_and_closes():
    acts = run("debian-12", b"GET /x HTTP/1.1\r\nHost: a\r\n", b"User-Agent: t\r\n\r\n")
    assert sent(acts) == HEAD_497 + PAGE_497
    assert isinstance(acts[-1], Close)
    names = [a.name for a in acts if isinstance(a, Emit)]
    assert names == ["protocol.error", "http.request"]  # the incident once, then the request
    req = next(a.fields for a in acts if isinstance(a, Emit) and a.name == "http.request")
    assert (req["method"], req["target"], req["status"], req["host"]) == ("GET", "/x", 400, "a")
    assert req["user_agent"] == "t"


def test_nginx_head_gets_no_body_and_junk_gets_the_plain_400():
    assert sent(run("debian-12", b"HEAD / HTTP/1.0\r\n\r\n")) == HEAD_497
    junk = sent(run("debian-12", b"\x01\x02\x03 binary\r\n\r\n"))
    assert junk.startswith(b"HTTP/1.1 400 Bad Request") and b"plain HTTP" not in junk


def test_nginx_buffer_is_bounded():
    m = factory("debian-12", "tls")()
    m.start(NOW)
    acts = []
    for _ in range(40):  # past the 32 KiB header limit without ever ending the head
        acts += m.plain_on_tls(b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\nX: " + b"b" * 1000, NOW)
        if any(isinstance(a, Close) for a in acts):
            break
        assert m.buffered() <= 40 * 1024
    assert any(isinstance(a, Close) for a in acts)


def test_iis_closes_without_an_answer():
    acts = run("windows-2008r2", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert sent(acts) == b"" and isinstance(acts[-1], Close)
    assert [a.name for a in acts if isinstance(a, Emit)] == ["protocol.error"]


def test_default_for_other_machines():
    acts = BaseMachine().plain_on_tls(b"hello", NOW)
    assert [type(a) for a in acts] == [Emit, Close] and acts[0].name == "protocol.error"
