"""The sink process: logsql, jsonlog and transcripts written by a child, counted honestly."""

from __future__ import annotations

import asyncio
import json
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
