"""Incidents: the record, the registry of every name, and the bus to the sinks.

Names keep the reference system's meanings (reference §4) without its `modules.python.`
style prefixes. The bus is the only path from the network to the
sinks: `emit` never blocks and never raises; each sink drains its own bounded
queue in its own task, so a slow or failing sink only loses its own incidents,
and counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Spec:
    fields: tuple[str, ...]
    doc: str


def _s(doc: str, *fields: str) -> Spec:
    return Spec(fields, doc)


#: Every incident name with its fields. A protocol adds its own names here.
REGISTRY: dict[str, Spec] = {
    # connections (all carry `connection`, a Connection record)
    "connection.tcp.accept": _s("a TCP peer connected", "connection"),
    "connection.tls.accept": _s("a TLS peer connected", "connection"),
    "connection.udp.accept": _s("first datagram from a new UDP peer", "connection"),
    "connection.tcp.connect": _s("we opened a child connection", "connection"),
    "connection.udp.connect": _s("we opened a UDP child channel to a peer", "connection"),
    "connection.tcp.listen": _s("we opened a child listener", "connection"),
    "connection.udp.listen": _s("we opened a UDP child port", "connection"),
    "connection.link": _s("child connection belongs to parent", "parent", "child"),
    "connection.free": _s(
        "connection ended", "connection", "reason", "bytes_in", "bytes_out", "duration"
    ),
    "connection.limit": _s("a configured limit closed the connection", "limit", "value"),
    "connection.refused": _s(
        "connection closed at accept by a cap", "limit", "remote_host", "remote_port"
    ),
    "connection.tls.hello": _s(
        "TLS ClientHello seen", "sni", "version", "ciphers", "extensions", "groups",
        "point_formats", "alpn", "ja3", "ja3_hash",
    ),
    "connection.tls.error": _s("TLS handshake failed", "error"),
    # credentials and input
    "login": _s("a login attempt", "username", "password", "success", "method", "extra"),
    "protocol.error": _s("malformed or unexpected input, answered as the product would",
                         "detail", "data"),
    # files
    "download.offer": _s("a URL the attacker wants fetched", "url", "source"),
    "download.complete": _s("a file was captured", "url", "path", "md5", "sha256", "size",
                            "complete"),
    "download.complete.hash": _s("captured file hashed", "url", "md5", "sha256", "size"),
    "download.complete.unique": _s("captured file was new", "url", "md5", "sha256", "size"),
    "download.complete.again": _s("captured file was seen before", "url", "md5", "sha256",
                                  "size"),
    "store.refused": _s("a capture was cut short by the store quota", "url", "reason", "size"),
    # --- capture
    "download.failed": _s("an offered URL was not fetched, and why", "url", "reason",
                          "detail"),
    "shellcode.detected": _s("shellcode found in what a peer sent", "offset", "size",
                             "sha256"),
    "emu.profile": _s("the API calls emulated shellcode made ({call, args, return} list)",
                      "profile"),
    "emu.service": _s("emulated shellcode opened a socket: bindshell://port or "
                      "connectbackshell://host:port; kind shell when it ran a process on it, "
                      "else stager", "url", "kind", "local_host", "remote_host"),
    "shell.command": _s("a command line sent to a shell emulated shellcode opened",
                        "command", "shell"),
    # services
    "blackhole.data": _s("bytes that arrived at the blackhole", "size"),
    # --- sip
    "sip.command": _s("a SIP request and the status it was answered with", "method",
                      "call_id", "addr", "to", "contact", "from", "via", "sdp", "allow",
                      "user_agent", "status"),
    "sip.rtp": _s("an answered call's RTP stream at its end (bye, cancel, idle, max_packets, "
                  "max_bytes, call_end, closed)", "call_id", "local_port", "remote_host",
                  "remote_port", "codec", "packets", "bytes", "payload_types", "ssrc",
                  "duration", "dtmf", "ignored", "malformed", "recorded", "end"),
    # --- ftp
    "ftp.command": _s("an FTP command line", "command", "arguments"),
    "ftp.bounce": _s("PORT/EPRT to another host or a privileged port, refused",
                     "command", "host", "port", "reason"),
    # --- tftp
    "tftp.request": _s("an RRQ or WRQ and how it was answered (error_* None: accepted)",
                       "opcode", "filename", "mode", "options", "error_code", "error_text"),
    "tftp.transfer": _s(
        "a TFTP transfer ended", "direction", "filename", "mode", "status", "bytes",
        "blocks", "blksize", "windowsize", "tsize", "retransmits", "local_port", "duration",
        "url", "peer_error_code", "peer_error_text"),
    # --- http
    "http.request": _s("an HTTP request and the status it was answered with", "method",
                       "target", "version", "host", "user_agent", "headers", "status",
                       "body_size", "body"),
    "http.exploit": _s("an exploit payload in an HTTP request", "kind", "where", "detail",
                       "urls"),
    # --- mysql
    # --- smb
    "smb.command": _s("an SMB request, its dialect and the status it was answered with",
                      "dialect", "command", "status", "detail"),
    "smb.unsupported": _s("an SMB command this server does not serve", "dialect", "command",
                          "size"),
    "smb.dcerpc.bind": _s("a DCE/RPC presentation context offered in a bind or alter_context",
                          "uuid", "transfersyntax", "version", "context"),
    "smb.dcerpc.request": _s("a DCE/RPC request (all its fragments) on a named pipe", "uuid",
                             "opnum", "interface", "operation", "size", "pipe"),
    "smb.ms17_010": _s("an MS17-010 (EternalBlue family) step: the PeekNmPipe check, the "
                       "oversized transaction, a pool grooming buffer; bytes captured",
                       "stage", "size", "data", "command"),
    "smb.doublepulsar": _s("a DoublePulsar implant request (ping, exec upload, kill) on "
                           "TRANSACTION2 SESSION_SETUP", "op", "size", "key", "detail"),
    # --- mssql
    "mssql.fingerprint": _s("a LOGIN7: the client's host, application and library names",
                            "hostname", "appname", "cltintname", "extra"),
    "mssql.command": _s("a SQL batch as sent, or an RPC call as the exec it amounts to "
                        "(status: complete)", "status", "cmd"),
}


def register(name: str, doc: str, *fields: str) -> None:
    """For protocol modules that keep their names beside their code."""
    REGISTRY[name] = Spec(fields, doc)


@dataclass(slots=True, eq=False)
class Connection:
    """One connection record; immutable once announced (sinks read it later)."""

    id: int
    transport: str
    protocol: str
    type: str
    local_host: str
    local_port: int
    remote_host: str
    remote_port: int
    service: str = ""
    parent: int | None = None
    root: int = 0
    start: float = 0.0

    def __post_init__(self) -> None:
        self.local_host = plain_host(self.local_host)
        self.remote_host = plain_host(self.remote_host)
        if not self.root:
            self.root = self.id


def plain_host(host: str) -> str:
    """IPv4 peers as plain IPv4, never ::ffff:a.b.c.d; no IPv6 zone suffix."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host.split("%", 1)[0]


