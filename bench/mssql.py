"""MSSQL (TDS): failed logins/s sequential and 50 concurrent, and `SELECT 1` batches/s.

Raw sockets with packets built once: a real client library (pytds, FreeTDS)
would spend more of the machine than the server. A failed login is PRELOGIN
(encryption not supported), LOGIN7 with a wrong password, and the answer must
carry error 18456. The batch figure is `SELECT 1` back to back on one logged-in
connection, each answer checked for its one row.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

from lib import (
    HOST,
    Board,
    Server,
    concurrent,
    contenders,
    measure_rounds,
    muscipula_services,
    one_and_many,
    run_async,
    sequential,
    start_muscipula,
    start_other,
    unrecorded,
)

AREA = "mssql"
USER, PASSWORD = "bench", "bench"
DENIED = struct.pack("<i", 18456)


def packet(kind: int, payload: bytes) -> bytes:
    """One client packet of `kind`, end of message."""
    return struct.pack(">BBHHBB", kind, 1, len(payload) + 8, 0, 1, 0) + payload


def _prelogin() -> bytes:
    opts = [(0, b"\x0f\x00\x10\x7a\x00\x00"), (1, b"\x02"), (2, b"\x00"),
            (3, b"\x00\x00\x10\x00"), (4, b"\x00")]
    at = len(opts) * 5 + 1
    table, data = b"", b""
    for token, value in opts:
        table += struct.pack(">BHH", token, at + len(data), len(value))
        data += value
    return packet(0x12, table + b"\xff" + data)


def _password(text: str) -> bytes:
    return bytes((((b << 4) | (b >> 4)) & 0xFF) ^ 0xA5 for b in text.encode("utf-16-le"))


def _login7(user: str, password: str) -> bytes:
    """LOGIN7 for TDS 7.4, SQL authentication, as sqlcmd would send it."""
    fields = [x.encode("utf-16-le") if isinstance(x, str) else x for x in
              ("WS01", user, _password(password), "sqlcmd", "127.0.0.1", b"", "ODBC", "",
               "master")]
    at = 94
    table, data = b"", b""
    for raw in fields:
        table += struct.pack("<HH", at + len(data), len(raw) // 2 if raw else 0)
        data += raw
    end = at + len(data)
    fixed = (b"\x04\x00\x00\x74" + struct.pack("<IIII", 4096, 0x07000000, 4242, 0)
             + bytes([0xE0, 0x03, 0x00, 0x00]) + struct.pack("<iI", 0, 0x409))
    tail = b"\x00\x50\x56\x00\x00\x01" + struct.pack("<HHHHHHI", end, 0, end, 0, end, 0, 0)
    body = fixed + table + tail + data
    return packet(0x10, struct.pack("<I", len(body) + 4) + body)


PRELOGIN = _prelogin()
BAD_LOGIN = _login7("sa", "wrong-password")
GOOD_LOGIN = _login7(USER, PASSWORD)
SELECT1 = packet(0x01, struct.pack("<IIHQI", 22, 18, 2, 0, 1) + "SELECT 1".encode("utf-16-le"))


def _complete(buf: bytes) -> bool:
    """`buf` holds whole packets, the last of them ending the message."""
    at = 0
    while at + 8 <= len(buf):
        size = int.from_bytes(buf[at + 2:at + 4], "big")
        if size < 8:
            raise ConnectionError("bad TDS packet")
        if at + size > len(buf):
            return False
        if at + size == len(buf):
            return bool(buf[at + 1] & 1)
        at += size
    return False


def read_message(s: socket.socket) -> bytes:
    buf = b""
    while not _complete(buf):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-message")
        buf += chunk
    return buf


async def read_message_async(loop: asyncio.AbstractEventLoop, s: socket.socket) -> bytes:
    buf = b""
    while not _complete(buf):
        chunk = await loop.sock_recv(s, 65536)
        if not chunk:
            raise ConnectionError("closed mid-message")
        buf += chunk
    return buf


def _check_denied(reply: bytes) -> None:
    if b"\xaa" not in reply or DENIED not in reply:
        raise RuntimeError("the login did not end in error 18456")


def failed_login(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(PRELOGIN)
        read_message(s)
        s.sendall(BAD_LOGIN)
        _check_denied(read_message(s))


async def failed_login_async(port: int) -> None:
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    try:
        await loop.sock_connect(s, (HOST, port))
        await loop.sock_sendall(s, PRELOGIN)
        await read_message_async(loop, s)
        await loop.sock_sendall(s, BAD_LOGIN)
        _check_denied(await read_message_async(loop, s))
    finally:
        s.close()


def _has_one(reply: bytes) -> bool:
    return b"\xd1\x04\x01\x00\x00\x00" in reply or b"\xd1\x01\x00\x00\x00" in reply


def measure_logins(board: Board, who: str, port: int, duration: float) -> int:
    seq, con = one_and_many(
        board, AREA, who, "failed logins", lambda: failed_login(port),
        lambda: run_async(concurrent(lambda: failed_login_async(port), 50, duration)),
        duration, "50 concurrent", "logins did not end in error 18456")
    return 1 + seq.count + con.count


def measure_batches(board: Board, who: str, port: int, duration: float) -> int:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(PRELOGIN)
        read_message(s)
        s.sendall(GOOD_LOGIN)
        reply = read_message(s)
        if DENIED in reply or b"\xad" not in reply:
            raise RuntimeError("the login for the batch benchmark was refused")

        def batch() -> None:
            s.sendall(SELECT1)
            if not _has_one(read_message(s)):
                raise RuntimeError("SELECT 1 gave no row of 1")

        batch()
        q = sequential(batch, duration)
    board.add(AREA, "q", "SELECT 1 batches/s, one connection", "1/s", who, q.rate)
    print(f"  {who}: {q.rate:,.0f} SELECT 1 batches/s ({q.errors} errors)", flush=True)
    if q.errors:
        board.note(AREA, f"{who}: {q.errors} batches failed")
    return 1 + q.count


def measure(board: Board, who: str, server: Server, port: int, duration: float,
            round_no: int) -> None:
    logins = measure_logins(board, who, port, duration)
    batches = 0
    if who in ("opencanary", "qeeqbox"):
        if round_no == 0:
            board.note(AREA, f"{who} refuses every MSSQL login: no batch figure")
    else:
        batches = measure_batches(board, who, port, duration)
    if who == "muscipula":
        unrecorded(board, AREA, who, server, [
            ("logins", "SELECT count(*) FROM logins WHERE login_username = 'sa'", logins),
            ("mssql_commands", "SELECT count(*) FROM mssql_commands", batches)])


def _start(who: str, peers, tmp: Path) -> tuple[Server | None, int]:
    if who != "muscipula":
        return start_other(who, "mssql", peers)
    server = start_muscipula(
        tmp, {"mssql": {"tcp_ports": [1433],
                        "login": {"mode": "list", "users": {USER: PASSWORD}}}},
        [(1433, "tcp")], limits={"max_per_address": 1024})
    return server, server.port(1433)


def run(board: Board, quick: bool, rounds: int, peers=None) -> None:
    if "mssql" not in muscipula_services():
        board.note(AREA, "muscipula has no mssql service yet; only the others were measured")
    duration = 1.0 if quick else 4.0
    measure_rounds(board, AREA, rounds, contenders(peers),
                   lambda who, tmp: _start(who, peers, tmp),
                   lambda who, server, port, r: measure(board, who, server, port, duration, r))
