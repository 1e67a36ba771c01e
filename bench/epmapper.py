"""Endpoint mapper (DCE/RPC over TCP 135): ServerAlive2 calls/s, sequential and 50 concurrent.

A call is what a scanner does on 135 to learn a Windows host's name and addresses: connect,
bind to IOXIDResolver (v0.0, NDR), request ServerAlive2 (opnum 5, empty stub), read the
answer, close. Raw sockets and PDUs built once: a client library (impacket) would cost more
than the server. A call counts when the bind is accepted and the answer is a response whose
stub ends in S_OK; muscipula must then hold one `dcerpcrequests` row (opnum 5) for each.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid
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

AREA = "epmapper"
REQUEST, RESPONSE, BIND, BIND_ACK = 0, 2, 11, 12
OXID_RESOLVER = "99fcfec4-5260-101b-bbcb-00aa0021347a"
NDR = "8a885d04-1ceb-11c9-9fe8-08002b104860"
SERVER_ALIVE2 = 5


def pdu(ptype: int, call_id: int, body: bytes) -> bytes:
    """One connection-oriented DCE/RPC PDU, first and last fragment, little-endian NDR."""
    return struct.pack("<BBBBIHHI", 5, 0, ptype, 0x03, 0x10, 16 + len(body), 0, call_id) + body


def _bind(interface: str, version: tuple[int, int]) -> bytes:
    context = (struct.pack("<HBB", 0, 1, 0) + uuid.UUID(interface).bytes_le
               + struct.pack("<HH", *version) + uuid.UUID(NDR).bytes_le + struct.pack("<I", 2))
    return pdu(BIND, 1, struct.pack("<HHIB3x", 5840, 5840, 0, 1) + context)


BIND_OXID = _bind(OXID_RESOLVER, (0, 0))
ALIVE2 = pdu(REQUEST, 2, struct.pack("<IHH", 0, 0, SERVER_ALIVE2))


def _accepted(ack: bytes) -> None:
    """A bind_ack whose first (only) context result is acceptance."""
    if ack[2] != BIND_ACK:
        raise RuntimeError(f"bind answered with PDU type {ack[2]}")
    at = 26 + struct.unpack_from("<H", ack, 24)[0]  # past the secondary address
    at += -at % 4
    if ack[at] < 1 or struct.unpack_from("<H", ack, at + 4)[0] != 0:
        raise RuntimeError("the bind's context was not accepted")


def _alive(answer: bytes) -> None:
    """A response to call 2 whose stub ends in S_OK."""
    if answer[2] != RESPONSE or struct.unpack_from("<I", answer, 12)[0] != 2:
        raise RuntimeError(f"ServerAlive2 answered with PDU type {answer[2]}")
    if answer[-4:] != bytes(4) or len(answer) < 24 + 8:
        raise RuntimeError("ServerAlive2 did not succeed")


def _read(s: socket.socket) -> bytes:
    head = _exactly(s, 16)
    return head + _exactly(s, struct.unpack_from("<H", head, 8)[0] - 16)


def _exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed mid-PDU")
        buf += chunk
    return buf


async def _read_async(loop: asyncio.AbstractEventLoop, s: socket.socket) -> bytes:
    head = await _exactly_async(loop, s, 16)
    return head + await _exactly_async(loop, s, struct.unpack_from("<H", head, 8)[0] - 16)


async def _exactly_async(loop: asyncio.AbstractEventLoop, s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await loop.sock_recv(s, n - len(buf))
        if not chunk:
            raise ConnectionError("closed mid-PDU")
        buf += chunk
    return buf


def call(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(BIND_OXID)
        _accepted(_read(s))
        s.sendall(ALIVE2)
        _alive(_read(s))


async def call_async(port: int) -> None:
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    try:
        await loop.sock_connect(s, (HOST, port))
        await loop.sock_sendall(s, BIND_OXID)
        _accepted(await _read_async(loop, s))
        await loop.sock_sendall(s, ALIVE2)
        _alive(await _read_async(loop, s))
    finally:
        s.close()


def measure(board: Board, who: str, server: Server, port: int, duration: float) -> None:
    seq, con = one_and_many(
        board, AREA, who, "ServerAlive2 calls", lambda: call(port),
        lambda: run_async(concurrent(lambda: call_async(port), 50, duration)),
        duration, "50 concurrent", "calls did not end in a ServerAlive2 answer")
    if who != "muscipula":
        return
    unrecorded(board, AREA, who, server, [
        ("dcerpcrequests", "SELECT count(*) FROM dcerpcrequests WHERE dcerpcrequest_opnum = "
         f"{SERVER_ALIVE2} AND lower(dcerpcrequest_uuid) = '{OXID_RESOLVER}'",
         1 + seq.count + con.count)])


def _start(who: str, tmp: Path) -> tuple[Server | None, int]:
    if who in ("opencanary", "qeeqbox"):
        return None, 0  # neither has an endpoint mapper
    if who != "muscipula":
        return start_other(who, "epmapper", None)
    server = start_muscipula(tmp, {"epmapper": {}}, [(135, "tcp")])
    return server, server.port(135)


def run(board: Board, quick: bool, rounds: int, peers=None) -> None:
    if "epmapper" not in muscipula_services():
        board.note(AREA, "muscipula has no epmapper service yet; only the others were measured")
    if peers:
        board.note(AREA, "OpenCanary and qeeqbox honeypots have no endpoint mapper (TCP 135)")
    board.note(AREA, "dionaea has one, but is not installable here (BENCH.md): not measured")
    duration = 1.0 if quick else 5.0
    measure_rounds(board, AREA, rounds, contenders(peers), _start,
                   lambda who, server, port, r: measure(board, who, server, port, duration))
