"""The sink process end to end: it comes back after a crash; new tables and JSON fields."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import time
from typing import Any

import mysql.connector
import pymysql

from tests.conftest import only


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def wait_for(cond: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def knock(port: int) -> int:
    """A connection that sends a little and closes; its local port."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"hello\r\n")
    local = s.getsockname()[1]
    s.close()
    return local


def rows_from(hp: Any, remote_port: int) -> int:
    """Connection rows from `remote_port` so far (0 while the database is being made)."""
    try:
        return hp.rows("SELECT count(*) FROM connections WHERE remote_port = ?",
                       remote_port)[0][0]
    except sqlite3.OperationalError:
        return 0


def json_ports(hp: Any) -> set[int]:
    try:
        return {line["src_port"] for line in hp.json_lines()}
    except FileNotFoundError:
        return set()


def test_a_killed_sink_process_is_restarted_and_nothing_is_lost(honeypot_factory):
    hp = honeypot_factory(only({"blackhole": {"tcp_ports": [23], "udp_ports": []}}))
    port = hp.port(23)
    before = knock(port)
    # both sinks wrote it (they run on their own threads in the child) before the kill
    wait_for(lambda: rows_from(hp, before) == 1 and before in json_ports(hp))
    (child,) = children(hp.proc.pid)
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: child not in children(hp.proc.pid))
    during = knock(port)  # while no child runs: queued until the next one is up
    new = wait_for(lambda: [c for c in children(hp.proc.pid) if c != child])
    assert len(new) == 1
    wait_for(lambda: rows_from(hp, during) == 1)
    after = knock(port)
    wait_for(lambda: rows_from(hp, after) == 1)
    assert hp.stop() == 0
    counters = hp.counters()
    for name in ("logsql", "jsonlog"):
        c = counters["sinks"][name]
        assert c["emitted"] == c["written"] and c["failed"] == c["dropped"] == 0, c
    ports = {line["src_port"] for line in hp.json_lines()}
    assert {before, during, after} <= ports
    assert "restarting it" in hp.log()


def test_a_connection_open_across_a_sink_restart_keeps_its_rows(honeypot_factory):
    """Its requests after the restart land under its connection row, in logsql and JSON."""
    import http.client

    hp = honeypot_factory(only({"http": {"tls_ports": []}}))
    client = http.client.HTTPConnection("127.0.0.1", hp.port(80), timeout=5)
    client.request("GET", "/before")
    client.getresponse().read()
    local = client.sock.getsockname()[1]
    wait_for(lambda: rows_from(hp, local) == 1)
    (child,) = children(hp.proc.pid)
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: child not in children(hp.proc.pid))
    client.request("GET", "/during")  # same connection, while no sink process runs
    client.getresponse().read()
    wait_for(lambda: [c for c in children(hp.proc.pid) if c != child])
    client.request("GET", "/after")
    client.getresponse().read()
    client.close()
    wait_for(lambda: local in json_ports(hp))
    assert hp.stop() == 0
    assert hp.rows("SELECT c.remote_port, r.http_request_target FROM http_requests r JOIN "
                   "connections c USING (connection) ORDER BY r.http_request") == [
        (local, "/before"), (local, "/during"), (local, "/after")]
    assert hp.rows("SELECT count(*) FROM connection_ends JOIN connections USING "
                   "(connection) WHERE remote_port = ?", local) == [(1,)]
    (line,) = [x for x in hp.json_lines() if x["src_port"] == local]
    assert [r["target"] for r in line["http"]["requests"]] == ["/during", "/after"]
    counters = hp.counters()
    c = counters["sinks"]["logsql"]
    assert c["emitted"] == c["written"] and c["failed"] == 0, c
    # the line's accept and /before were folded by the child that died: counted failed
    c = counters["sinks"]["jsonlog"]
    assert c["failed"] == 2 and c["emitted"] == c["written"] + c["failed"], c


