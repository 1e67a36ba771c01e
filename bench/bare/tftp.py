"""Bare TFTP (RFC 1350): RRQ gets `--size` bytes from memory, WRQ is acked and dropped.

Each transfer runs on its own port, as the protocol says; a lost block is sent again
after a second.
"""

from __future__ import annotations

import asyncio
import struct

from _common import args, serve

BLOCK = 512


class Transfer(asyncio.DatagramProtocol):
    def __init__(self, peer: tuple[str, int], blob: bytes | None) -> None:
        self.peer = peer
        self.blob = blob  # None: receiving a WRQ
        self.last = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.blob is None:
            self.send(b"\x00\x04\x00\x00")
        else:
            self.block(1)

    def send(self, data: bytes) -> None:
        self.last = data
        self.transport.sendto(data, self.peer)
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(1.0, self.resend)

    def resend(self) -> None:
        self.transport.sendto(self.last, self.peer)
        self.timer = asyncio.get_running_loop().call_later(1.0, self.resend)

    def block(self, n: int) -> None:
        assert self.blob is not None
        self.send(struct.pack("!HH", 3, n & 0xFFFF) + self.blob[(n - 1) * BLOCK:n * BLOCK])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr != self.peer or len(data) < 4:
            return
        op, n = struct.unpack("!HH", data[:4])
        if self.blob is not None and op == 4:
            if n * BLOCK > len(self.blob):
                self.done()
            else:
                self.block(n + 1)
        elif self.blob is None and op == 3:
            self.send(struct.pack("!HH", 4, n))
            if len(data) - 4 < BLOCK:
                self.done()

    def done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport.close()


class Tftp(asyncio.DatagramProtocol):
    def __init__(self, host: str, blob: bytes) -> None:
        self.host = host
        self.blob = blob

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        op = data[:2]
        if op in (b"\x00\x01", b"\x00\x02"):
            blob = self.blob if op == b"\x00\x01" else None
            asyncio.get_running_loop().create_task(
                asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: Transfer(addr, blob), local_addr=(self.host, 0)))


if __name__ == "__main__":
    a = args(__doc__, size=int)
    blob = bytes(range(256)) * (a.size // 256 + 1)
    serve(lambda loop: loop.create_datagram_endpoint(lambda: Tftp(a.host, blob[:a.size]),
                                                     local_addr=(a.host, a.port)))
