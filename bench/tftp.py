"""TFTP: 1 MiB transfers/s, RRQ (download) and WRQ (upload), RFC 1350 512-byte blocks.

One client, transfers back to back, lock-step as the protocol is; every
transfer is checked (size and, for RRQ, the bytes). The server answers from
its own transfer port, which the client follows, as real clients do.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from lib import (
    HOST,
    Board,
    Server,
    measure_rounds,
    muscipula_services,
    sequential,
    start_muscipula,
    start_other,
)

AREA = "tftp"
SIZE = 1024 * 1024
BLOCK = 512
NAME = "bench.bin"
BLOB = (bytes(range(256)) * (SIZE // 256 + 1))[:SIZE]


def _exchange(s: socket.socket, tid: list, last: bytes, to: tuple[str, int],
              tries: int = 6, wait: float = 0.5) -> tuple[int, int, bytes]:
    """The next packet from the transfer port; `last` is sent again after each silence."""
    for _ in range(tries):
        try:
            data, addr = s.recvfrom(65536)
        except TimeoutError:
            s.sendto(last, tid[0] or to)
            continue
        if tid[0] is None:
            tid[0] = addr
        elif addr != tid[0]:
            continue
        op, n = struct.unpack("!HH", data[:4])
        if op == 5:
            raise RuntimeError(f"TFTP error {n}: {data[4:-1]!r}")
        return op, n, data[4:]
    raise TimeoutError("no answer")


def rrq(port: int, name: str = NAME, expect: bytes = BLOB) -> None:
    to = (HOST, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        last = b"\x00\x01" + name.encode() + b"\x00octet\x00"
        s.sendto(last, to)
        tid: list = [None]
        want = 1
        parts: list[bytes] = []
        while True:
            op, n, payload = _exchange(s, tid, last, to)
            if op != 3:
                continue
            if n != want & 0xFFFF:
                s.sendto(struct.pack("!HH", 4, n), tid[0])  # a duplicate: acked, not kept
                continue
            last = struct.pack("!HH", 4, n)
            s.sendto(last, tid[0])
            parts.append(payload)
            want += 1
            if len(payload) < BLOCK:
                break
    if b"".join(parts) != expect:
        raise RuntimeError("RRQ returned other bytes")


def wrq(port: int, name: str = "upload.bin", blob: bytes = BLOB) -> None:
    to = (HOST, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        last = b"\x00\x02" + name.encode() + b"\x00octet\x00"
        s.sendto(last, to)
        tid: list = [None]
        blocks = len(blob) // BLOCK + 1
        n = 0
        while True:
            op, got, _ = _exchange(s, tid, last, to)
            if op != 4 or got != n & 0xFFFF:
                continue
            if n == blocks:
                return
            n += 1
            last = struct.pack("!HH", 3, n & 0xFFFF) + blob[(n - 1) * BLOCK:n * BLOCK]
            s.sendto(last, tid[0])


def root_key() -> str | None:
    """The tftp config key naming the directory RRQ serves from, whatever it is called."""
    from muscipula import services

    spec = services.get("tftp")
    if spec is None:
        return None
    fields = spec.config_model.model_fields
    for key in ("root", "root_dir", "rrq_root", "serve_root", "directory", "files"):
        if key in fields:
            return key
    return None


def measure(board: Board, who: str, port: int, duration: float, can_read: bool = True) -> None:
    if can_read:
        rrq(port)
        r = sequential(lambda: rrq(port), duration)
        board.add(AREA, "rrq", "1 MiB RRQ downloads/s", "1/s", who, r.rate)
        print(f"  {who}: {r.rate:,.1f} RRQ/s ({r.errors} errors)", flush=True)
        if r.errors:
            board.note(AREA, f"{who}: {r.errors} failed downloads")
    wrq(port)
    w = sequential(lambda: wrq(port), duration)
    board.add(AREA, "wrq", "1 MiB WRQ uploads/s", "1/s", who, w.rate)
    print(f"  {who}: {w.rate:,.1f} WRQ/s ({w.errors} errors)", flush=True)
    if w.errors:
        board.note(AREA, f"{who}: {w.errors} failed uploads")


def _muscipula(tmp: Path) -> tuple[Server, bool]:
    key = root_key()
    body: dict = {}
    if key is not None:
        root = tmp / "tftproot"
        root.mkdir()
        (root / NAME).write_bytes(BLOB)
        body[key] = str(root)
    server = start_muscipula(tmp, {"tftp": body}, [(69, "udp")])
    return server, key is not None


def _start(board: Board, who: str, tmp: Path) -> tuple[Server | None, int]:
    if who == "bare":
        return start_other("bare", "tftp", None, "udp", size=SIZE)
    server, can_read = _muscipula(tmp)
    server.extra["can_read"] = can_read
    if not can_read:
        board.note(AREA, "no RRQ root key found in the tftp config; RRQ skipped")
    return server, server.port(69)


def run(board: Board, quick: bool, rounds: int, peers=None) -> None:
    if "tftp" not in muscipula_services():
        board.note(AREA, "muscipula has no tftp service yet; only the bare server was measured")
    if peers:
        board.note(AREA, "no peer measured: OpenCanary's TFTP never replies, qeeqbox has no TFTP")
    duration = 1.5 if quick else 5.0
    measure_rounds(board, AREA, rounds, ["bare", "muscipula"],
                   lambda who, tmp: _start(board, who, tmp),
                   lambda who, server, port, r: measure(board, who, port, duration,
                                                        server.extra.get("can_read", True)))
