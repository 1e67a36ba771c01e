"""The one datagram driver: a machine per remote (address, port) on a UDP listener."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from muscipula.incidents import Connection
from muscipula.machine import Peer
from muscipula.net.runtime import ServiceRuntime
from muscipula.net.session import Session
from muscipula.net.stream import addr_pair

log = logging.getLogger(__name__)


class UdpPeer(Session):
    """A pseudo-connection: every datagram from one remote address and port."""

    __slots__ = ("addr", "driver")

    def __init__(self, driver: DatagramDriver, addr: tuple[str, int], conn: Connection,
                 machine: Any, now: float) -> None:
        super().__init__(driver.rt, conn, machine, now)
        self.driver = driver
        self.addr = addr

    def _send(self, data: bytes, addr: tuple[str, int] | None) -> None:
        transport = self.driver.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, addr or self.addr)

    def _close(self, abort: bool) -> None:
        self.driver.drop(self.addr, "closed")


class DatagramDriver(asyncio.DatagramProtocol):
    def __init__(self, rt: ServiceRuntime) -> None:
        self.rt = rt
        self.transport: asyncio.DatagramTransport | None = None
        self.peers: dict[tuple[str, int], UdpPeer] = {}
        self.local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.local = addr_pair(transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        key = addr_pair(addr)
        peer = self.peers.get(key)
        if peer is None:
            peer = self._new_peer(key)
            if peer is None:
                return
        if not peer.count_in(len(data)):
            return
        peer.record(0, data)
        peer.call("receive", data)

    def _new_peer(self, key: tuple[str, int]) -> UdpPeer | None:
        rt = self.rt
        if len(self.peers) >= rt.limits.max_udp_peers:
            # Make room by closing the peer that was quiet the longest.
            oldest = min(self.peers.values(), key=lambda p: p.last_active)
            oldest.limit("max_udp_peers", rt.limits.max_udp_peers)
        now = time.time()
        conn = Connection(
            id=rt.shared.next_id(), transport="udp", protocol=rt.protocol, type="accept",
            local_host=self.local[0], local_port=self.local[1], remote_host=key[0],
            remote_port=key[1], service=rt.name, start=now,
        )
        try:
            machine = rt.factory(Peer(conn.local_host, conn.local_port, conn.remote_host,
                                      conn.remote_port, "udp"))
        except Exception:
            log.exception("%s: cannot make a machine", rt.name)
            return None
        peer = UdpPeer(self, key, conn, machine, now)
        self.peers[key] = peer
        rt.shared.sessions.add(peer)
        rt.shared.bus.emit("connection.udp.accept", conn.id, {"connection": conn})
        peer.call("start")
        return peer if not peer.closing else None

    def drop(self, key: tuple[str, int], reason: str) -> None:
        peer = self.peers.pop(key, None)
        if peer is not None:
            peer.finish(reason)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable for a peer we answered; nothing to do but go on.
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        for key in list(self.peers):
            self.drop(key, "shutdown")
