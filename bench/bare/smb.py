"""Bare SMB2: fixed NEGOTIATE answer, an NTLM challenge for the first SESSION_SETUP, success
for the second. Messages are framed by their 4-byte NetBIOS session header; nothing is parsed
beyond the command and whether the security blob holds an NTLM NEGOTIATE or AUTHENTICATE."""

from __future__ import annotations

import asyncio
import struct

from _common import BACKLOG, args, serve

MORE_PROCESSING = 0xC0000016
SESSION = 0x0000040000000001


def reply(command: int, status: int, message_id: bytes, body: bytes, session: int = 0) -> bytes:
    head = (b"\xfeSMB" + struct.pack("<HHIHHII", 64, 0, status, command, 1, 1, 0) + message_id
            + struct.pack("<IIQ", 0xFEFF, 0, session) + bytes(16))
    msg = head + body
    return struct.pack(">I", len(msg)) + msg


NEGOTIATE = (struct.pack("<HHHH", 65, 1, 0x0210, 0) + bytes(range(16))
             + struct.pack("<IIIIQQHHI", 1, 65536, 65536, 65536, 0, 0, 128, 0, 0))
_CHALLENGE = (b"NTLMSSP\0" + struct.pack("<IHHII", 2, 0, 0, 48, 0xE28A8215)
              + b"\x11\x22\x33\x44\x55\x66\x77\x88" + bytes(8) + struct.pack("<HHI", 0, 0, 48))
CHALLENGE = struct.pack("<HHHH", 9, 0, 72, len(_CHALLENGE)) + _CHALLENGE
ACCEPTED = struct.pack("<HHHH", 9, 0, 0, 0)


class Smb(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            size = int.from_bytes(self.buf[1:4], "big")
            if len(self.buf) < 4 + size:
                return
            msg, self.buf = self.buf[4:4 + size], self.buf[4 + size:]
            self.message(msg)

    def message(self, msg: bytes) -> None:
        if msg[:4] != b"\xfeSMB" or len(msg) < 64:
            self.transport.close()
            return
        command, message_id = struct.unpack_from("<H", msg, 12)[0], msg[24:32]
        if command == 0:
            self.transport.write(reply(0, 0, message_id, NEGOTIATE))
        elif command == 1 and b"NTLMSSP\0\x01" in msg:
            self.transport.write(reply(1, MORE_PROCESSING, message_id, CHALLENGE, SESSION))
        elif command == 1:
            self.transport.write(reply(1, 0, message_id, ACCEPTED, SESSION))
        else:
            self.transport.close()


if __name__ == "__main__":
    a = args(__doc__)
    serve(lambda loop: loop.create_server(Smb, a.host, a.port, backlog=BACKLOG))
