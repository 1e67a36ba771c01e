"""A flood faster than the sinks is slowed, not recorded in part: nothing is dropped."""

from __future__ import annotations

import socket
import threading

from tests.conftest import only

REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
PER_CONNECTION = 900  # under the JSON log's items per connection
CONNECTIONS = 6
#: requests per write: one read never holds more than the queue's slack above half
BURST = 50


def read_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def pipeline(port: int, got: list[int]) -> None:
    """Send requests in pipelined bursts, each answered in full before the next is sent
    (every answer has the same length: only its Date changes)."""
    answered = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(REQUEST)
        first = s.recv(1 << 16)
        size = len(first)
        answered += first.startswith(b"HTTP/1.1 200 ")
        for _ in range(PER_CONNECTION // BURST):
            s.sendall(REQUEST * BURST)
            answered += read_exactly(s, size * BURST).count(b"HTTP/1.1 200 ")
    got.append(answered)


def test_small_sink_queues_hold_the_flood_and_lose_nothing(honeypot_factory):
    hp = honeypot_factory(only(
        {"http": {"tls_ports": []}},
        sinks={"logsql": {"queue_size": 1000, "batch_size": 100},
               "jsonlog": {"queue_size": 1000}}))
    port = hp.port(80)
    got: list[int] = []
    threads = [threading.Thread(target=pipeline, args=(port, got)) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == [PER_CONNECTION + 1] * CONNECTIONS
    assert hp.stop() == 0
    total = (PER_CONNECTION + 1) * CONNECTIONS
    assert hp.rows("SELECT COUNT(*) FROM http_requests")[0][0] == total
    counters = hp.counters()
    assert counters["held_reads"] > 0  # the flood was held at least once
    for name in ("logsql", "jsonlog"):
        assert counters["sinks"][name]["dropped"] == 0
        assert counters["sinks"][name]["written"] == counters["emitted"]
    requests = sum(len(line.get("http", {}).get("requests", [])) for line in hp.json_lines())
    assert requests == total


def flood(port: int, n: int, got: list[int], start: threading.Barrier) -> None:
    """All of `n` requests in one write, at the same moment as the other connections."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(REQUEST)
        size = len(s.recv(1 << 16))
        start.wait(30)
        s.sendall(REQUEST * n)
        got.append(read_exactly(s, size * n).count(b"HTTP/1.1 200 "))


def test_many_connections_pipelining_at_once_lose_nothing(honeypot_factory):
    """Reads that arrive while the sinks are congested wait unread with their connection,
    so one loop turn of many connections cannot overrun the queues."""
    conns, per = 60, 999  # under the JSON log's items per connection
    hp = honeypot_factory(only(
        {"http": {"tls_ports": []}},
        # half the queue is more than one read (256 KiB) of pipelined requests can add
        sinks={"logsql": {"queue_size": 30_000}, "jsonlog": {"queue_size": 30_000}}))
    got: list[int] = []
    start = threading.Barrier(conns)
    threads = [threading.Thread(target=flood, args=(hp.port(80), per, got, start))
               for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert got == [per] * conns
    assert hp.stop() == 0
    counters = hp.counters()
    for name in ("logsql", "jsonlog"):
        assert counters["sinks"][name]["dropped"] == 0, counters
    assert counters["held_reads"] > 0
    assert hp.rows("SELECT COUNT(*) FROM http_requests")[0][0] == conns * (per + 1)
