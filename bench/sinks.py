"""Sinks: the sink child's CPU per HTTP request, its throughput and its memory.

Feeds the incident stream an HTTP flood makes (an accept, many `http.request` with
4-6 headers on one keep-alive connection, some of them the same cached fields dict,
a free) through the real bus and the real sink child (sinks/process.py) with logsql,
and logsql + jsonlog. Batches are the size the bus hands over under a flood (its
linger gathers a few hundred incidents). The child's CPU comes from
/proc/<pid>/stat (user + system, every thread), its memory from /proc/<pid>/status.

The bare figure is the least that keeps the same rows and JSON lines: the same
inserts (the schema the sink makes) with executemany in one transaction per batch,
and one json.dumps per connection, in this process, without a pipe or pickling.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from lib import Board, run_async

AREA = "sinks"
PER_CONN = 100  # requests per keep-alive connection (wrk keeps its connections)
FLOOD_BATCH = 250  # what the bus's linger gathers at a few thousand requests/s
_TICK = os.sysconf("SC_CLK_TCK")

_AGENTS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
           "curl/8.5.0", "python-requests/2.31.0", "Wget/1.21.3")


def _request(i: int) -> dict[str, Any]:
    target = f"/index.php?id={i}" if i % 3 else "/"
    agent = _AGENTS[i % len(_AGENTS)]
    headers = [("Host", "192.0.2.10"), ("User-Agent", agent), ("Accept", "*/*"),
               ("Accept-Encoding", "gzip, deflate")]
    if i % 2:
        headers.append(("Connection", "keep-alive"))
    if i % 5 == 0:
        headers.append(("Cookie", f"session={i:08x}"))
    return {"method": "GET", "target": target, "version": "HTTP/1.1", "host": "192.0.2.10",
            "user_agent": agent, "headers": headers, "status": 200 if i % 3 else 404,
            "body_size": 0, "body": b""}


def stream(conns: int, per_conn: int = PER_CONN, start: float = 1_700_000_000.0
           ) -> list[tuple[str, int, float, dict[str, Any]]]:
    """(name, conn, time, fields) of `conns` keep-alive connections, `per_conn` requests each.

    Half the requests reuse one fields dict per connection, as the server's cache of
    identical requests does; the others are distinct.
    """
    from muscipula.incidents import Connection

    out: list[tuple[str, int, float, dict[str, Any]]] = []
    cached = _request(0)
    for c in range(1, conns + 1):
        conn = Connection(c, "tcp", "httpd", "accept", "192.0.2.10", 80, "198.51.100.7",
                          1024 + c % 60000, service="http", start=start)
        out.append(("connection.tcp.accept", c, start, {"connection": conn}))
        for r in range(per_conn):
            fields = cached if r % 2 else _request(c * per_conn + r)
            out.append(("http.request", c, start + r * 0.001, fields))
        out.append(("connection.free", c, start + 1, {
            "connection": conn, "reason": "closed", "bytes_in": 9000, "bytes_out": 30000,
            "duration": 1.0}))
    return out


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of `pid` and all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / _TICK


def proc_mem(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


async def _through_child(state: Path, items: list[Any], json_too: bool) -> dict[str, float]:
    from muscipula.config import JsonSink
    from muscipula.incidents import Bus
    from muscipula.sinks.process import SinkHost

    host = SinkHost()
    bus = Bus()
    queue = 100_000
    bus.add(host.sink("logsql", "logsql", state / "logsql.sqlite"), queue, FLOOD_BATCH)
    if json_too:
        bus.add(host.sink("jsonlog", "jsonlog", state / "connections.json", JsonSink()), queue,
                FLOOD_BATCH)
    await bus.start()
    await host.ready()
    assert host.proc is not None
    pid = host.proc.pid
    await asyncio.sleep(0.3)  # the sinks open their files in the child
    idle_rss, _ = proc_mem(pid)
    cpu0 = proc_cpu(pid)
    last = [cpu0, 0]

    async def sample() -> None:
        while True:
            try:
                last[0] = proc_cpu(pid)
                last[1] = max(last[1], proc_mem(pid)[1])
            except OSError:
                return
            await asyncio.sleep(0.02)

    sampler = asyncio.get_running_loop().create_task(sample())
    t0 = time.perf_counter()
    emit = bus.emit
    for k, (name, conn, now, fields) in enumerate(items, 1):
        emit(name, conn, fields, now)
        if k % FLOOD_BATCH == 0:
            await asyncio.sleep(0)
            while any(c.emitted - c.written - c.dropped - c.failed > queue // 2
                      for c in bus.counters().values()):
                await asyncio.sleep(0.001)
    close = asyncio.get_running_loop().create_task(bus.close(120))
    while not close.done():  # the child's last CPU is read before it is reaped
        with_results = all(f.done() for f in host.results.values())
        if with_results:
            break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    with _suppress():
        last[0] = proc_cpu(pid)
    await close
    sampler.cancel()
    lost = sum(c.emitted - c.written for c in bus.counters().values())
    return {"cpu": last[0] - cpu0, "elapsed": elapsed, "idle_rss": idle_rss,
            "peak_rss": last[1], "lost": lost}


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]


def _bare(state: Path, items: list[Any], json_too: bool) -> float:
    """CPU seconds for the same rows (and JSON lines) written straight from this process."""
    db = sqlite3.connect(state / "bare.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    from muscipula.sinks import logsql
    from muscipula.sinks.records import load_all

    load_all()
    db.executescript(resources.files("muscipula.sinks").joinpath("schema.sql").read_text()
                     + "\n".join(logsql._EXTRA_DDL))
    out = open(state / "bare.json", "ab")  # noqa: SIM115
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    t0 = time.process_time()
    ids: dict[int, int] = {}
    objs: dict[int, dict[str, Any]] = {}
    for start in range(0, len(items), FLOOD_BATCH):
        db.execute("BEGIN")
        reqs, heads, lines = [], [], []
        for name, conn, _now, f in items[start:start + FLOOD_BATCH]:
            if name == "connection.tcp.accept":
                c = f["connection"]
                ids[conn] = db.execute(
                    "INSERT INTO connections (connection_type, connection_transport, "
                    "connection_protocol, connection_timestamp, local_host, local_port, "
                    "remote_host, remote_hostname, remote_port) VALUES (?,?,?,?,?,?,?,?,?)",
                    (c.type, c.transport, c.protocol, c.start, c.local_host, c.local_port,
                     c.remote_host, "", c.remote_port)).lastrowid
                objs[conn] = {"connection": {"protocol": c.protocol}, "src_ip": c.remote_host,
                              "http": {"requests": []}}
            elif name == "http.request":
                reqs.append((ids[conn], f["method"], f["target"], f["version"], f["host"],
                             f["user_agent"], f["status"], f["body_size"], f["body"]))
                heads.append(f["headers"])
                objs[conn]["http"]["requests"].append(f)
            else:
                obj = objs.pop(conn)
                if json_too:
                    lines.append(json.dumps(obj, default=bytes.hex).encode() + b"\n")
        db.executemany(
            "INSERT INTO http_requests (connection, http_request_method, http_request_target, "
            "http_request_version, http_request_host, http_request_user_agent, "
            "http_request_status, http_request_body_size, http_request_body, "
            "http_request_headers) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(*r, dumps(h)) for r, h in zip(reqs, heads, strict=True)])
        db.execute("COMMIT")
        if lines:
            out.write(b"".join(lines))
            out.flush()
    cpu = time.process_time() - t0
    out.close()
    db.close()
    return cpu


def bench_child(board: Board, conns: int) -> None:
    items = stream(conns)
    n_req = sum(1 for i in items if i[0] == "http.request")
    with tempfile.TemporaryDirectory(prefix="bench-sinks-") as tmp:
        for json_too in (False, True):
            key = "json" if json_too else "sql"
            what = "logsql + jsonlog" if json_too else "logsql"
            state = Path(tmp, key)
            state.mkdir()
            bare_cpu = _bare(state, items, json_too)
            r = run_async(_through_child(state, items, json_too))
            per = r["cpu"] / n_req * 1e6
            rows = _count(state / "logsql.sqlite", "http_requests")
            board.add(AREA, f"cpu-{key}", f"child CPU per http.request, {what}", "µs",
                      "muscipula", per, higher_is_better=False)
            board.add(AREA, f"cpu-{key}", f"child CPU per http.request, {what}", "µs",
                      "bare", bare_cpu / n_req * 1e6, higher_is_better=False)
            board.add(AREA, f"rate-{key}", f"incidents/s through the child, {what}", "1/s",
                      "muscipula", len(items) / r["elapsed"])
            board.add(AREA, f"lost-{key}", f"incidents lost of {len(items):,} ({what})",
                      "count", "muscipula", r["lost"], higher_is_better=False)
            board.add(AREA, "idle-rss", "child RSS idle, sinks open", "MiB", "muscipula",
                      r["idle_rss"] / 1024, higher_is_better=False)
            board.add(AREA, f"peak-rss-{key}", f"child peak RSS, {what}", "MiB", "muscipula",
                      r["peak_rss"] / 1024, higher_is_better=False)
            if rows != n_req:
                board.note(AREA, f"{what}: {rows} http_requests rows for {n_req} requests")
            print(f"  {what}: {per:.1f} µs/request (bare {bare_cpu / n_req * 1e6:.1f}), "
                  f"{len(items) / r['elapsed']:,.0f} incidents/s, idle "
                  f"{r['idle_rss'] / 1024:.1f} MiB, peak {r['peak_rss'] / 1024:.1f} MiB, "
                  f"lost {r['lost']}", flush=True)


def bench_long_connections(board: Board, conns: int, per_conn: int) -> None:
    """wrk's shape: few connections, each open through the whole flood. Until they end,
    jsonlog holds their requests (up to max_items_per_connection, max_pending_bytes)."""
    items = stream(conns, per_conn)
    with tempfile.TemporaryDirectory(prefix="bench-sinks-") as tmp:
        r = run_async(_through_child(Path(tmp), items, True))
    title = f"child peak RSS, {conns} connections x {per_conn:,} requests, logsql + jsonlog"
    board.add(AREA, "peak-rss-long", title, "MiB", "muscipula", r["peak_rss"] / 1024,
              higher_is_better=False)
    print(f"  {conns} x {per_conn}: peak {r['peak_rss'] / 1024:.1f} MiB, lost {r['lost']}",
          flush=True)


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def run(board: Board, quick: bool, rounds: int, peers: object = None) -> None:
    conns = 200 if quick else 1000
    for r in range(rounds):
        print(f"sinks round {r + 1}/{rounds}", flush=True)
        bench_child(board, conns)
        bench_long_connections(board, 50, 400 if quick else 2000)
