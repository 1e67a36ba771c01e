"""Child channels of a session: FTP data connections, TFTP transfer ports, RTP.

A child is its own connection record (parent and root set) with its own
incidents, but its bytes go to the parent's machine as ChildData events and
count against the parent's limits. Outgoing connects go only to the parent's
own remote address (no FTP bounce), and listeners only accept that address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from typing import Any

from muscipula.incidents import Connection
from muscipula.machine import (
    ChildClose,
    ChildClosed,
    ChildConnect,
    ChildConnected,
    ChildData,
    ChildListen,
    ChildListening,
    ChildSend,
)
from muscipula.net.session import Session
from muscipula.net.stream import addr_pair
from muscipula.net.tls import TlsLayer

log = logging.getLogger(__name__)


class Child:
    """Bookkeeping for one tag: its listener or transport and its connection record."""

    __slots__ = ("conn", "listener", "pending", "session", "tag", "timer", "tls", "tls_timeout",
                 "transport", "transport_kind")

    def __init__(self, session: Session, tag: str, transport_kind: str,
                 tls: bool = False, tls_timeout: float | None = None) -> None:
        self.session = session
        self.tag = tag
        self.transport_kind = transport_kind
        self.tls = tls
        self.tls_timeout = tls_timeout
        self.listener: asyncio.AbstractServer | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.conn: Connection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.pending: list[bytes] = []

    def stop_listening(self) -> None:
        """The one expected peer arrived (or we give up): no more accepts, no timeout."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def close(self, force: bool = False) -> None:
        self.stop_listening()
        if self.transport is not None:
            proto = self.transport.get_protocol()
            if isinstance(proto, _ChildStream) and proto.tls is not None and not force:
                proto.shutdown()  # TLS data waits for its handshake, then close_notify
            else:
                self.transport.close()
            self.transport = None


def _record(session: Session, kind: str, transport: str, local: tuple[str, int],
            remote: tuple[str, int], protocol: str) -> Connection:
    parent = session.conn
    conn = Connection(
        id=session.rt.shared.next_id(), transport=transport,
        protocol=protocol or parent.protocol, type=kind, local_host=local[0],
        local_port=local[1], remote_host=remote[0], remote_port=remote[1],
        service=parent.service, parent=parent.id, root=parent.root, start=time.time(),
    )
    bus = session.rt.shared.bus
    bus.emit(f"connection.{transport}.{kind}", conn.id, {"connection": conn})
    bus.emit("connection.link", conn.id, {"parent": parent.id, "child": conn.id})
    return conn