@dataclass(slots=True)
class Incident:
    name: str
    conn: int
    time: float
    fields: Mapping[str, Any] = field(default_factory=dict)


class Holdable(Protocol):
    def resume(self) -> None: ...


class Sink(Protocol):
    name: str

    async def open(self) -> None: ...

    async def write(self, batch: list[Incident]) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Counters:
    emitted: int = 0
    written: int = 0
    dropped: int = 0
    failed: int = 0


#: Seconds a sink's drain waits after the first queued incident, so that it writes a
#: batch rather than one incident per wake-up. Each wake-up costs the event loop a
#: thread hand-off (sinks write from their own thread) worth dozens of incidents.
LINGER = 0.05


class _Channel:
    """One sink's bounded queue and its drain task."""

    def __init__(self, bus: Bus, sink: Sink, queue_size: int, batch_size: int,
                 linger: float = LINGER, backpressure: bool = False) -> None:
        self.bus = bus
        self.sink = sink
        self.queue: deque[Incident] = deque()
        self.queue_size = queue_size
        # past `high` queued incidents the network is held until the queue is below `low`;
        # a sink without backpressure never holds it (and drops at queue_size instead)
        self.pressing_high = max(queue_size // 2, 1) if backpressure else queue_size + 1
        self.high = self.pressing_high
        self.low = queue_size * 2 // 5
        #: held the network longer than Bus.max_hold: drops when full until it drained
        self.stuck = False
        self.batch_size = batch_size
        self.linger = linger
        self.counters = Counters()
        #: the bus's emitted count when this sink joined: its own `emitted` is what came
        #: after (counted once on the bus, not once per sink on the network path)
        self.joined = bus.emitted
        self.wakeup = asyncio.Event()
        self.idle = False  # the drain task waits on `wakeup`
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        #: incidents of the batch being written (failed if the task is cancelled)
        self.inflight = 0

    async def run(self) -> None:
        queue = self.queue
        while True:
            if not queue:
                if self.stopping:
                    return
                self.wakeup.clear()
                self.idle = True
                await self.wakeup.wait()
                self.idle = False
                if self.linger and not self.stopping:
                    await asyncio.sleep(self.linger)
                continue
            n = min(len(queue), self.batch_size)
            batch = [queue.popleft() for _ in range(n)]
            self.inflight = n
            try:
                await self.sink.write(batch)
                self.counters.written += n
            except Exception:
                self.counters.failed += n
                log.exception("sink %s failed on a batch of %d incidents", self.sink.name, n)
                if not self.stopping:
                    await asyncio.sleep(0.5)
            self.inflight = 0
            if self.stuck and len(queue) <= self.low:
                self.stuck = False
                self.high = self.pressing_high
                log.warning("sink %s drains again: it holds the network again when full",
                            self.sink.name)
            if self.bus.congested:
                self.bus.relieve()


class Bus:
    """Fan-out from the network path to isolated sinks; `emit` is O(sinks) and never waits."""

    def __init__(self) -> None:
        self._channels: list[_Channel] = []
        self.emitted = 0
        self.unknown: dict[str, int] = {}
        #: in-process consumers of some names (the downloader), called at emit
        self._subscribers: dict[str, list[Callable[[Incident], None]]] = {}
        #: a sink with backpressure is half full: connections stop being read
        #: (`hold`) until every such queue is down to two fifths, so that a flood is
        #: slowed to what the sinks record instead of being recorded in part
        self.congested = False
        self.congested_at = 0.0
        self.holds = 0
        self._held: list[Holdable] = []
        #: seconds the network may stay held for a sink that does not drain (stuck on
        #: its disk or its process): then it is read again and that sink's queue drops
        self.max_hold = 30.0
        self.gave_up = 0

    def add(self, sink: Sink, queue_size: int = 100_000, batch_size: int = 5000,
            linger: float = LINGER, backpressure: bool = False) -> None:
        self._channels.append(_Channel(self, sink, queue_size, batch_size, linger,
                                       backpressure))

    def subscribe(self, name: str, fn: Callable[[Incident], None]) -> None:
        """`fn` sees every `name` incident as it is emitted; it must not block or raise."""
        self._subscribers.setdefault(name, []).append(fn)

    def hold(self, who: Holdable) -> None:
        """`who` has paused its reading; it is resumed when the sinks caught up."""
        self._held.append(who)
        self.holds += 1

    def relieve(self) -> None:
        if any(len(ch.queue) > ch.low for ch in self._channels if ch.high <= ch.queue_size):
            return
        self._release()

    def check(self, now: float) -> None:
        """Once a second: a hold past max_hold is given up for the sinks that cause it."""
        if not self.congested or now - self.congested_at <= self.max_hold:
            return
        for ch in self._channels:
            if ch.high <= ch.queue_size and len(ch.queue) > ch.low:
                ch.stuck = True
                ch.high = ch.queue_size + 1
                log.error("sink %s has not drained for %.0f s: reading the network again; "
                          "its queue drops when full", ch.sink.name, now - self.congested_at)
        self.gave_up += 1
        self._release()

    def _release(self) -> None:
        self.congested = False
        held, self._held = self._held, []
        for who in held:
            try:
                who.resume()
            except Exception:
                log.exception("resuming a held connection failed")

    @property
    def sinks(self) -> list[Sink]:
        return [c.sink for c in self._channels]

    async def start(self) -> None:
        for ch in self._channels:
            await ch.sink.open()
            ch.task = asyncio.get_running_loop().create_task(ch.run(), name=f"sink-{ch.sink.name}")

    def emit(self, name: str, conn: int = 0, fields: Mapping[str, Any] | None = None,
             now: float | None = None) -> None:
        if name not in REGISTRY:
            # A programming error, but never one that may hurt the network path.
            self.unknown[name] = self.unknown.get(name, 0) + 1
        incident = Incident(name, conn, time.time() if now is None else now, fields or {})
        self.emitted += 1
        for ch in self._channels:  # _Channel.put, inline: this runs for every incident
            queue = ch.queue
            if len(queue) >= ch.queue_size:
                ch.counters.dropped += 1
                continue
            queue.append(incident)
            if len(queue) >= ch.high and not self.congested:
                self.congested = True
                self.congested_at = incident.time
            if ch.idle:
                ch.idle = False
                ch.wakeup.set()
        if self._subscribers:
            subscribers = self._subscribers.get(name)
            if subscribers:
                for fn in subscribers:
                    try:
                        fn(incident)
                    except Exception:
                        log.exception("a subscriber of %s failed", name)

    def counters(self) -> dict[str, Counters]:
        for ch in self._channels:
            ch.counters.emitted = self.emitted - ch.joined
        return {c.sink.name: c.counters for c in self._channels}

    async def close(self, timeout: float = 30.0) -> None:
        """Drain every queue into its sink, then close the sinks."""
        for ch in self._channels:
            ch.stopping = True
            ch.wakeup.set()
            stopping = getattr(ch.sink, "stopping", None)
            if stopping is not None:  # a sink waiting for something that may never come
                stopping()
        tasks = [c.task for c in self._channels if c.task]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for ch in self._channels:  # what a cancelled drain never wrote
            left = ch.inflight + len(ch.queue)
            if left and ch.task is not None and ch.task.cancelled():
                ch.counters.failed += left
                ch.queue.clear()
                ch.inflight = 0
        self.counters()  # settles each sink's emitted count
        for ch in self._channels:
            try:
                await ch.sink.close()
            except Exception:
                log.exception("sink %s failed to close", ch.sink.name)
            c = ch.counters
            # a sink that writes elsewhere (another process) says at close what never landed
            unwritten = min(getattr(ch.sink, "unwritten", 0), c.written)
            c.written -= unwritten
            c.failed += unwritten
            log.info("sink %s: emitted %d written %d dropped %d failed %d",
                     ch.sink.name, c.emitted, c.written, c.dropped, c.failed)
