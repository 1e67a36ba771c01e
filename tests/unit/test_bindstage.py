"""Bind stagers' ports opened for their attacker: only that address, once, for bind_wait,
at most max_bind_listeners at once."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from muscipula.capture.bindstage import BindCatcher
from muscipula.config import Download
from muscipula.incidents import Bus, Incident
from muscipula.store import Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(tmp_path: Path, **cfg: Any) -> tuple[BindCatcher, list[Incident]]:
    bus = Bus()
    seen: list[Incident] = []
    for name in ("download.failed", "download.complete.hash"):
        bus.subscribe(name, seen.append)
    store = Store(tmp_path / "binaries", 1 << 20, 1 << 24)
    return BindCatcher(Download(**cfg), store, bus), seen


def _service(port: int, remote: str = "127.0.0.1") -> Incident:
    return Incident("emu.service", 9, 0.0, {"url": f"bindshell://{port}",
                                           "local_host": "127.0.0.1", "remote_host": remote})


def test_nobody_comes_within_bind_wait(tmp_path: Path) -> None:
    async def go() -> None:
        catcher, seen = _setup(tmp_path, bind_wait=0.3)
        catcher.service(_service(_free_port()))
        await asyncio.sleep(0.6)
        assert [(i.name, i.fields["reason"]) for i in seen] == [("download.failed", "timeout")]

    asyncio.run(go())


def test_another_address_is_turned_away_and_the_attacker_served(tmp_path: Path) -> None:
    async def go() -> None:
        catcher, seen = _setup(tmp_path, bind_wait=5, stage_idle=0.2)
        port = _free_port()
        catcher.service(_service(port))
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        stranger = socket.socket()
        stranger.bind(("127.0.0.2", 0))
        stranger.setblocking(False)
        await loop.sock_connect(stranger, ("127.0.0.1", port))
        stranger.sendall(b"not the stage")
        try:  # closed on it (a reset, since what it sent was never read)
            assert await loop.sock_recv(stranger, 10) == b""
        except ConnectionResetError:
            pass
        stranger.close()
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STAGE" * 100)
        await writer.drain()
        await asyncio.sleep(0.6)
        writer.close()
        assert [(i.name, i.fields["url"], i.fields["size"]) for i in seen] == [
            ("download.complete.hash", f"bindstage://127.0.0.1:{port}/", 500)]

    asyncio.run(go())


def test_listeners_are_bounded_and_closed_at_shutdown(tmp_path: Path) -> None:
    async def go() -> None:
        catcher, seen = _setup(tmp_path, bind_wait=30, max_bind_listeners=1)
        catcher.service(_service(_free_port()))
        catcher.service(_service(_free_port()))
        await asyncio.sleep(0.1)
        await catcher.close()
        assert sorted(i.fields["reason"] for i in seen) == ["busy", "shutdown"]

    asyncio.run(go())