def test_close_reason_and_tls_hello_are_recorded(honeypot_factory):
    hp = honeypot_factory(only({"http": {"header_timeout": 1.0}},
                               persona={"preset": "debian-12"}))
    out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "--resolve",
                          f"www.example.org:{hp.port(443)}:127.0.0.1",
                          f"https://www.example.org:{hp.port(443)}/"],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    slow = socket.create_connection(("127.0.0.1", hp.port(80)), timeout=5)
    slow.sendall(b"GET / HTTP/1.1\r\n")  # never finishes its headers
    slow_port = slow.getsockname()[1]
    slow.settimeout(5)
    with contextlib.suppress(OSError):
        slow.recv(100)
    slow.close()
    time.sleep(0.3)
    assert hp.stop() == 0

    (hello,) = hp.rows("SELECT h.tls_hello_sni, h.tls_hello_version, h.tls_hello_ja3, "
                       "h.tls_hello_ja3_hash, h.tls_hello_ciphers, c.local_port FROM "
                       "tls_hellos h JOIN connections c USING (connection)")
    assert hello[0] == "www.example.org" and hello[1] == 771 and hello[5] == hp.port(443)
    assert hello[2].startswith("771,") and len(hello[3]) == 32 and hello[4].startswith("[")
    ends = dict(hp.rows("SELECT c.remote_port, e.connection_end_reason FROM connection_ends e "
                        "JOIN connections c USING (connection)"))
    assert len(ends) == 2 and all(ends.values())
    timed_out = ends[slow_port]
    lines = {line["src_port"]: line for line in hp.json_lines()}
    assert lines[slow_port]["connection"]["close_reason"] == timed_out
    assert timed_out != next(r for p, r in ends.items() if p != slow_port)
    tls_line = next(v for p, v in lines.items() if p != slow_port)
    assert tls_line["tls"]["sni"] == "www.example.org"


def test_mysql_login_handshake_in_json(honeypot_factory):
    hp = honeypot_factory(only({"mysql": {}}, persona={"preset": "debian-12"}))
    port = hp.port(3306)
    pymysql.connect(host="127.0.0.1", port=port, user="scanner", password="guess",
                    ssl_disabled=True, program_name="probe-tool").close()
    c = mysql.connector.connect(host="127.0.0.1", port=port, user="native",
                                password="guess2", auth_plugin="mysql_native_password",
                                ssl_disabled=True)
    c.close()
    time.sleep(0.2)
    assert hp.stop() == 0
    logins = {}
    for line in hp.json_lines():
        if line["connection"]["protocol"] == "mysqld":
            (login,) = line["mysql"]["logins"]
            assert line["credentials"][0]["username"] == login["username"]
            logins[login["username"]] = login
    py, native = logins["scanner"], logins["native"]
    assert py["attributes"]["program_name"] == "probe-tool" and py["tls"] is False
    assert py["plugin"] == "caching_sha2_password" and isinstance(py["success"], bool)
    assert native["client_plugin"] == "mysql_native_password"
    assert native["plugin"] == "caching_sha2_password"  # the server's switch is recorded
    assert native["attributes"]["_client_name"] == "mysql-connector-python"


def niceness(pid: int) -> set[int]:
    """The nice value of every thread of `pid` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    out = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as f:
            out.add(int(f.read().rsplit(")", 1)[1].split()[16]))
    return out


def test_the_sink_process_yields_the_cpu_to_the_network(honeypot_factory):
    hp = honeypot_factory(only({"blackhole": {"tcp_ports": [23], "udp_ports": []}},
                               sinks={"nice": 7}))
    (child,) = wait_for(lambda: children(hp.proc.pid))
    (parent,) = niceness(hp.proc.pid)  # as the tests run: 0 unless they run niced
    want = max(7, parent)  # a process may not lower its own niceness
    wait_for(lambda: niceness(child) == {want})  # every thread, once the child started
    after = knock(hp.port(23))
    wait_for(lambda: rows_from(hp, after) == 1)
