"""The downloader's scheduling: concurrency, waiting, busy, the per-URL memo, shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from muscipula.capture import download
from muscipula.capture.download import Downloader
from muscipula.capture.download.body import Body
from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.policy import Policy
from muscipula.capture.download.target import Target
from muscipula.config import Download
from muscipula.store import Store


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, dict[str, Any]]] = []

    def emit(self, name: str, conn: int = 0, fields: Any = None, now: Any = None) -> None:
        self.seen.append((name, conn, dict(fields or {})))

    def names(self, conn: int) -> list[str]:
        return [n for n, c, _ in self.seen if c == conn]

    def failed(self, conn: int) -> str | None:
        return next((f["reason"] for n, c, f in self.seen
                     if c == conn and n == "download.failed"), None)


class Gate:
    """A fake fetcher: each URL's fetch waits until released, then writes its path."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, target: Target, cfg: Download, policy: Policy, body: Body) -> None:
        self.calls.append(target.url)
        await self.release.wait()
        if "fail" in target.url:
            raise FetchError("status", "404")
        body.write(target.url.encode())


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    g = Gate()
    monkeypatch.setitem(download.FETCHERS, "http", g)
    return g


def make(tmp_path: Path, **cfg: Any) -> tuple[Downloader, Recorder]:
    bus = Recorder()
    store = Store(tmp_path / "binaries", 1 << 20, 1 << 24)
    return Downloader(Download(**cfg), store, bus), bus  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_config_defaults_hold() -> None:
    cfg = Download()
    assert cfg.allow_networks == [] and cfg.max_concurrent == 8 and cfg.max_pending == 256
    assert cfg.memo_entries == 4096 and cfg.max_waiters == 256
    assert cfg.max_offers_per_connection == 64
    assert cfg.tftp_timeout == 2.0 and cfg.tftp_retries == 5
    assert cfg.upload_sources == ["ftp", "tftp"]


def test_concurrency_pending_and_busy(tmp_path: Path, gate: Gate) -> None:
    async def go() -> None:
        d, bus = make(tmp_path, max_concurrent=2, max_pending=1)
        for i in range(4):
            d.offer(i, f"http://8.8.8.8/{i}")
        await settle()
        assert gate.calls == ["http://8.8.8.8/0", "http://8.8.8.8/1"]
        assert bus.failed(3) == "busy" and bus.failed(2) is None
        gate.release.set()
        await settle()
        assert gate.calls[2] == "http://8.8.8.8/2"
        for conn in range(3):
            assert bus.names(conn) == ["download.complete", "download.complete.hash",
                                       "download.complete.unique"]
        await d.close()
    asyncio.run(go())


def test_offers_per_connection_are_bounded(tmp_path: Path, gate: Gate,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "COUNTED_CONNECTIONS", 2)

    async def go() -> None:
        d, bus = make(tmp_path, max_offers_per_connection=3)
        for i in range(5):
            d.offer(1, f"http://8.8.8.8/{i}")
        refused = [f for n, c, f in bus.seen if n == "download.failed"]
        assert [f["url"] for f in refused] == ["http://8.8.8.8/3", "http://8.8.8.8/4"]
        assert {f["reason"] for f in refused} == {"limit"}
        assert d.refused_limit == 2
        d.offer(2, "http://8.8.8.8/0")  # another connection has its own count
        assert bus.failed(2) is None
        d.offer(3, "http://8.8.8.8/0")  # ...and past COUNTED_CONNECTIONS the oldest is forgotten
        d.offer(1, "http://8.8.8.8/0")
        assert [c for n, c, f in bus.seen if n == "download.failed"] == [1, 1]
        await settle()
        assert gate.calls == [f"http://8.8.8.8/{i}" for i in range(3)]
        gate.release.set()
        await d.close()
    asyncio.run(go())


def test_same_url_is_fetched_once(tmp_path: Path, gate: Gate) -> None:
    async def go() -> None:
        d, bus = make(tmp_path)
        d.offer(1, "http://8.8.8.8/a")
        d.offer(2, "http://8.8.8.8/a")      # waits for the running fetch
        await settle()
        gate.release.set()
        await settle()
        d.offer(3, "http://8.8.8.8/a")      # after: the memo answers
        d.offer(4, "http://8.8.8.8/fail")
        await settle()
        d.offer(5, "http://8.8.8.8/fail")
        assert gate.calls == ["http://8.8.8.8/a", "http://8.8.8.8/fail"]
        assert bus.names(1)[-1] == "download.complete.unique"
        for conn in (2, 3):
            assert bus.names(conn) == ["download.complete", "download.complete.hash",
                                       "download.complete.again"]
        md5s = {f["md5"] for n, c, f in bus.seen if n == "download.complete.hash"}
        assert len(md5s) == 1
        assert bus.failed(4) == bus.failed(5) == "status"
        await d.close()
    asyncio.run(go())


def test_repeat_window_zero_fetches_again(tmp_path: Path, gate: Gate) -> None:
    async def go() -> None:
        d, _bus = make(tmp_path, repeat_window=0)
        gate.release.set()
        d.offer(1, "http://8.8.8.8/a")
        await settle()
        d.offer(2, "http://8.8.8.8/a")
        await settle()
        assert gate.calls == ["http://8.8.8.8/a"] * 2
        await d.close()
    asyncio.run(go())


