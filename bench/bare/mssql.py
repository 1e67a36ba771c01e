"""Bare MSSQL (TDS 7.4): fixed PRELOGIN answer; user `bench` gets LOGINACK, anyone else 18456.

After a login, every SQL batch gets one fixed INT row, so that both the
failed-login and the `SELECT 1` benchmarks have a floor to compare with.
"""

from __future__ import annotations

import asyncio
import struct

from _common import BACKLOG, args, serve


def packet(payload: bytes) -> bytes:
    """One reply packet (type 4, end of message)."""
    return struct.pack(">BBHHBB", 4, 1, len(payload) + 8, 0, 1, 0) + payload


def _done(count: int = 0, status: int = 0) -> bytes:
    return b"\xfd" + struct.pack("<HHQ", status, 0xC1 if count else 0, count)


PRELOGIN = packet(b"\x00\x00\x1a\x00\x06\x01\x00\x20\x00\x01\x02\x00\x21\x00\x01"
                  b"\x03\x00\x22\x00\x00\x04\x00\x22\x00\x01\xff"
                  b"\x0f\x00\x10\x7a\x00\x00" b"\x02" b"\x00" b"\x00")
_PROG = "Microsoft SQL Server".encode("utf-16-le")
_ACK = b"\x01\x74\x00\x00\x04" + bytes([len(_PROG) // 2]) + _PROG + b"\x0f\x00\x10\x7a"
LOGIN_OK = packet(b"\xad" + struct.pack("<H", len(_ACK)) + _ACK + _done())


def _denied(user: bytes) -> bytes:
    msg = f"Login failed for user '{user.decode('utf-16-le', 'replace')}'.".encode("utf-16-le")
    server = "SQL01".encode("utf-16-le")
    body = (struct.pack("<iBBH", 18456, 1, 14, len(msg) // 2) + msg
            + bytes([len(server) // 2]) + server + b"\x00" + struct.pack("<i", 1))
    return packet(b"\xaa" + struct.pack("<H", len(body)) + body + _done(status=2))


ROW = packet(b"\x81\x01\x00" + b"\x00\x00\x00\x00" + b"\x01\x00" + b"\x26\x04" + b"\x00"
             + b"\xd1\x04" + struct.pack("<i", 1) + _done(1, 0x10))


class Mssql(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 8:
            size = int.from_bytes(self.buf[2:4], "big")
            if size < 8 or len(self.buf) < size:
                return
            kind, body = self.buf[0], self.buf[8:size]
            self.buf = self.buf[size:]
            self.message(kind, body)

    def message(self, kind: int, body: bytes) -> None:
        if kind == 0x12:
            self.transport.write(PRELOGIN)
        elif kind == 0x10:
            at, n = struct.unpack("<HH", body[40:44])
            user = body[at:at + 2 * n]
            if user == "bench".encode("utf-16-le"):
                self.transport.write(LOGIN_OK)
            else:
                self.transport.write(_denied(user))
                self.transport.close()
        elif kind == 0x01:
            self.transport.write(ROW)
        else:
            self.transport.close()


if __name__ == "__main__":
    a = args(__doc__)
    serve(lambda loop: loop.create_server(Mssql, a.host, a.port, backlog=BACKLOG))
