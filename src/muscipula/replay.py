"""Replaying a recorded transcript's client side, so real attacks become regression tests."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from muscipula import transcripts


def replay(path: Path, host: str, port: int, timeout: float = 5.0, fast: bool = False,
           connection: int | None = None) -> int:
    try:
        header, chunks = transcripts.read(path, connection)
    except (OSError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    udp = header.get("connection", {}).get("transport") == "udp"
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    sock.settimeout(timeout)
    out = sys.stdout.buffer
    try:
        sock.connect((host, port))
        start = time.monotonic()
        sock.setblocking(False)
        for offset, direction, data in chunks:
            if direction != "in":
                continue
            if not fast:
                while (wait := offset - (time.monotonic() - start)) > 0:
                    _drain(sock, out, min(wait, 0.05))
            sock.sendall(data) if not udp else sock.send(data)
            _drain(sock, out, 0.01)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _drain(sock, out, 0.1) is None:
                break
    except OSError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    finally:
        sock.close()
        out.flush()
    return 0


def _drain(sock: socket.socket, out, wait: float) -> bool | None:
    """Print what arrived within `wait`; None once the server closed."""
    import select

    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return False
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return None
    if not data:
        return None
    out.write(data)
    return True
