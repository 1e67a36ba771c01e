"""Bare blackhole: accept, keep the transport, discard every byte, never answer."""

from __future__ import annotations

import asyncio

from _common import BACKLOG, args, serve


class Hole(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass


if __name__ == "__main__":
    a = args(__doc__)
    serve(lambda loop: loop.create_server(Hole, a.host, a.port, backlog=BACKLOG))
