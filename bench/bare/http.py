"""Bare HTTP: read up to the blank line, write one fixed response, keep the connection."""

from __future__ import annotations

import asyncio

from _common import BACKLOG, args, serve

BODY = b"<html><body><h1>It works!</h1></body></html>\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\n"
            b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(BODY)) + BODY


class Http(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        n = buf.count(b"\r\n\r\n")  # pipelined requests each get an answer
        if n:
            self.transport.write(RESPONSE * n)
            buf = buf[buf.rindex(b"\r\n\r\n") + 4:]
        self.buf = buf


if __name__ == "__main__":
    a = args(__doc__)
    serve(lambda loop: loop.create_server(Http, a.host, a.port, backlog=BACKLOG))
