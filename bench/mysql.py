"""MySQL: PyMySQL failed logins/s (sequential and 50 threads) and simple queries/s.

Every connect passes ssl_disabled=True: PyMySQL otherwise spends ~45 ms of
client CPU per connect building a TLS context, and the figure would be the
client's. A failed login must end in error 1045; a query is `SELECT 1` on one
logged-in connection, back to back.
"""

from __future__ import annotations

from pathlib import Path

from lib import (
    HOST,
    Board,
    Server,
    contenders,
    measure_rounds,
    muscipula_services,
    one_and_many,
    sequential,
    start_muscipula,
    start_other,
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
    one_and_many(board, AREA, who, "failed logins", lambda: failed_login(port),
                 lambda: threaded(lambda: failed_login(port), 50, duration), duration,
                 "50 threads", "logins did not end in error 1045")


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
    if who != "muscipula":
        return start_other(who, "mysql", peers)
    server = start_muscipula(
        tmp, {"mysql": {"login": {"mode": "list", "users": {USER: PASSWORD}}}},
        [(3306, "tcp")], limits={"max_per_address": 1024})
    return server, server.port(3306)


def measure(board: Board, who: str, port: int, duration: float, round_no: int) -> None:
    measure_logins(board, who, port, duration)
    if who == "opencanary":
        if round_no == 0:
            board.note(AREA, "opencanary refuses every MySQL login: no query figure")
    else:
        # qeeqbox's default account is test/test
        creds = ("test", "test") if who == "qeeqbox" else (USER, PASSWORD)
        measure_queries(board, who, port, duration, *creds)


def run(board: Board, quick: bool, rounds: int, peers=None) -> None:
    if "mysql" not in muscipula_services():
        board.note(AREA, "muscipula has no mysql service yet; only the others were measured")
    duration = 1.5 if quick else 5.0
    measure_rounds(board, AREA, rounds, contenders(peers),
                   lambda who, tmp: _start(who, peers, tmp),
                   lambda who, server, port, r: measure(board, who, port, duration, r))
