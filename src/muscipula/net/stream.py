"""The one stream driver: TCP and TLS connections for every protocol."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

from muscipula.incidents import Bus, Connection
from muscipula.machine import Peer
from muscipula.net.runtime import ServiceRuntime
from muscipula.net.session import Session
from muscipula.net.tls import TlsLayer

log = logging.getLogger(__name__)


def addr_pair(sockaddr: Any) -> tuple[str, int]:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return "", 0


class StreamDriver(Session, asyncio.Protocol):
    """Feeds one TCP/TLS connection's bytes to its machine and carries out the answers."""

    __slots__ = ("admitted", "held_data", "implicit_tls", "tls", "transport")

    def __init__(self, rt: ServiceRuntime, implicit_tls: bool = False) -> None:
        # Session state is filled in connection_made, when the addresses are known.
        self.rt = rt
        self.implicit_tls = implicit_tls
        self.tls: TlsLayer | None = None
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.closing = False
        self.close_reason = ""
        #: a chunk read while the sinks were congested, fed when they caught up
        self.held_data: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        rt = self.rt
        remote = addr_pair(transport.get_extra_info("peername"))
        local = addr_pair(transport.get_extra_info("sockname"))
        now = time.time()
        conn = Connection(
            id=rt.shared.next_id(), transport="tls" if self.implicit_tls else "tcp",
            protocol=rt.protocol, type="accept", local_host=local[0], local_port=local[1],
            remote_host=remote[0], remote_port=remote[1], service=rt.name, start=now,
        )
        refused = rt.shared.caps.admit(conn.remote_host, rt.limits.max_per_address)
        if refused:
            rt.shared.bus.emit("connection.refused", conn.id, {
                "limit": refused, "remote_host": conn.remote_host,
                "remote_port": conn.remote_port})
            self.closing = True
            transport.abort()
            return
        self.admitted = True
        peer = Peer(conn.local_host, conn.local_port, conn.remote_host, conn.remote_port,
                    conn.transport)
        try:
            machine = rt.factory(peer)
        except Exception:
            log.exception("%s: cannot make a machine", rt.name)
            rt.shared.caps.release(conn.remote_host)
            self.admitted = False
            transport.abort()
            return
        Session.__init__(self, rt, conn, machine, now)
        rt.shared.sessions.add(self)
        rt.shared.bus.emit(f"connection.{conn.transport}.accept", conn.id, {"connection": conn})
        if self.implicit_tls:
            self.tls = TlsLayer(rt.ssl_context())
        self.call("start")

    def data_received(self, data: bytes) -> None:
        bus = self.rt.shared.bus
        if bus.congested and self._hold(bus, data):
            return
        if self.tls is None:
            self.received(data)
        elif self.closing or not self.count_in(len(data)):
            return
        else:
            self._tls_in(data)
        if bus.congested:
            self._hold(bus, None)

    def _hold(self, bus: Bus, data: bytes | None) -> bool:
        """Stop reading until the sinks caught up; a chunk not yet fed waits with us."""
        transport = self.transport
        if self.closing or transport is None or transport.is_closing():
            return False
        self.held_data = data
        transport.pause_reading()
        bus.hold(self)
        return True

    def resume(self) -> None:
        """The sinks caught up (see Bus.hold)."""
        transport = self.transport
        if self.closing or transport is None or transport.is_closing():
            return
        data, self.held_data = self.held_data, None
        transport.resume_reading()
        if data is not None:
            self.data_received(data)

    def _tls_in(self, data: bytes) -> None:
        tls = self.tls
        assert tls is not None
        if self.implicit_tls and (tls.plain or (not tls.hello_done and not tls.hello_buf
                                                and tls.looks_plain(data[0]))):
            # not TLS at all (plain HTTP sent to 443): the machine answers as its server does
            tls.plain = True
            self.record(0, data)
            self.call("plain_on_tls", data)
            return
        if not tls.hello_done:
            hello = tls.take_hello(data)
            if hello is not None:
                self.emit("connection.tls.hello", hello.fields())
        try:
            plain, out = tls.feed(data)
        except ssl.SSLError as exc:
            self.emit("connection.tls.error", {"error": exc.reason or str(exc)})
            alert = tls.pending()
            if alert and self.transport is not None:
                # the alert OpenSSL wrote (protocol_version, handshake_failure) is what a
                # real server sends before closing; scanners recognise TLS by it
                self.transport.write(alert)
                self.close(abort=False, reason="tls error")
            else:
                self.close(abort=True, reason="tls error")
            return
        if out and self.transport is not None:
            self.transport.write(out)
        if plain:
            self.record(0, plain)
            self.call("receive", plain)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.rt.shared.caps.release(self.conn.remote_host)
        self.finish("closed" if exc is None else "reset")

    # ---------------------------------------------------------- Session hooks

    def _send(self, data: bytes, addr: tuple[str, int] | None) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.tls is not None:
            try:
                data = self.tls.encrypt(data)
            except ssl.SSLError:
                self.close(abort=True, reason="tls error")
                return
        transport.write(data)
        if transport.get_write_buffer_size() > self.rt.limits.max_buffered_out:
            self.limit("max_buffered_out", self.rt.limits.max_buffered_out)

    def _close(self, abort: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        if abort:
            transport.abort()
            return
        tls = self.tls
        if tls is not None and tls.handshaken and not tls.plain and not transport.is_closing():
            # as nginx and SChannel do: without close_notify, OpenSSL 3 clients take the
            # end for a truncation attack and drop the answer they were reading
            try:
                transport.write(tls.close_notify())
            except ssl.SSLError:
                pass
        transport.close()

    def _start_tls(self, data: bytes) -> None:
        if self.tls is None:
            self.tls = TlsLayer(self.rt.ssl_context())
            self.conn.transport = "tls"
        if data:
            self._tls_in(data)


def factory(rt: ServiceRuntime, implicit_tls: bool) -> Any:
    return lambda: StreamDriver(rt, implicit_tls)
