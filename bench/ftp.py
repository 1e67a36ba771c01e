"""FTP sessions/s: connect, USER/PASS with wrong credentials, QUIT; sequential and 50 concurrent.

Spoken on the wire with plain sockets so that the client costs as little as
possible: a reply is read up to its final line (`NNN text`), multi-line banners
included. Sequential is one blocking client; concurrent is 50 clients on one
uvloop loop, each running sessions back to back.
"""

from __future__ import annotations

import asyncio
import re
import socket
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
    start_muscipula,
    start_other,
)

AREA = "ftp"
SCRIPT = (b"USER bench\r\n", b"PASS wrong-password\r\n", b"QUIT\r\n")
FINAL = re.compile(rb"(?:^|\n)\d{3} [^\n]*\n")


def _complete(buf: bytes) -> bool:
    return FINAL.search(buf) is not None


def session_sync(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=5) as s:
        for line in (None, *SCRIPT):
            if line is not None:
                s.sendall(line)
            buf = b""
            while not _complete(buf):
                chunk = s.recv(4096)
                if not chunk:
                    if line == SCRIPT[-1]:
                        return  # closed right after (or instead of) the 221
                    raise ConnectionError("closed early")
                buf += chunk


async def session_async(port: int) -> None:
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    try:
        await loop.sock_connect(s, (HOST, port))
        for line in (None, *SCRIPT):
            if line is not None:
                await loop.sock_sendall(s, line)
            buf = b""
            while not _complete(buf):
                chunk = await loop.sock_recv(s, 4096)
                if not chunk:
                    if line == SCRIPT[-1]:
                        return
                    raise ConnectionError("closed early")
                buf += chunk
    finally:
        s.close()


def measure(board: Board, who: str, port: int, duration: float) -> None:
    one_and_many(board, AREA, who, "sessions", lambda: session_sync(port),
                 lambda: run_async(concurrent(lambda: session_async(port), 50, duration)),
                 duration, "50 concurrent", "failed sessions")


def _start(who: str, peers, tmp: Path) -> tuple[Server | None, int]:
    if who != "muscipula":
        return start_other(who, "ftp", peers)
    server = start_muscipula(tmp, {"ftp": {}}, [(21, "tcp")], limits={"max_per_address": 1024})
    return server, server.port(21)


def run(board: Board, quick: bool, rounds: int, peers=None) -> None:
    if "ftp" not in muscipula_services():
        board.note(AREA, "muscipula has no ftp service yet; only the others were measured")
    duration = 1.5 if quick else 5.0
    measure_rounds(board, AREA, rounds, contenders(peers),
                   lambda who, tmp: _start(who, peers, tmp),
                   lambda who, server, port, r: measure(board, who, port, duration))
