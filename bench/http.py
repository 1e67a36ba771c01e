"""HTTP: wrk -t2 -c50 requests/s and p99 on GET /, and RSS with 5,000 idle keep-alive connections.

The idle connections are opened by a non-blocking flood, each sends one
keep-alive GET and reads its answer, then all stay open while RSS is read
from /proc.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from lib import (
    Board,
    Server,
    contenders,
    exchange_all,
    hold_flood,
    measure_rounds,
    muscipula_services,
    start_muscipula,
    start_other,
    wrk,
)

AREA = "http"
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


def measure(board: Board, who: str, server: Server, port: int, duration: float,
            idle: int) -> None:
    w = wrk(f"http://127.0.0.1:{port}/", 2, 50, duration)
    board.add(AREA, "rps", "wrk -t2 -c50 GET /", "req/s", who, w["rps"])
    board.add(AREA, "p99", "wrk p99 latency", "ms", who, w["p99_ms"], higher_is_better=False)
    bad = w["non2xx"] + w["errors"]
    print(f"  {who}: {w['rps']:,.0f} req/s, p99 {w['p99_ms']:.1f} ms, "
          f"{w['non2xx']:.0f} non-2xx/3xx, {w['errors']:.0f} socket errors", flush=True)
    if bad:
        share = 100 * w["non2xx"] / max(w["requests"], 1)
        board.note(AREA, f"{who}: {share:.0f}% of wrk answers were not 2xx/3xx"
                         + (", with socket errors" if w["errors"] else ""))
    time.sleep(0.5)
    base = server.rss_kib()
    flood = hold_flood(port, idle, server.pid)
    answered = exchange_all(flood.held, REQUEST, b"HTTP/1.", timeout=10)
    time.sleep(0.5)
    held = server.rss_kib()
    flood.close()
    board.add(AREA, "idle-rss", f"RSS with {idle:,} idle keep-alive connections", "MiB", who,
              held / 1024, higher_is_better=False)
    per = (held - base) / max(answered, 1)
    board.add(AREA, "idle-per", "RSS per idle keep-alive connection, above before", "KiB", who,
              per, higher_is_better=False)
    print(f"  {who}: {held / 1024:.1f} MiB with {idle} idle keep-alive ({answered} answered), "
          f"{per:.2f} KiB/conn", flush=True)
    if answered < idle:
        board.note(AREA, f"{who}: {answered} of {idle} idle connections got an answer")


def _start(who: str, peers, tmp: Path, idle: int) -> tuple[Server | None, int]:
    if who != "muscipula":
        return start_other(who, "http", peers)
    server = start_muscipula(tmp, {"http": {}}, [(80, "tcp"), (443, "tcp")],
                             limits={"max_per_address": idle + 1000,
                                     "max_connections": idle + 1000})
    return server, server.port(80)


def run(board: Board, quick: bool, rounds: int, peers=None) -> None:
    if shutil.which("wrk") is None:
        board.note(AREA, "wrk is not installed (apt-get install wrk); skipped")
        return
    if "http" not in muscipula_services():
        board.note(AREA, "muscipula has no http service yet; only the others were measured")
    duration = 2.0 if quick else 10.0
    idle = 1000 if quick else 5000
    measure_rounds(board, AREA, rounds, contenders(peers),
                   lambda who, tmp: _start(who, peers, tmp, idle),
                   lambda who, server, port, r: measure(board, who, server, port, duration, idle))
