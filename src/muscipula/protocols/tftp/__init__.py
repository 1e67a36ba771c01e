"""TFTP (69/udp): RFC 1350 with options (RFC 2347-2349, 7440), answering like tftpd-hpa 5.2.

Reads are served from a read-only root; writes are captured into the store
(the reference system refused them, but worms push their payloads this way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from muscipula.config import Port, PositiveInt, Seconds, ServiceConfig
from muscipula.machine import Peer
from muscipula.protocols.tftp import records as _records  # noqa: F401 - registers writers
from muscipula.protocols.tftp import wire
from muscipula.protocols.tftp.backend import ReadOnlyRoot
from muscipula.protocols.tftp.machine import Setup, Slots, TftpSession
from muscipula.protocols.tftp.request import Limits
from muscipula.protocols.tftp.transfer import Timing
from muscipula.services import ServiceContext, ServiceSpec

BlockSize = Annotated[int, Field(ge=512, le=wire.MAX_SEGSIZE)]
PortOrZero = Annotated[int, Field(ge=0, le=65535)]


class TftpConfig(ServiceConfig):
    udp_ports: list[Port] = [69]
    #: directory served read-only to RRQ; None: an empty "tftp" folder in the state dir
    root: str | None = None
    #: capture WRQ uploads into the store (False: refuse them as tftpd-hpa without --create)
    allow_upload: bool = True
    #: largest upload kept; past it the client gets "Disk full or allocation exceeded"
    max_file_size: PositiveInt = 32 * 1024 * 1024
    #: transfers (and pending error replies) at once, over all peers
    max_transfers: PositiveInt = 64
    #: transfers at once from one remote address and port
    max_transfers_per_peer: Annotated[int, Field(ge=1, le=64)] = 4
    #: first wait for an answer before sending again; doubles after every retry
    retransmit_timeout: Seconds = 1.0
    #: retries before a transfer is given up (tftpd-hpa: 5, about a minute)
    retransmit_count: Annotated[int, Field(ge=0, le=20)] = 5
    #: the longest one transfer may last, however it trickles
    transfer_timeout: Seconds = 600.0
    #: how long an idle session waits for another request before it closes
    linger: Seconds = 5.0
    #: pause between opening a transfer's port and its first packet, as a forking server
    #: takes; scanners that listen only after sending (nmap's tftp-enum) need it
    first_reply_delay: Annotated[float, Field(ge=0, le=5)] = 0.02
    max_blksize: BlockSize = wire.MAX_SEGSIZE
    #: negotiate RFC 7440 windowsize (tftpd-hpa 5.2 ignores the option)
    windowsize: bool = True
    max_windowsize: Annotated[int, Field(ge=1, le=65535)] = 64
    #: bytes of unacknowledged DATA one transfer may hold for resending
    max_window_bytes: PositiveInt = 1024 * 1024
    #: ports transfers are served from, inclusive; [0, 0] for any free port
    transfer_ports: tuple[PortOrZero, PortOrZero] = (0, 0)


def build(ctx: ServiceContext):
    cfg: TftpConfig = ctx.config
    root = Path(cfg.root).expanduser() if cfg.root else ctx.state_dir / "tftp"
    root.mkdir(parents=True, exist_ok=True)
    setup = Setup(
        root=ReadOnlyRoot(root),
        slots=Slots(cfg.max_transfers),
        timing=Timing(cfg.retransmit_timeout, cfg.retransmit_count, cfg.transfer_timeout),
        limits=Limits(cfg.max_blksize, cfg.windowsize, cfg.max_windowsize,
                      cfg.max_window_bytes),
        allow_upload=cfg.allow_upload,
        max_file_size=cfg.max_file_size,
        max_per_peer=cfg.max_transfers_per_peer,
        linger=cfg.linger,
        first_delay=cfg.first_reply_delay,
        ports=(min(cfg.transfer_ports), max(cfg.transfer_ports)),
        url_host=ctx.persona.hostname,
    )

    def factory(peer: Peer) -> TftpSession:
        return TftpSession(setup, peer)

    return factory


def _max_buffer(cfg: TftpConfig) -> int:
    per_transfer = max(cfg.max_window_bytes, cfg.max_blksize) + 2 * cfg.max_blksize
    return cfg.max_transfers_per_peer * per_transfer


FUZZ_SEEDS = (
    b"\x00\x01pxelinux.0\x00octet\x00blksize\x001428\x00tsize\x000\x00",
    b"\x00\x01boot.ini\x00netascii\x00",
    b"\x00\x02x.exe\x00octet\x00tsize\x0070000\x00windowsize\x004\x00timeout\x001\x00",
    b"\x00\x02a\x00netascii\x00",
    b"\x00\x04\x00\x00",
    b"\x00\x03\x00\x01MZ\r\n\r\x00\x90",
    b"\x00\x05\x00\x08no\x00",
)

SERVICE = ServiceSpec("tftp", "TftpSession", TftpConfig, build,
                      "TFTP read from a read-only root, uploads captured",
                      max_buffer=_max_buffer, fuzz_seeds=FUZZ_SEEDS)
