"""The sink process: logsql, jsonlog and transcripts written by a child, counted honestly."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from muscipula import transcripts
from muscipula.config import JsonSink
from muscipula.incidents import Bus, Connection
from muscipula.sinks.process import SinkHost


def conn(i: int) -> Connection:
    return Connection(i, "tcp", "ftpd", "accept", "192.0.2.1", 21, "203.0.113.5", 40000 + i,
                      service="ftp", start=1_700_000_000.0)


def test_child_writes_every_sink_and_the_counts_come_back(tmp_path: Path):
    async def main() -> tuple[Bus, object]:
        host = SinkHost()
        bus = Bus()
        bus.add(host.sink("logsql", "logsql", tmp_path / "db.sqlite"), 1000, 50)
        bus.add(host.sink("jsonlog", "jsonlog", tmp_path / "c.json", JsonSink()), 1000)
        tr = host.transcripts(tmp_path / "tr")
        await bus.start()
        for i in range(1, 101):
            c = conn(i)
            bus.emit("connection.tcp.accept", i, {"connection": c})
            bus.emit("login", i, {"username": "root", "password": f"pw{i}"})
            bus.emit("connection.free", i, {"connection": c, "reason": "closed"})
            tr.put(c, c.start, [(0.0, 0, b"USER root\r\n"), (0.01, 1, b"331 x\r\n")])
            if i % 10 == 0:
                await asyncio.sleep(0)
        await bus.close()
        await tr.aclose()
        return bus, tr

    bus, tr = asyncio.run(main())
    for c in bus.counters().values():
        assert c.emitted == c.written == 300 and c.failed == c.dropped == 0
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("SELECT count(*) FROM logins").fetchone() == (100,)
    lines = [json.loads(x) for x in (tmp_path / "c.json").read_text().splitlines()]
    assert len(lines) == 100 and lines[0]["credentials"][0]["username"] == "root"
    assert (tr.written, tr.dropped) == (100, 0)
    day = time.strftime("%Y-%m-%d", time.gmtime(1_700_000_000))
    path = tmp_path / "tr" / day / "ftp.jsonl"
    header, chunks = transcripts.read(path, 7)
    assert header["connection"]["id"] == 7
    assert chunks == [(0.0, "in", b"USER root\r\n"), (0.01, "out", b"331 x\r\n")]


def test_a_sink_the_child_cannot_run_counts_its_incidents_failed(tmp_path: Path):
    async def main() -> Bus:
        host = SinkHost()
        bus = Bus()
        bus.add(host.sink("broken", "no-such-sink"), 1000, 10)
        bus.add(host.sink("jsonlog", "jsonlog", tmp_path / "c.json", JsonSink()), 1000)
        await bus.start()
        for i in range(1, 31):
            bus.emit("blackhole.data", i, {"size": 1})
        await bus.close()
        return bus

    counters = asyncio.run(main()).counters()
    assert (counters["broken"].written, counters["broken"].failed) == (0, 30)
    assert counters["jsonlog"].written == 30  # the other sink in the same child is unhurt


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_killed_child_is_started_again_and_what_it_missed_counts_failed(tmp_path: Path):
    def session(bus: Bus, i: int) -> None:
        c = conn(i)
        bus.emit("connection.tcp.accept", i, {"connection": c})
        bus.emit("login", i, {"username": "root", "password": f"pw{i}"})
        bus.emit("connection.free", i, {"connection": c, "reason": "closed"})

    async def main() -> tuple[Bus, SinkHost]:
        host = SinkHost(restart_delay=0.3)
        bus = Bus()
        bus.add(host.sink("logsql", "logsql", tmp_path / "db.sqlite"), 1000, 50, linger=0.01)
        await bus.start()
        await host.ready()
        sink = host.sinks[0]
        session(bus, 1)
        await _until(lambda: sink.acked == 3)
        assert host.proc is not None
        first = host.proc.pid
        os.kill(first, signal.SIGKILL)
        await _until(lambda: sink.pipe is None)  # the parent saw it die
        session(bus, 2)  # nobody to write these: failed
        await _until(lambda: bus.counters()["logsql"].failed == 3)
        await _until(lambda: sink.pipe is not None)
        assert host.proc is not None and host.proc.pid != first and host.restarts == 1
        session(bus, 3)
        await bus.close()
        return bus, host

    bus, _ = asyncio.run(main())
    c = bus.counters()["logsql"]
    assert (c.emitted, c.written, c.failed, c.dropped) == (9, 6, 3, 0)
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("SELECT login_password FROM logins ORDER BY login").fetchall() == [
            ("pw1",), ("pw3",)]


def test_restarts_back_off(tmp_path: Path):
    """A child that dies at once is not started in a tight loop."""

    async def main() -> list[float]:
        host = SinkHost(restart_delay=0.1, max_restart_delay=0.4)
        host.sink("logsql", "logsql", tmp_path / "db.sqlite")
        starts: list[float] = []
        spawn = host._spawn

        async def counted(restart: bool = False) -> None:
            starts.append(time.monotonic())
            await spawn(restart)
            assert host.proc is not None
            host.proc.kill()

        host._spawn = counted  # type: ignore[method-assign]
        host._open = 1
        await host.start()
        await asyncio.sleep(1.6)
        host.closing = True
        return starts

    starts = asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert 3 <= len(starts) <= 6, starts
    assert all(g >= 0.09 for g in gaps) and gaps[-1] >= 0.35, gaps
