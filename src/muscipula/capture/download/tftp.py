"""TFTP fetches (RFC 1350 RRQ, octet): a small asyncio client of our own.

tftpy is blocking and would take any peer's answer; here the request goes to the checked
address, the server's transfer port (TID) is learnt from its first DATA, and every
datagram from anywhere else is ignored. A packet unanswered for `tftp_timeout` is sent
again, at most `tftp_retries` times in a row.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from muscipula.capture.download.body import Body
from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.policy import Policy, address
from muscipula.capture.download.target import Target
from muscipula.config import Download

BLOCK = 512
MAX_QUEUED = 64
RRQ, DATA, ACK, ERROR = 1, 3, 4, 5


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if self.queue.qsize() < MAX_QUEUED:
            self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        pass


def _error(code: int, text: bytes) -> bytes:
    return struct.pack("!HH", ERROR, code) + text + b"\x00"


async def fetch(target: Target, cfg: Download, policy: Policy, body: Body) -> None:
    addrs = await policy.resolve(target.host, target.port, socket.SOCK_DGRAM,
                                 cfg.connect_timeout)
    ip = addrs[0]
    server_ip = address(ip)
    family = socket.AF_INET6 if server_ip.version == 6 else socket.AF_INET
    loop = asyncio.get_running_loop()
    try:
        transport, inbox = await loop.create_datagram_endpoint(_Inbox, family=family,
                                                               local_addr=None,
                                                               remote_addr=None)
    except OSError as exc:
        raise FetchError("connect", str(exc)) from None
    try:
        filename = target.path.encode("utf-8", "surrogateescape")
        packet = struct.pack("!H", RRQ) + filename + b"\x00octet\x00"
        dest: tuple[str, int] = (ip, target.port)
        tid: tuple[str, int] | None = None
        expect, tries = 1, 0
        transport.sendto(packet, dest)
        body.open()
        while True:
            try:
                data, addr = await asyncio.wait_for(inbox.queue.get(), cfg.tftp_timeout)
            except TimeoutError:
                tries += 1
                if tries > cfg.tftp_retries:
                    raise FetchError("timeout", f"no TFTP answer to block {expect}") from None
                transport.sendto(packet, dest)
                continue
            try:
                if address(addr[0]) != server_ip:
                    continue
            except ValueError:
                continue
            if tid is not None and addr[1] != tid[1]:
                transport.sendto(_error(5, b"Unknown transfer ID"), addr)
                continue
            if len(data) < 4:
                continue
            opcode, number = struct.unpack("!HH", data[:4])
            if opcode == ERROR:
                text = data[4:].split(b"\x00", 1)[0][:200].decode("latin-1")
                raise FetchError("status", f"TFTP error {number}: {text}")
            if opcode != DATA:
                continue
            if tid is None:
                if number != 1:
                    continue
                tid = dest = addr
            if number == expect:
                tries = 0
                payload = data[4:]
                kept = body.write(payload)
                if not kept:
                    transport.sendto(_error(3, b"Disk full or allocation exceeded"), dest)
                    return
                packet = struct.pack("!HH", ACK, number)
                transport.sendto(packet, dest)
                if len(payload) < BLOCK:
                    return
                expect = (expect + 1) & 0xFFFF
            elif number == (expect - 1) & 0xFFFF:
                transport.sendto(packet, dest)  # our ACK was lost: say it again
    finally:
        transport.close()