def test_memo_is_bounded(tmp_path: Path, gate: Gate) -> None:
    async def go() -> None:
        d, _bus = make(tmp_path, memo_entries=3)
        gate.release.set()
        for i in range(10):
            d.offer(i, f"http://8.8.8.8/{i}")
            await settle()
        assert len(d.memo) <= 3
        assert list(d.memo) == [f"http://8.8.8.8/{i}" for i in (7, 8, 9)]
        await d.close()
    asyncio.run(go())


def test_waiters_are_bounded(tmp_path: Path, gate: Gate) -> None:
    async def go() -> None:
        d, bus = make(tmp_path, max_waiters=2)
        for conn in range(5):
            d.offer(conn, "http://8.8.8.8/a")
        await settle()
        assert [bus.failed(c) for c in range(5)] == [None, None, None, "busy", "busy"]
        await d.close()
    asyncio.run(go())


def test_close_gives_up_running_and_waiting(tmp_path: Path, gate: Gate) -> None:
    async def go() -> None:
        d, bus = make(tmp_path, max_concurrent=1)
        d.offer(1, "http://8.8.8.8/a")
        d.offer(2, "http://8.8.8.8/a")
        d.offer(3, "http://8.8.8.8/b")
        await settle()
        await asyncio.wait_for(d.close(), 2)
        assert [bus.failed(c) for c in (1, 2, 3)] == ["shutdown"] * 3
        d.offer(4, "http://8.8.8.8/c")
        assert bus.failed(4) == "shutdown"
        assert not list((tmp_path / "binaries" / ".incoming").iterdir())
    asyncio.run(go())


def test_refusals_without_fetch(tmp_path: Path, gate: Gate) -> None:
    async def go() -> None:
        d, bus = make(tmp_path)
        d.offer(1, "smb://8.8.8.8/x")
        d.offer(2, "ftp://127.0.0.1/up.bin", "ftp")
        d.offer(3, "http://[bad/")
        await settle()
        assert [bus.failed(c) for c in (1, 2, 3)] == ["scheme", "uploaded", "url"]
        assert gate.calls == []
        await d.close()
    asyncio.run(go())


def test_offer_never_raises_without_a_loop(tmp_path: Path) -> None:
    d, bus = make(tmp_path)
    d.offer(1, "http://8.8.8.8/x")       # no running loop: recorded, not raised
    assert bus.failed(1) == "error"


def test_slow_and_total_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def trickle(target: Target, cfg: Download, policy: Policy, body: Body) -> None:
        while True:
            body.write(b"x" * (1000 if "fast" in target.url else 1))
            await asyncio.sleep(0.05)

    monkeypatch.setitem(download.FETCHERS, "http", trickle)

    async def go() -> None:
        d, bus = make(tmp_path, min_rate=100, slow_window=0.3, timeout=0.8)
        d.offer(1, "http://8.8.8.8/slow")
        d.offer(2, "http://8.8.8.8/fast")
        await asyncio.sleep(1.2)
        assert bus.failed(1) == "slow" and bus.failed(2) == "timeout"
        await d.close()
    asyncio.run(go())


def test_max_bytes_keeps_a_truncated_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    async def big(target: Target, cfg: Download, policy: Policy, body: Body) -> None:
        for _ in range(10):
            if not body.write(b"A" * 400):
                return

    monkeypatch.setitem(download.FETCHERS, "http", big)

    async def go() -> None:
        d, bus = make(tmp_path, max_bytes=1000)
        d.offer(1, "http://8.8.8.8/big")
        await settle()
        done = next(f for n, c, f in bus.seen if n == "download.complete")
        assert done["size"] == 1000 and done["complete"] is False
        assert Path(str(done["path"])).read_bytes() == b"A" * 1000
        refused = next(f for n, c, f in bus.seen if n == "store.refused")
        assert refused["reason"] == "max_bytes"
        await d.close()
    asyncio.run(go())


def test_close_right_after_an_offer_still_says_why(tmp_path: Path, gate: Gate) -> None:
    async def go() -> None:
        d, bus = make(tmp_path)
        d.offer(7, "http://192.0.2.1/x")  # its task has not run a step yet
        await d.close()
        assert bus.names(7) == ["download.failed"] and bus.failed(7) == "shutdown"

    asyncio.run(go())


def test_a_passing_failure_is_not_remembered_a_lasting_one_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def flaky(target: Target, cfg: Download, policy: Policy, body: Body) -> None:
        calls.append(target.url)
        raise FetchError("connect" if "down" in target.url else "status", "x")

    monkeypatch.setitem(download.FETCHERS, "http", flaky)

    async def go() -> None:
        d, bus = make(tmp_path)
        for conn in (1, 2):
            d.offer(conn, "http://192.0.2.1/down")
            d.offer(conn + 10, "http://192.0.2.1/gone")
            await settle()
        assert calls.count("http://192.0.2.1/down") == 2  # tried again
        assert calls.count("http://192.0.2.1/gone") == 1  # its 404-like answer kept
        assert bus.failed(12) == "status"
        await d.close()

    asyncio.run(go())


def test_a_handler_that_closes_without_a_stage_is_a_failure(tmp_path: Path) -> None:
    async def go() -> None:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        d, bus = make(tmp_path, allow_networks=["127.0.0.0/8"])
        d.offer(3, f"tcp://127.0.0.1:{port}/")
        for _ in range(100):
            if bus.names(3):
                break
            await asyncio.sleep(0.02)
        assert bus.failed(3) == "protocol"
        await d.close()
        server.close()

    asyncio.run(go())
