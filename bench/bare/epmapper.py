"""Bare DCE/RPC on TCP: a fixed bind_ack (context accepted, NDR) for a bind, a fixed
ServerAlive2 response for a request. PDUs are framed by their frag_length; nothing is parsed
beyond the PDU type, and the call id is copied into the answer."""

from __future__ import annotations

import asyncio
import struct

from _common import BACKLOG, args, serve

BIND, REQUEST, RESPONSE, BIND_ACK = 11, 0, 2, 12
NDR = bytes.fromhex("045d888aeb1cc9119fe808002b104860")


def pdu(ptype: int, body: bytes) -> bytes:
    """A PDU with call id 0 (patched per call), first and last fragment."""
    return struct.pack("<BBBBIHHI", 5, 0, ptype, 0x03, 0x10, 16 + len(body), 0, 0) + body


def _strings() -> bytes:
    names = b"".join(struct.pack("<H", 7) + n.encode("utf-16-le") + b"\0\0"
                     for n in ("HOST1", "127.0.0.1")) + b"\0\0"
    security = b"".join(struct.pack("<HH", s, 0xFFFF) + b"\0\0" for s in (9, 10)) + b"\0\0"
    return struct.pack("<IHH", (len(names) + len(security)) // 2,
                       (len(names) + len(security)) // 2, len(names) // 2) + names + security


_STUB = struct.pack("<HHI", 5, 7, 0x20000) + _strings()
_STUB += bytes(-len(_STUB) % 4) + bytes(8)  # pReserved, S_OK
ACK = pdu(BIND_ACK, struct.pack("<HHIH", 5840, 5840, 0x1234, 4) + b"135\0" + bytes(2)
          + struct.pack("<B3xHH", 1, 0, 0) + NDR + struct.pack("<I", 2))
ALIVE = pdu(RESPONSE, struct.pack("<IHBB", len(_STUB), 0, 0, 0) + _STUB)


class Rpc(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 16:
            size = int.from_bytes(self.buf[8:10], "little")
            if size < 16:
                self.transport.close()
                return
            if len(self.buf) < size:
                return
            msg, self.buf = self.buf[:size], self.buf[size:]
            answer = ACK if msg[2] == BIND else ALIVE if msg[2] == REQUEST else None
            if answer is None:
                self.transport.close()
                return
            self.transport.write(answer[:12] + msg[12:16] + answer[16:])


if __name__ == "__main__":
    a = args(__doc__)
    serve(lambda loop: loop.create_server(Rpc, a.host, a.port, backlog=BACKLOG))
