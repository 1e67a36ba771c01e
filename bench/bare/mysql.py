"""Bare MySQL: protocol 10 greeting; user `bench` gets OK, anyone else error 1045.

After a login, SET/ping get OK and any other query one fixed row, so that both
the failed-login and the simple-query benchmarks have a floor to compare with.
"""

from __future__ import annotations

import asyncio
import os
import struct

from _common import BACKLOG, args, serve

CAPS = (0x1 | 0x2 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x20000 | 0x80000 | 0x100000
        | 0x200000)


def packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def lenenc(data: bytes) -> bytes:
    return bytes([len(data)]) + data  # all our strings are short


def greeting(thread: int) -> bytes:
    salt = os.urandom(20)
    return packet(0, b"\x0a8.0.36\x00" + struct.pack("<I", thread) + salt[:8] + b"\x00"
                  + struct.pack("<HBHH", CAPS & 0xFFFF, 0xFF, 0x0002, CAPS >> 16)
                  + b"\x15" + b"\x00" * 10 + salt[8:] + b"\x00mysql_native_password\x00")


def ok(seq: int) -> bytes:
    return packet(seq, b"\x00\x00\x00\x02\x00\x00\x00")


def eof(seq: int) -> bytes:
    return packet(seq, b"\xfe\x00\x00\x02\x00")


ROW = (packet(1, b"\x01")
       + packet(2, lenenc(b"def") + b"\x00\x00\x00" + lenenc(b"1") + b"\x00\x0c"
                + struct.pack("<HIBHB", 63, 1, 0x08, 0x81, 0) + b"\x00\x00")
       + eof(3) + packet(4, lenenc(b"1")) + eof(5))


class Mysql(asyncio.Protocol):
    threads = 1000

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""
        self.authed = False
        Mysql.threads += 1
        transport.write(greeting(Mysql.threads))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            size = int.from_bytes(self.buf[:3], "little")
            if len(self.buf) < 4 + size:
                return
            seq, body = self.buf[3], self.buf[4:4 + size]
            self.buf = self.buf[4 + size:]
            self.packet(seq, body)

    def packet(self, seq: int, body: bytes) -> None:
        if not self.authed:
            user = body[32:body.find(b"\x00", 32)]
            if user == b"bench":
                self.authed = True
                self.transport.write(ok(seq + 1))
            else:
                msg = b"Access denied for user '%s'@'localhost' (using password: YES)" % user
                self.transport.write(packet(seq + 1, b"\xff\x15\x04#28000" + msg))
                self.transport.close()
            return
        cmd = body[:1]
        if cmd == b"\x01":
            self.transport.close()
        elif cmd == b"\x03" and not body[1:4].upper().startswith(b"SET"):
            self.transport.write(ROW)
        else:
            self.transport.write(ok(1))


if __name__ == "__main__":
    a = args(__doc__)
    serve(lambda loop: loop.create_server(Mysql, a.host, a.port, backlog=BACKLOG))