class _ChildStream(asyncio.Protocol):
    """A child TCP connection (accepted on a child listener or connected out)."""

    def __init__(self, child: Child, kind: str) -> None:
        self.child = child
        self.kind = kind
        self.transport: asyncio.Transport | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.time()
        self.freed = False
        #: TLS (FTP PROT P): plaintext written before the handshake ends waits here
        self.tls: TlsLayer | None = None
        self.tls_pending: list[bytes] = []
        self.close_after_flush = False
        self.tls_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        child, session = self.child, self.child.session
        remote = addr_pair(transport.get_extra_info("peername"))
        local = addr_pair(transport.get_extra_info("sockname"))
        from muscipula.incidents import plain_host

        if session.closing or child.transport is not None or (
            plain_host(remote[0]) != session.conn.remote_host
        ):
            # Only the control connection's own peer, and only once.
            transport.abort()
            return
        self.transport = transport
        child.transport = transport
        child.stop_listening()
        if child.tls:
            self.tls = TlsLayer(session.rt.ssl_context())
            timeout = child.tls_timeout
            if timeout is None:
                timeout = session.rt.limits.child_accept_timeout
            self.tls_timer = asyncio.get_running_loop().call_later(timeout, self._tls_expired)
        child.conn = _record(session, self.kind, "tcp", local, remote, "")
        session.deliver(ChildConnected(child.tag, remote))
        for data in child.pending:
            self.write(data)
        child.pending.clear()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.bytes_out += len(data)
        if self.tls is not None:
            if not self.tls.handshaken:
                self.tls_pending.append(data)
                return
            try:
                data = self.tls.encrypt(data)
            except ssl.SSLError:
                self.transport.abort()
                return
        self.transport.write(data)

    def _tls_expired(self) -> None:
        """The handshake did not finish in time: drop the channel, and tell the machine
        if it still counts on it (a download it already handed over needs no answer)."""
        self.tls_timer = None
        transport = self.transport
        if transport is None or self.tls is None or self.tls.handshaken:
            return
        child, session = self.child, self.child.session
        live = child.transport is transport and not session.closing
        child.transport = None  # connection_lost must not report a plain ChildClosed
        transport.abort()
        if session.children and session.children.get(child.tag) is child:
            del session.children[child.tag]
        if live:
            session.child_failed(child.tag, "tls handshake timeout")

    def shutdown(self) -> None:
        """Close once TLS is up and what was written is flushed (with close_notify)."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.tls is not None and not self.tls.handshaken:
            self.close_after_flush = True
            return
        if self.tls is not None:
            self.transport.write(self.tls.close_notify())
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        session = self.child.session
        self.bytes_in += len(data)
        if session.closing or not session.count_in(len(data)):
            return
        if self.tls is not None:
            try:
                plain, raw = self.tls.feed(data)
            except ssl.SSLError:
                if self.transport is not None:
                    self.transport.abort()
                return
            if raw and self.transport is not None:
                self.transport.write(raw)
            if self.tls.handshaken and self.tls_timer is not None:
                self.tls_timer.cancel()
                self.tls_timer = None
            if self.tls.handshaken and self.tls_pending:
                pending, self.tls_pending = self.tls_pending, []
                for chunk in pending:
                    self.bytes_out -= len(chunk)
                    self.write(chunk)
            if self.tls.handshaken and self.close_after_flush:
                self.close_after_flush = False
                self.shutdown()
            if not plain:
                return
            data = plain
        session.deliver(ChildData(self.child.tag, data))

    def connection_lost(self, exc: Exception | None) -> None:
        child, session = self.child, self.child.session
        if self.tls_timer is not None:
            self.tls_timer.cancel()
            self.tls_timer = None
        if child.conn is None or self.transport is None or self.freed:
            return  # a refused extra peer, or already accounted
        self.freed = True
        session.rt.shared.bus.emit("connection.free", child.conn.id, {
            "connection": child.conn, "reason": "closed" if exc is None else "reset",
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "duration": round(time.time() - self.started, 6)})
        if child.transport is not self.transport:
            return  # closed by the machine (ChildClose): no event back
        child.transport = None
        if session.children and session.children.get(child.tag) is child:
            del session.children[child.tag]
            if not session.closing:
                session.deliver(ChildClosed(child.tag))


class _ChildDatagram(asyncio.DatagramProtocol):
    def __init__(self, child: Child) -> None:
        self.child = child
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.time()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        session = self.child.session
        self.bytes_in += len(data)
        if session.closing or not session.count_in(len(data)):
            return
        session.deliver(ChildData(self.child.tag, data, addr_pair(addr)))

    def error_received(self, exc: Exception) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        child = self.child
        if child.conn is not None:
            child.session.rt.shared.bus.emit("connection.free", child.conn.id, {
                "connection": child.conn, "reason": "closed", "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "duration": round(time.time() - self.started, 6)})


def _ports(spec: tuple[int, int]) -> list[int]:
    low, high = spec
    if low == 0:
        return [0]
    ports = list(range(low, high + 1))
    random.shuffle(ports)
    return ports[:64]


def _bind(family: int, kind: int, host: str, ports: list[int]) -> socket.socket:
    last: OSError | None = None
    for port in ports:
        sock = socket.socket(family, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError("no port")


async def _listen(session: Session, child: Child, action: ChildListen) -> None:
    loop = asyncio.get_running_loop()
    host = session.conn.local_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if action.transport == "udp":
            sock = _bind(family, socket.SOCK_DGRAM, host, _ports(action.ports))
            transport, _ = await loop.create_datagram_endpoint(lambda: _ChildDatagram(child),
                                                               sock=sock)
            child.transport = transport
            local = addr_pair(transport.get_extra_info("sockname"))
            child.conn = _record(session, "listen", "udp", local, ("", 0), action.protocol)
        else:
            sock = _bind(family, socket.SOCK_STREAM, host, _ports(action.ports))
            child.listener = await loop.create_server(
                lambda: _ChildStream(child, "accept"), sock=sock, backlog=4)
            local = addr_pair(sock.getsockname())
            child.timer = loop.call_later(session.rt.limits.child_accept_timeout,
                                          _timeout, child)
    except OSError as exc:
        _forget(session, child)
        session.child_failed(action.tag, f"bind failed: {exc.strerror or exc}")
        return
    if session.closing or (session.children or {}).get(action.tag) is not child:
        child.close()  # the session ended, or the machine closed the tag while it was bound
        return
    session.deliver(ChildListening(action.tag, local[0], local[1]))


async def _connect(session: Session, child: Child, action: ChildConnect) -> None:
    loop = asyncio.get_running_loop()
    local_host = session.conn.local_host
    try:
        async with asyncio.timeout(session.rt.limits.child_accept_timeout):
            await loop.create_connection(lambda: _ChildStream(child, "connect"),
                                         action.host, action.port,
                                         local_addr=(local_host, 0))
    except (OSError, TimeoutError) as exc:
        _forget(session, child)
        reason = "timeout" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        session.child_failed(action.tag, f"connect failed: {reason}")


def _timeout(child: Child) -> None:
    child.timer = None
    if child.transport is None:
        _forget(child.session, child)
        child.session.child_failed(child.tag, "timeout")


def _forget(session: Session, child: Child) -> None:
    child.close()
    if session.children and session.children.get(child.tag) is child:
        del session.children[child.tag]


def handle(session: Session, action: Any) -> None:
    if session.children is None:
        session.children = {}
    children = session.children
    if isinstance(action, (ChildListen, ChildConnect)):
        if action.tag in children:
            _forget(session, children[action.tag])
        if len(children) >= session.rt.limits.max_children:
            session.emit("connection.limit", {"limit": "max_children",
                                              "value": session.rt.limits.max_children})
            session.child_failed(action.tag, "too many channels")
            return
        if isinstance(action, ChildConnect):
            from muscipula.incidents import plain_host

            if plain_host(action.host) != session.conn.remote_host:
                session.child_failed(action.tag, "refused: not the peer's address")
                return
        child = Child(session, action.tag, getattr(action, "transport", "tcp"),
                      bool(getattr(action, "tls", False)), getattr(action, "tls_timeout", None))
        children[action.tag] = child
        coro = _listen(session, child, action) if isinstance(action, ChildListen) else \
            _connect(session, child, action)
        asyncio.get_running_loop().create_task(coro)
    elif isinstance(action, ChildSend):
        child = children.get(action.tag)
        if child is None:
            return
        transport = child.transport
        if child.transport_kind == "udp":
            if transport is not None and action.addr is not None:
                transport.sendto(action.data, action.addr)  # type: ignore[attr-defined]
        elif transport is not None:
            proto = transport.get_protocol()
            if isinstance(proto, _ChildStream):
                proto.write(action.data)
        else:
            child.pending.append(action.data)
    elif isinstance(action, ChildClose):
        child = children.pop(action.tag, None)
        if child is not None:
            child.close()


def close_all(session: Session) -> None:
    for child in list((session.children or {}).values()):
        with contextlib.suppress(Exception):
            child.close(force=True)
    if session.children:
        session.children.clear()
