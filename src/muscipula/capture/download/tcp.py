"""Second stages: what a connect-back stager's handler sends once connected to.

Staged shellcode (the common reverse-TCP stagers) connects to its handler and reads the
next stage from that socket; the emulator offers that address as tcp://host:port/.
Connecting as the stager would and keeping what the handler sends is the only way to
capture the stage: the handler sends it at once and then waits for it to run, so the
stage has ended when `stage_idle` seconds pass without a byte (or at the peer's close).
"""

from __future__ import annotations

import asyncio
import socket

from muscipula.capture.download.body import Body
from muscipula.capture.download.connect import connect
from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.policy import Policy
from muscipula.capture.download.target import Target
from muscipula.config import Download

READ = 65536


async def fetch(target: Target, cfg: Download, policy: Policy, body: Body) -> None:
    addrs = await policy.resolve(target.host, target.port, socket.SOCK_STREAM,
                                 cfg.connect_timeout)
    reader, writer = await connect(addrs, target.port, cfg.connect_timeout)
    try:
        # before the first byte, the scheduler's slow guard applies
        await read_stage(reader, body, None, cfg.stage_idle)
    finally:
        writer.close()


async def read_stage(reader: asyncio.StreamReader, body: Body, first_wait: float | None,
                     idle: float) -> None:
    """Keep what comes until `idle` seconds pass without a byte once it started (or the
    peer's close, or the body's cut); FetchError if nothing came at all."""
    while True:
        wait = idle if body.received else first_wait
        try:
            chunk = await asyncio.wait_for(reader.read(READ), wait)
        except TimeoutError:
            chunk = b""
        except OSError as exc:
            if not body.received:
                raise FetchError("connect", str(exc)) from None
            chunk = b""  # reset after the stage: what came is the stage
        if not chunk:
            if not body.received:
                raise FetchError("protocol", "closed before sending anything")
            return
        if not body.write(chunk):
            return
