"""End to end: blackhole over TCP and UDP, SIGTERM, logsql/JSON, persona reuse."""

from __future__ import annotations

import json
import socket
import time

from tests.conftest import only


def test_blackhole_records_and_never_answers(honeypot_factory):
    hp = honeypot_factory(only({"blackhole": {"tcp_ports": [23], "udp_ports": [123]}}))
    tcp_clients = []
    for i in range(5):
        s = socket.create_connection(("127.0.0.1", hp.port(23)), timeout=5)
        s.sendall(f"probe {i}\r\n".encode())
        tcp_clients.append(s)
    s = tcp_clients[0]
    s.settimeout(0.3)
    try:
        got = s.recv(100)
    except TimeoutError:
        got = None
    assert got is None, "blackhole answered"
    for s in tcp_clients:
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3):
        u.sendto(b"ntp?%d" % i, ("127.0.0.1", hp.port(123)))
    time.sleep(0.5)
    assert hp.stop() == 0

    rows = hp.rows("SELECT connection_transport, connection_protocol, local_port FROM "
                   "connections ORDER BY connection")
    assert rows.count(("tcp", "blackhole", hp.port(23))) == 5
    assert rows.count(("udp", "blackhole", hp.port(123))) == 1
    lines = hp.json_lines()
    assert len(lines) == 6
    assert all(line["src_ip"] == "127.0.0.1" for line in lines)
    assert {line["connection"]["transport"] for line in lines} == {"tcp", "udp"}
    counters = hp.counters()
    for sink in counters["sinks"].values():
        assert sink["dropped"] == 0 and sink["failed"] == 0
        assert sink["written"] == sink["emitted"] == counters["emitted"]
    (day_file,) = (hp.state / "transcripts").rglob("*.jsonl")  # one per service and day
    records = [json.loads(line) for line in day_file.read_text().splitlines()]
    assert len(records) == 6  # one line per connection
    assert {r["connection"]["service"] for r in records} == {"blackhole"}
    assert len({r["connection"]["id"] for r in records}) == 6


def test_restart_keeps_persona_secrets(honeypot_factory):
    cfg = only({"blackhole": {"tcp_ports": [23], "udp_ports": []}})
    hp = honeypot_factory(cfg)
    hp.stop()
    secrets = (hp.state / "secrets.json").read_text()
    cert = (hp.state / "tls" / "server.crt").read_bytes()
    hp2 = honeypot_factory(cfg, name=hp.state.name)
    hp2.stop()
    assert (hp2.state / "secrets.json").read_text() == secrets
    assert (hp2.state / "tls" / "server.crt").read_bytes() == cert
