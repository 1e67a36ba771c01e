"""The sans-IO contract between drivers (net/) and protocol machines (protocols/).

A machine is made per connection (or per datagram peer). The driver tells it what
happened (`start`, `receive`, `timer`, `child`, `closed`) and carries out the
actions it returns, in order. Machines never touch sockets, files or the clock:
time comes in as `now`, captured bytes leave as `Capture*` actions, and child
channels (FTP data, TFTP transfer ports, RTP) are asked for with `Child*` actions
whose outcome comes back through `child()`.

Keeping every side effect in a returned value is what lets unit tests feed bytes
and compare results, and lets one fuzz harness drive every protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

# --------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes for the peer (for datagram machines: one datagram, to `addr` if given)."""

    data: bytes
    addr: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Close:
    """Flush what was sent, then close. `abort` resets instead of flushing."""

    reason: str = ""
    abort: bool = False


@dataclass(frozen=True, slots=True)
class Emit:
    """An incident for the bus; `name` must be in `muscipula.incidents.REGISTRY`."""

    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Wake:
    """Call `timer()` at `at` (seconds, same clock as `now`); replaces any earlier Wake.

    `at=None` cancels the pending wake-up.
    """

    at: float | None


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Switch this connection to TLS as the server, with the persona's certificate.

    Sent after the plain-text reply that announces it (FTP 234, MySQL SSLRequest).
    `data` is raw bytes the machine already received past the switch point (a
    MySQL client sends its ClientHello right behind the SSLRequest): the driver
    feeds them to TLS instead of losing them.
    """

    data: bytes = b""


@dataclass(frozen=True, slots=True)
class CaptureData:
    """Append bytes to captured file `stream` (opened on first use, per connection)."""

    stream: str
    data: bytes


@dataclass(frozen=True, slots=True)
class CaptureEnd:
    """Finish captured file `stream`: hash it, keep it by md5, raise download incidents.

    `url` is what the file would be called by its sender (ftp://host/path, ...);
    it is recorded, never used on disk. `complete=False` marks a transfer that
    broke off; what arrived is still kept.
    """

    stream: str
    url: str
    complete: bool = True


@dataclass(frozen=True, slots=True)
class ChildListen:
    """Open a listening child channel (passive FTP data, TFTP transfer, RTP).

    `transport` is "tcp" or "udp". `ports` is an inclusive range; (0, 0) means any
    free port. The outcome arrives as ChildListening or ChildFailed.
    """

    tag: str
    transport: str = "tcp"
    ports: tuple[int, int] = (0, 0)
    protocol: str = ""
    #: server-side TLS on the accepted connection (FTP data with PROT P), persona certificate
    tls: bool = False
    #: seconds a TLS handshake may take once connected (None: limits.child_accept_timeout);
    #: past it the channel is dropped and, if still open, ChildFailed comes back
    tls_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class ChildConnect:
    """Open an outgoing child channel (active FTP data). Only to the peer's own address.

    The driver refuses any other host; outcome: ChildConnected or ChildFailed.
    """

    tag: str
    host: str
    port: int
    protocol: str = ""
    #: server-side TLS once connected (FTP active data with PROT P)
    tls: bool = False
    #: as ChildListen.tls_timeout
    tls_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class ChildSend:
    """Bytes on child channel `tag` (for udp children, to `addr`)."""

    tag: str
    data: bytes
    addr: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class ChildClose:
    """Close child channel `tag` after flushing; its listener too."""

    tag: str


Action = (
    Send | Close | Emit | Wake | StartTLS | CaptureData | CaptureEnd
    | ChildListen | ChildConnect | ChildSend | ChildClose
)

# ---------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ChildListening:
    """The child listener is bound at (host, port)."""

    tag: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ChildConnected:
    """A peer connected to a listening child (or our ChildConnect succeeded)."""

    tag: str
    peer: tuple[str, int]


@dataclass(frozen=True, slots=True)
class ChildData:
    """Bytes that arrived on a child channel (udp: from `peer`)."""

    tag: str
    data: bytes
    peer: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class ChildClosed:
    """The child channel's peer closed it, or a limit did."""

    tag: str


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """The child channel could not be opened or was refused; `reason` says why."""

    tag: str
    reason: str


ChildEvent = ChildListening | ChildConnected | ChildData | ChildClosed | ChildFailed


# ------------------------------------------------------------------- contract


@dataclass(frozen=True, slots=True)
class Peer:
    """What a machine may know of its connection: addresses as seen on the socket."""

    local_host: str
    local_port: int
    remote_host: str
    remote_port: int
    transport: str = "tcp"  # "tcp", "tls" or "udp"


class Machine(Protocol):
    """One connection's protocol state. Every method returns the actions to carry out."""

    #: dionaea's protocol name for this service (`ftpd`, `httpd`, `mysqld`, ...).
    protocol: ClassVar[str]

    def start(self, now: float) -> list[Action]: ...

    def receive(self, data: bytes, now: float) -> list[Action]: ...

    def timer(self, now: float) -> list[Action]: ...

    def child(self, event: ChildEvent, now: float) -> list[Action]: ...

    def closed(self, now: float) -> list[Action]: ...

    def buffered(self) -> int:
        """Bytes held in the machine's own buffers; the fuzz test checks its bound."""
        ...


class BaseMachine:
    """Defaults for the hooks most machines don't need."""

    protocol: ClassVar[str] = ""

    def start(self, now: float) -> list[Action]:
        return []

    def receive(self, data: bytes, now: float) -> list[Action]:
        return []

    def timer(self, now: float) -> list[Action]:
        return []

    def child(self, event: ChildEvent, now: float) -> list[Action]:
        return []

    def closed(self, now: float) -> list[Action]:
        return []

    def plain_on_tls(self, data: bytes, now: float) -> list[Action]:
        """Bytes on an implicit-TLS port that are not TLS (plain HTTP sent to 443), this
        chunk and every later one; the default is what a TLS server does: give up."""
        return [Emit("protocol.error", {"detail": "not TLS on a TLS port", "data": data[:512]}),
                Close("not tls")]

    def buffered(self) -> int:
        return 0
