"""A session hands its transcript to the shellcode scan while it lasts: once its peer was
quiet `live_quiet` seconds, at most `live_scans` times, and at its end as before."""

from __future__ import annotations

import asyncio

from muscipula.config import Limits
from muscipula.incidents import Bus, Connection
from muscipula.machine import BaseMachine
from muscipula.net.runtime import Caps, ServiceRuntime, Shared
from muscipula.net.session import Session


class MemorySession(Session):
    def _send(self, data, addr):
        pass

    def _close(self, abort):
        pass


def make(quiet: float, scans: int) -> tuple[MemorySession, list[tuple[bool, int]]]:
    shared = Shared(bus=Bus(), store=None, caps=Caps(10), transcripts=None,  # type: ignore[arg-type]
                    tls_context=lambda: None, transcript_room=1 << 20)  # type: ignore[arg-type,return-value]
    seen: list[tuple[bool, int]] = []

    def scan(conn: Connection, transcript: bytes | bytearray, live: bool = False) -> None:
        seen.append((live, len(transcript)))

    rt = ServiceRuntime("t", "t", lambda peer: BaseMachine(), Limits(), True, shared,
                        scan=scan, live_quiet=quiet, live_scans=scans)
    conn = Connection(1, "tcp", "t", "accept", "127.0.0.1", 80, "127.0.0.2", 5000)
    return MemorySession(rt, conn, BaseMachine(), 100.0), seen


def test_scanned_when_quiet_at_most_live_scans_times() -> None:
    async def go() -> list[tuple[bool, int]]:
        s, seen = make(0.1, 2)
        for _ in range(5):  # talking without a pause: no live look yet
            s.received(b"x" * 10)
            await asyncio.sleep(0.03)
        assert seen == []
        await asyncio.sleep(0.2)
        assert [live for live, _ in seen] == [True]
        for _ in range(2):  # two more quiet pauses after more bytes: only one more look
            s.received(b"y" * 10)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.2)  # a quiet pause without new bytes: no look
        s.finish("closed")
        return seen

    seen = asyncio.run(go())
    assert [live for live, _ in seen] == [True, True, False]
    assert seen[0][1] < seen[1][1] < seen[2][1]  # the last bytes came after the 2nd look


def test_no_live_scan_when_off_or_closed() -> None:
    async def go() -> None:
        s, seen = make(0.05, 0)
        s.received(b"x")
        await asyncio.sleep(0.15)
        assert seen == []
        s, seen = make(0.05, 4)
        s.received(b"x")
        s.finish("closed")  # the armed look is given up with the connection
        await asyncio.sleep(0.15)
        assert [live for live, _ in seen] == [False]

    asyncio.run(go())
