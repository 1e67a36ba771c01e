"""What the drivers share: the bus, the store, id counters, connection caps, transcripts."""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from muscipula.config import Limits
from muscipula.incidents import Bus, Connection
from muscipula.services import MachineFactory
from muscipula.store import Store

if TYPE_CHECKING:
    from muscipula.net.session import Session
    from muscipula.transcripts import TranscriptSink


class Caps:
    """Global and per-remote-address connection counts."""

    __slots__ = ("max_total", "per_address", "total")

    def __init__(self, max_total: int) -> None:
        self.max_total = max_total
        self.total = 0
        self.per_address: dict[str, int] = {}

    def admit(self, host: str, max_per_address: int) -> str | None:
        """Count the connection in, or name the limit that refuses it."""
        if self.total >= self.max_total:
            return "max_connections"
        n = self.per_address.get(host, 0)
        if n >= max_per_address:
            return "max_per_address"
        self.total += 1
        self.per_address[host] = n + 1
        return None

    def release(self, host: str) -> None:
        self.total -= 1
        n = self.per_address.get(host, 1) - 1
        if n <= 0:
            self.per_address.pop(host, None)
        else:
            self.per_address[host] = n


@dataclass(eq=False)
class Shared:
    bus: Bus
    store: Store
    caps: Caps
    transcripts: TranscriptSink | None
    tls_context: Callable[[], ssl.SSLContext]
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    sessions: set[Session] = field(default_factory=set)
    #: transcript bytes that open sessions may still take (limits.max_transcript_memory)
    transcript_room: int = 0
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once: asyncio.get_running_loop() costs a getpid()
        system call each time."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def next_id(self) -> int:
        return next(self.ids)

    def sweep(self, now: float) -> None:
        """Close sessions past their idle or total time; called once a second."""
        for session in list(self.sessions):
            session.check_time(now)
        self.bus.check(now)

    async def sweeper(self) -> None:
        import time

        while True:
            await asyncio.sleep(1.0)
            self.sweep(time.time())


class Scan(Protocol):
    def __call__(self, conn: Connection, transcript: bytes | bytearray,
                 live: bool = False) -> None: ...


@dataclass(eq=False)
class ServiceRuntime:
    """One service as the drivers see it."""

    name: str
    protocol: str
    factory: MachineFactory
    limits: Limits
    transcripts: bool
    shared: Shared
    #: this service's own TLS context (its product's profile); None: the host's
    tls_context: Callable[[], ssl.SSLContext] | None = None
    #: handed each ended connection's transcript, to look for shellcode (capture/hub.py),
    #: and a live one's (live=True) once its peer was quiet `live_quiet` seconds, at most
    #: `live_scans` times (0: only at the end)
    scan: Scan | None = None
    live_quiet: float = 0.0
    live_scans: int = 0

    def ssl_context(self) -> ssl.SSLContext:
        """The context TLS on this service's connections and children is made from."""
        return (self.tls_context or self.shared.tls_context)()
