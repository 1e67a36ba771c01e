"""What every bare server shares: arguments and running on uvloop until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable

import uvloop

BACKLOG = 1024  # the same listen backlog the honeypot's engine asks for


def args(doc: str, **extra: type) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    for name, kind in extra.items():
        p.add_argument(f"--{name}", type=kind, required=True)
    return p.parse_args()


def serve(setup: Callable[[asyncio.AbstractEventLoop], Awaitable[object]]) -> None:
    """Run `setup` on uvloop, then wait for SIGTERM/SIGINT."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await setup(loop)
        print("ready", flush=True)
        await stop.wait()

    uvloop.run(main())
