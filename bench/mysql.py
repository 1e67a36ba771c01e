"""MySQL: PyMySQL failed logins/s (sequential and 50 threads) and simple queries/s.

Every connect passes ssl_disabled=True: PyMySQL otherwise spends ~45 ms of
client CPU per connect building a TLS context, and the figure would be the
client's. A failed login must end in error 1045; a query is `SELECT 1` on one
logged-in connection, back to back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lib import (
    HOST,
    Board,
    Server,
    free_port,
    lost,
    muscipula_services,
    sequential,
    start_bare,
    start_muscipula,
    threaded,
)

AREA = "mysql"
USER, PASSWORD = "bench", "bench"


def failed_login(port: int) -> None:
    import pymysql

    try:
        conn = pymysql.connect(host=HOST, port=port, user="root", password="wrong-password",
                               ssl_disabled=True, connect_timeout=5, read_timeout=5)
    except pymysql.err.OperationalError as exc:
        if exc.args[0] != 1045:
            raise
        return
    conn.close()
    raise RuntimeError("the login was accepted")


def measure_logins(board: Board, who: str, port: int, duration: float) -> None:
    failed_login(port)
    seq = sequential(lambda: failed_login(port), duration)
    con = threaded(lambda: failed_login(port), 50, duration)
    board.add(AREA, "seq", "failed logins/s, sequential", "1/s", who, seq.rate)
    board.add(AREA, "c50", "failed logins/s, 50 threads", "1/s", who, con.rate)
    print(f"  {who}: {seq.rate:,.0f} failed logins/s sequential ({seq.errors} errors), "
          f"{con.rate:,.0f}/s with 50 threads ({con.errors} errors)", flush=True)
    if seq.errors or con.errors:
        board.note(AREA, f"{who}: {seq.errors + con.errors} logins did not end in error 1045")


def measure_queries(board: Board, who: str, port: int, duration: float,
                    user: str = USER, password: str = PASSWORD) -> None:
    import pymysql

    try:
        conn = pymysql.connect(host=HOST, port=port, user=user, password=password,
                               ssl_disabled=True, connect_timeout=5, read_timeout=5)
    except Exception as exc:
        board.note(AREA, f"{who}: no login for the query benchmark ({type(exc).__name__})")
        return
    with conn, conn.cursor() as cur:

        def query() -> None:
            cur.execute("SELECT 1")
            if cur.fetchall()[0][0] not in (1, "1"):
                raise RuntimeError("wrong answer")

        try:
            query()
        except Exception as exc:
            board.note(AREA, f"{who}: SELECT 1 failed ({type(exc).__name__}: {exc})")
            return
        q = sequential(query, duration)
    board.add(AREA, "q", "SELECT 1 queries/s, one connection", "1/s", who, q.rate)
    print(f"  {who}: {q.rate:,.0f} queries/s ({q.errors} errors)", flush=True)


def _start(who: str, peers, tmp: Path) -> tuple[Server | None, int]:
    if who == "bare":
        port = free_port()
        return start_bare("mysql", port), port
    if who == "muscipula":
        server = start_muscipula(
            tmp, {"mysql": {"login": {"mode": "list", "users": {USER: PASSWORD}}}},
            [(3306, "tcp")], limits={"max_per_address": 1024})
        return server, server.port(3306)
    port = free_port()
    if who == "opencanary":
        return peers.opencanary({"mysql": port}), port
    return peers.qeeqbox("mysql", port), port


def run(board: Board, quick: bool, rounds: int, peers=None) -> None:
    has = "mysql" in muscipula_services()
    if not has:
        board.note(AREA, "muscipula has no mysql service yet; only the others were measured")
    duration = 1.5 if quick else 5.0
    who_all = ["bare", "muscipula", *(["opencanary", "qeeqbox"] if peers else [])]
    for r in range(rounds):
        print(f"mysql round {r + 1}/{rounds}", flush=True)
        for who in who_all if r % 2 == 0 else reversed(who_all):
            if who == "muscipula" and not has:
                continue
            with tempfile.TemporaryDirectory(prefix="bench-mysql-") as tmp:
                server, port = _start(who, peers, Path(tmp))
                if server is None:
                    continue
                try:
                    with server:
                        measure_logins(board, who, port, duration)
                        if who == "opencanary":
                            if r == 0:
                                board.note(AREA, "opencanary refuses every MySQL login: "
                                                 "no query figure")
                        else:
                            # qeeqbox's default account is test/test
                            creds = ("test", "test") if who == "qeeqbox" else (USER, PASSWORD)
                            measure_queries(board, who, port, duration, *creds)
                except Exception as exc:
                    board.note(AREA, f"{who}: {type(exc).__name__}: {exc}")
                    continue
                if who == "muscipula":
                    board.add(AREA, "lost", "incidents lost", "count", who, lost(server),
                              higher_is_better=False)
