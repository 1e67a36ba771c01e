"""Foundation: (a) incidents/s through bus -> logsql, (b) blackhole accepts/s and RSS per conn.

(a) runs the real `Bus` and `LogSql` (and `JsonLog`) as the engine does, the sinks in
their own process (sinks/process.py), fed the incidents of a connection with a login
and an offer, paced the way the network path is
(it yields to the loop, and waits while a sink's queue is half full, so nothing
is dropped), and checked by counting rows. The bare figure is the least that
writes the same rows into the same schema: plain sqlite3 executemany in
transactions of the same size, no bus.

(b) starts `muscipula run` with only the blackhole and holds N idle connections
opened by a non-blocking flood; the bare figure is a uvloop server that accepts
and keeps the transport.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from importlib import resources
from pathlib import Path

from lib import (
    Board,
    Server,
    free_port,
    hold_flood,
    lost,
    muscipula_rows,
    run_async,
    start_bare,
    start_muscipula,
)

AREA = "foundation"
BATCH = 5000


def _incidents(i: int, now: float):
    from muscipula.incidents import Connection

    conn = Connection(i, "tcp", "ftpd", "accept", "127.0.0.1", 21, "198.51.100.7",
                      1024 + i % 60000, service="ftp", start=now)
    return (
        ("connection.tcp.accept", {"connection": conn}),
        ("login", {"username": "root", "password": f"pw{i}", "success": False,
                   "method": "USER/PASS", "extra": None}),
        ("download.offer", {"url": f"http://203.0.113.9/x{i}.sh", "source": "ftp"}),
        ("connection.free", {"connection": conn, "reason": "closed", "bytes_in": 40,
                             "bytes_out": 80, "duration": 0.01}),
    )


async def _through_bus(n: int, state: Path, json: bool) -> tuple[float, int, bool]:
    """Incidents/s from first emit to the last row committed; lost count; rows check."""
    from muscipula.config import JsonSink
    from muscipula.incidents import Bus
    from muscipula.sinks.process import SinkHost

    bus = Bus()
    queue = 100_000
    host = SinkHost()  # the engine's path: the sinks write in their own process
    bus.add(host.sink("logsql", "logsql", state / "logsql.sqlite"), queue, BATCH)
    if json:
        bus.add(host.sink("jsonlog", "jsonlog", state / "connections.json", JsonSink()), queue)
    await bus.start()
    await host.ready()  # the engine starts its sink process at startup: not part of the rate
    conns = n // 4
    t0 = time.perf_counter()
    now = time.time()
    for i in range(1, conns + 1):
        for name, fields in _incidents(i, now):
            bus.emit(name, i, fields, now)
        if i % 256 == 0:
            await asyncio.sleep(0)
            # the network path's view: a sink's queue must never fill up
            while any(c.emitted - c.written - c.dropped - c.failed > queue // 2
                      for c in bus.counters().values()):
                await asyncio.sleep(0.001)
    await bus.close()
    elapsed = time.perf_counter() - t0
    missing = sum(c.emitted - c.written for c in bus.counters().values())
    with sqlite3.connect(state / "logsql.sqlite") as db:
        counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("connections", "logins", "offers")]
    return conns * 4 / elapsed, missing, counts == [conns] * 3


def _bare_sqlite(n: int, state: Path) -> float:
    """The same rows, same schema, same transaction size, straight into sqlite3."""
    db = sqlite3.connect(state / "bare.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(resources.files("muscipula.sinks").joinpath("schema.sql").read_text())
    conns = n // 4
    per = BATCH // 4
    t0 = time.perf_counter()
    now = time.time()
    for start in range(1, conns + 1, per):
        ids = range(start, min(start + per, conns + 1))
        db.execute("BEGIN")
        for i in ids:
            cur = db.execute(
                "INSERT INTO connections (connection_type, connection_transport, "
                "connection_protocol, connection_timestamp, local_host, local_port, "
                "remote_host, remote_hostname, remote_port) VALUES (?,?,?,?,?,?,?,?,?)",
                ("accept", "tcp", "ftpd", now, "127.0.0.1", 21, "198.51.100.7", "",
                 1024 + i % 60000))
            row = cur.lastrowid
            db.execute("INSERT INTO logins (connection, login_username, login_password) "
                       "VALUES (?,?,?)", (row, "root", f"pw{i}"))
            db.execute("INSERT INTO offers (connection, offer_url) VALUES (?,?)",
                       (row, f"http://203.0.113.9/x{i}.sh"))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    db.close()
    return conns * 4 / elapsed


def bench_incidents(board: Board, n: int) -> None:
    title, unit = "incidents/s through bus -> logsql, zero lost", "1/s"
    with tempfile.TemporaryDirectory(prefix="bench-bus-") as tmp:
        bare = Path(tmp, "bare")
        bare.mkdir()
        board.add(AREA, "bus", title, unit, "bare", _bare_sqlite(n, bare))
        for json in (False, True):
            state = Path(tmp, f"bus-{json}")
            state.mkdir()
            rate, missing, rows_ok = run_async(_through_bus(n, state, json))
            key = "bus+json" if json else "bus"
            label = "incidents/s through bus -> logsql + jsonlog, zero lost"
            board.add(AREA, key, label if json else title, unit, "muscipula", rate)
            board.add(AREA, key + "-lost", f"incidents lost of {n:,} ({key})", "count",
                      "muscipula", missing, higher_is_better=False)
            if not rows_ok:
                board.note(AREA, "logsql row counts did not match the incidents sent")
            print(f"  muscipula bus{'+json' if json else ''}: {rate:,.0f} incidents/s, "
                  f"lost {missing}", flush=True)


def _hold(board: Board, server: Server, who: str, port: int, n: int) -> None:
    time.sleep(0.3)
    base = server.rss_kib()
    flood = hold_flood(port, n, server.pid)
    time.sleep(0.5)  # let the server settle what it allocated per connection
    held = server.rss_kib()
    accepted = flood.accepted
    board.add(AREA, "accepts", f"blackhole accepts/s, {n:,} held", "1/s", who, flood.rate)
    per = (held - base) / accepted if accepted else float("nan")
    board.add(AREA, "rss", f"RSS per held idle connection, {n:,} held", "KiB", who, per,
              higher_is_better=False)
    board.add(AREA, "rss-base", "RSS before the flood", "MiB", who, base / 1024,
              higher_is_better=False)
    print(f"  {who}: {flood.rate:,.0f} accepts/s, {accepted}/{n} held, {per:.2f} KiB/conn "
          f"above {base / 1024:.1f} MiB", flush=True)
    if accepted < n:
        board.note(AREA, f"{who} held {accepted} of {n} connections ({flood.errors} errors)")
    flood.close()


def bench_blackhole(board: Board, n: int, round_no: int) -> None:
    order = ["bare", "muscipula"] if round_no % 2 == 0 else ["muscipula", "bare"]
    for who in order:
        if who == "bare":
            port = free_port()
            with start_bare("blackhole", port) as server:
                _hold(board, server, "bare", port, n)
            continue
        with tempfile.TemporaryDirectory(prefix="bench-bh-") as tmp:
            server = start_muscipula(
                Path(tmp), {"blackhole": {"tcp_ports": [23], "udp_ports": []}}, [(23, "tcp")],
                limits={"max_connections": n + 1000, "max_per_address": n + 1000,
                        "idle_timeout": 600})
            with server:
                _hold(board, server, "muscipula", server.port(23), n)
                time.sleep(0.5)
            missing = lost(server)
            rows = muscipula_rows(server, "SELECT count(*) FROM connections")[0][0]
            board.add(AREA, "bh-lost", f"blackhole incidents lost ({n:,} connections)",
                      "count", "muscipula", missing, higher_is_better=False)
            if rows != n:
                board.note(AREA, f"blackhole: {rows} connection rows for {n} connections")


def run(board: Board, quick: bool, rounds: int, peers: object = None) -> None:
    n_incidents = 40_000 if quick else 200_000
    n_held = 2_000 if quick else 10_000
    for r in range(rounds):
        print(f"foundation round {r + 1}/{rounds}", flush=True)
        bench_incidents(board, n_incidents)
        bench_blackhole(board, n_held, r)
