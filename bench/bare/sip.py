"""Bare SIP over UDP: a fixed answer to each datagram, read no further than its first line.

A REGISTER carrying no Authorization gets a fixed 401 challenge (so that the
digest round trip has a floor to compare with); every other datagram a fixed 200.
"""

from __future__ import annotations

import asyncio

from _common import args, serve

_HEAD = (b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK0;received=127.0.0.1\r\n"
         b"From: <sip:100@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>;tag=2\r\n"
         b"Call-ID: 1\r\nServer: PBX\r\n")
OK = (b"SIP/2.0 200 OK\r\n" + _HEAD + b"CSeq: 1 OPTIONS\r\n"
      b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REGISTER\r\nContent-Length: 0\r\n\r\n")
CHALLENGE = (b"SIP/2.0 401 Unauthorized\r\n" + _HEAD + b"CSeq: 1 REGISTER\r\n"
             b'WWW-Authenticate: Digest realm="asterisk",nonce="1700000000/0123456789abcdef",'
             b'algorithm=MD5,qop="auth"\r\nContent-Length: 0\r\n\r\n')


class Sip(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        challenge = data.startswith(b"REGISTER ") and b"\nAuthorization:" not in data
        self.transport.sendto(CHALLENGE if challenge else OK, addr)


if __name__ == "__main__":
    a = args(__doc__)
    serve(lambda loop: loop.create_datagram_endpoint(Sip, local_addr=(a.host, a.port)))
