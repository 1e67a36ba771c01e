"""Connecting to a destination the policy checked: its first address that answers."""

from __future__ import annotations

import asyncio

from muscipula.capture.download.errors import FetchError

#: addresses of one name tried
MAX_ADDRESSES = 4


async def connect(addrs: list[str], port: int, timeout: float, limit: int = 65536
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the first of `addrs` that answers within `timeout`; `limit`: the
    reader's line limit."""
    last = "no address"
    for ip in addrs[:MAX_ADDRESSES]:
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(ip, port, limit=limit), timeout)
        except TimeoutError:
            last = f"{ip}: timeout"
        except OSError as exc:
            last = f"{ip}: {exc.strerror or exc}"
    raise FetchError("connect", last)
