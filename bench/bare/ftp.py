"""Bare FTP: banner, 331 for USER, 530 for PASS, 221 and close for QUIT, 500 otherwise."""

from __future__ import annotations

import asyncio

from _common import BACKLOG, args, serve

REPLIES = {b"USER": b"331 Please specify the password.\r\n",
           b"PASS": b"530 Login incorrect.\r\n",
           b"QUIT": b"221 Goodbye.\r\n"}


class Ftp(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""
        transport.write(b"220 (vsFTPd 3.0.3)\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            verb = line.split(b" ", 1)[0].strip().upper()
            self.transport.write(REPLIES.get(verb, b"500 Unknown command.\r\n"))
            if verb == b"QUIT":
                self.transport.close()
                return


if __name__ == "__main__":
    a = args(__doc__)
    serve(lambda loop: loop.create_server(Ftp, a.host, a.port, backlog=BACKLOG))
