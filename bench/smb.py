"""SMB: NTLM logins/s over SMB2, sequential and 50 concurrent.

A login is what a scanner or worm does first on 445: connect, SMB2 NEGOTIATE (2.002 and
2.1), SESSION_SETUP with an NTLM NEGOTIATE (answered by a challenge), SESSION_SETUP with an
NTLMv2 AUTHENTICATE, then close. Raw sockets and messages built once (the AUTHENTICATE
only gets the session id of the challenge): a client library would cost more than the
server. A login counts when the last answer is success or a logon failure (the login
policy may refuse the first tries); muscipula must then hold one `logins` row for each.
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
    start_muscipula,
    start_other,
    unrecorded,
)

AREA = "smb"
MORE_PROCESSING, LOGON_FAILURE = 0xC0000016, 0xC000006D


def message(command: int, message_id: int, body: bytes, session: int = 0) -> bytes:
    """One SMB2 request in its NetBIOS session frame."""
    head = (b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ", 64, 0, 0, command, 31, 0, 0, message_id,
                                     0xFEFF, 0, session) + bytes(16))
    return struct.pack(">I", len(head) + len(body)) + head + body


def _session_setup(message_id: int, token: bytes, session: int = 0) -> bytes:
    body = struct.pack("<HBBIIHHQ", 25, 0, 1, 0, 0, 64 + 24, len(token), 0) + token
    return message(1, message_id, body, session)


def _authenticate(user: str, domain: str, host: str) -> bytes:
    """An NTLMv2 AUTHENTICATE (raw NTLMSSP, as Windows also takes it) with a fixed answer."""
    blob = b"\x01\x01" + bytes(6) + struct.pack("<Q", 133_000_000_000_000_000) + bytes(8) \
        + bytes(4) + b"\x00\x00\x00\x00"
    fields = [bytes(24), bytes(range(16)) + blob, domain.encode("utf-16-le"),
              user.encode("utf-16-le"), host.encode("utf-16-le"), b""]
    at, table, data = 64, b"", b""
    for raw in fields:
        table += struct.pack("<HHI", len(raw), len(raw), at + len(data))
        data += raw
    return b"NTLMSSP\0" + struct.pack("<I", 3) + table + struct.pack("<I", 0xE2088215) + data


NEGOTIATE = message(0, 0, struct.pack("<HHHHI", 36, 2, 1, 0, 0) + bytes(range(16)) + bytes(8)
                    + struct.pack("<HH", 0x0202, 0x0210))
NTLM_NEGOTIATE = _session_setup(1, b"NTLMSSP\0" + struct.pack("<II", 1, 0xE2088297) + bytes(16))
AUTHENTICATE = _authenticate("bench", "WORKGROUP", "WS01")


def _status(msg: bytes, want: tuple[int, ...]) -> None:
    if msg[:4] != b"\xfeSMB":
        raise RuntimeError("not an SMB2 answer")
    status = struct.unpack_from("<I", msg, 8)[0]
    if status not in want:
        raise RuntimeError(f"status {status:#x}, wanted {want}")


def _session(msg: bytes) -> int:
    return int(struct.unpack_from("<Q", msg, 40)[0])


def _read(s: socket.socket) -> bytes:
    head = _exactly(s, 4)
    return _exactly(s, int.from_bytes(head[1:4], "big"))


def _exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed mid-message")
        buf += chunk
    return buf


async def _read_async(loop: asyncio.AbstractEventLoop, s: socket.socket) -> bytes:
    head = await _exactly_async(loop, s, 4)
    return await _exactly_async(loop, s, int.from_bytes(head[1:4], "big"))


async def _exactly_async(loop: asyncio.AbstractEventLoop, s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await loop.sock_recv(s, n - len(buf))
        if not chunk:
            raise ConnectionError("closed mid-message")
        buf += chunk
    return buf


def _authenticate_for(challenge: bytes) -> bytes:
    return _session_setup(2, AUTHENTICATE, _session(challenge))


def login(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(NEGOTIATE)
        _status(_read(s), (0,))
        s.sendall(NTLM_NEGOTIATE)
        challenge = _read(s)
        _status(challenge, (MORE_PROCESSING,))
        s.sendall(_authenticate_for(challenge))
        _status(_read(s), (0, LOGON_FAILURE))


async def login_async(port: int) -> None:
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    try:
        await loop.sock_connect(s, (HOST, port))
        await loop.sock_sendall(s, NEGOTIATE)
        _status(await _read_async(loop, s), (0,))
        await loop.sock_sendall(s, NTLM_NEGOTIATE)
        challenge = await _read_async(loop, s)
        _status(challenge, (MORE_PROCESSING,))
        await loop.sock_sendall(s, _authenticate_for(challenge))
        _status(await _read_async(loop, s), (0, LOGON_FAILURE))
    finally:
        s.close()


def measure(board: Board, who: str, server: Server, port: int, duration: float) -> None:
    seq, con = one_and_many(
        board, AREA, who, "NTLM logins", lambda: login(port),
        lambda: run_async(concurrent(lambda: login_async(port), 50, duration)),
        duration, "50 concurrent", "logins did not complete")
    if who != "muscipula":
        return
    unrecorded(board, AREA, who, server, [
        ("logins", "SELECT count(*) FROM logins WHERE login_username = 'WORKGROUP\\bench'",
         1 + seq.count + con.count)])


def _start(who: str, peers, tmp: Path) -> tuple[Server | None, int]:
    if who == "opencanary":
        return None, 0  # it has no SMB listener of its own
    if who != "muscipula":
        return start_other(who, "smb", peers)
    server = start_muscipula(tmp, {"smb": {}}, [(445, "tcp"), (139, "tcp")])
    return server, server.port(445)


def run(board: Board, quick: bool, rounds: int, peers=None) -> None:
    if "smb" not in muscipula_services():
        board.note(AREA, "muscipula has no smb service yet; only the others were measured")
    if peers:
        board.note(AREA, "OpenCanary has no SMB listener of its own (it reads Samba's log)")
    duration = 2.0 if quick else 5.0
    measure_rounds(board, AREA, rounds, contenders(peers), lambda who, tmp: _start(who, peers, tmp),
                   lambda who, server, port, r: measure(board, who, server, port, duration))
