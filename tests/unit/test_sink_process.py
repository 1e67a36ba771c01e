"""The sink process: logsql, jsonlog and transcripts written by a child, counted honestly."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import sqlite3
import time
from pathlib import Path

from muscipula import transcripts
from muscipula.config import JsonSink
from muscipula.incidents import Bus, Connection, Incident
from muscipula.sinks.process import SinkHost

HEAD = transcripts.FRAME.size


def packed(*chunks: tuple[float, int, bytes]) -> bytes:
    """A session's transcript as it hands it over."""
    buf = bytearray()
    for offset, direction, data in chunks:
        transcripts.pack(buf, offset, direction, data)
    return bytes(buf)


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
            tr.put(c, c.start, packed((0.0, 0, b"USER root\r\n"), (0.01, 1, b"331 x\r\n")))
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


def session(bus: Bus, i: int, c: Connection | None = None) -> None:
    c = c or conn(i)
    bus.emit("connection.tcp.accept", i, {"connection": c})
    bus.emit("login", i, {"username": "root", "password": f"pw{i}"})
    bus.emit("connection.free", i, {"connection": c, "reason": "closed"})


async def _kill(host: SinkHost) -> int:
    """SIGKILL the child; returns once the parent has seen it die."""
    assert host.proc is not None
    pid = host.proc.pid
    os.kill(pid, signal.SIGKILL)
    await _until(lambda: host.down)
    return pid


def test_batches_wait_for_a_killed_child_to_be_started_again(tmp_path: Path):
    """Incidents emitted while the child is down are written by the next one, not failed."""

    async def main() -> tuple[Bus, SinkHost]:
        host = SinkHost(restart_delay=0.3)
        bus = Bus()
        bus.add(host.sink("logsql", "logsql", tmp_path / "db.sqlite"), 1000, 50, linger=0.01)
        await bus.start()
        await host.ready()
        sink = host.sinks[0]
        session(bus, 1)
        await _until(lambda: sink.acked == 3)
        first = await _kill(host)
        session(bus, 2)  # queued while nobody writes: kept for the next child
        await asyncio.sleep(0.1)
        assert bus.counters()["logsql"].failed == 0
        await _until(lambda: sink.acked == 3)  # the new child wrote them
        assert host.proc is not None and host.proc.pid != first and host.restarts == 1
        session(bus, 3)
        await bus.close()
        return bus, host

    bus, _ = asyncio.run(main())
    c = bus.counters()["logsql"]
    assert (c.emitted, c.written, c.failed, c.dropped) == (9, 9, 0, 0)
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("SELECT login_password FROM logins ORDER BY login").fetchall() == [
            ("pw1",), ("pw2",), ("pw3",)]


def test_a_child_that_does_not_come_back_fails_the_batch_after_respawn_timeout(
        tmp_path: Path):
    async def main() -> tuple[Bus, float]:
        host = SinkHost(restart_delay=30.0, respawn_timeout=0.3)
        bus = Bus()
        bus.add(host.sink("logsql", "logsql", tmp_path / "db.sqlite"), 1000, 50, linger=0.01)
        await bus.start()
        await host.ready()
        await _kill(host)
        t0 = time.monotonic()
        session(bus, 1)
        await _until(lambda: bus.counters()["logsql"].failed == 3)
        waited = time.monotonic() - t0
        await bus.close()
        return bus, waited

    bus, waited = asyncio.run(main())
    assert waited >= 0.25  # it waited for the child before giving the batch up
    c = bus.counters()["logsql"]
    assert (c.emitted, c.written, c.failed) == (3, 0, 3)


def test_connections_open_across_a_restart_are_announced_to_the_new_child(tmp_path: Path):
    """Rows and JSON items of a connection accepted before the child died still land."""
    parent = conn(1)
    child = Connection(2, "tcp", "ftpd", "connect", "192.0.2.1", 20, "203.0.113.5", 2000,
                       service="ftp", parent=1, root=1, start=1_700_000_001.0)

    async def main() -> Bus:
        host = SinkHost(restart_delay=0.2)
        open_now = [parent, child]
        host.open_connections = lambda: iter(open_now)
        bus = Bus()
        bus.add(host.sink("logsql", "logsql", tmp_path / "db.sqlite"), 1000, 50, linger=0.01)
        bus.add(host.sink("jsonlog", "jsonlog", tmp_path / "c.json", JsonSink()), 1000,
                linger=0.01)
        await bus.start()
        await host.ready()
        bus.emit("connection.tcp.accept", 1, {"connection": parent})
        bus.emit("login", 1, {"username": "root", "password": "before"})
        bus.emit("connection.tcp.connect", 2, {"connection": child})
        await _until(lambda: all(s.acked + s.held == 3 for s in host.sinks))
        await _kill(host)
        open_now.remove(parent)  # it closes while the child is down: still announced
        bus.emit("login", 1, {"username": "root", "password": "after"})
        bus.emit("connection.free", 1, {"connection": parent, "reason": "closed"})
        await _until(lambda: host.restarts == 1 and not host.down)
        bus.emit("login", 2, {"username": "x", "password": "child"})
        bus.emit("connection.free", 2, {"connection": child, "reason": "closed"})
        await bus.close()
        return bus

    bus = asyncio.run(main())
    counters = bus.counters()
    c = counters["logsql"]
    assert (c.emitted, c.written, c.failed, c.dropped) == (7, 7, 0, 0)
    # JSON lines are written when their connection ends: what the dead child had folded
    # for the two open connections (accept, login, connect) never reached the disk
    c = counters["jsonlog"]
    assert (c.emitted, c.written, c.failed, c.dropped) == (7, 4, 3, 0)
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        conns = db.execute("SELECT connection, connection_type, connection_parent, "
                           "connection_root FROM connections ORDER BY connection").fetchall()
        # the rows the first child wrote are found again, not made twice
        assert conns == [(1, "accept", None, 1), (2, "connect", 1, 1)]
        assert db.execute("SELECT connection, login_password FROM logins ORDER BY login"
                          ).fetchall() == [(1, "before"), (1, "after"), (2, "child")]
        assert db.execute("SELECT connection FROM connection_ends ORDER BY connection"
                          ).fetchall() == [(1,), (2,)]
    lines = [json.loads(x) for x in (tmp_path / "c.json").read_text().splitlines()]
    by_port = {line["src_port"]: line for line in lines}
    assert len(lines) == 2
    assert by_port[40001]["credentials"] == [{"username": "root", "password": "after"}]
    assert by_port[2000]["credentials"] == [{"username": "x", "password": "child"}]


def test_incidents_of_unknown_connections_count_failed_not_written(tmp_path: Path):
    async def main() -> Bus:
        host = SinkHost()
        bus = Bus()
        bus.add(host.sink("logsql", "logsql", tmp_path / "db.sqlite"), 1000, 50)
        bus.add(host.sink("jsonlog", "jsonlog", tmp_path / "c.json", JsonSink()), 1000)
        await bus.start()
        session(bus, 1)
        bus.emit("login", 7, {"username": "root", "password": "lost"})  # never announced
        await bus.close()
        return bus

    for name, c in asyncio.run(main()).counters().items():
        assert (c.emitted, c.written, c.failed) == (4, 3, 1), name


def test_restart_delays_double_while_the_child_dies_young():
    host = SinkHost(restart_delay=0.1, max_restart_delay=0.4)
    assert [host._backoff(1.0) for _ in range(5)] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert host._backoff(61.0) == 0.1  # it had lived: quick again
    assert host._backoff(0.5) == 0.2


def test_a_child_that_dies_at_once_is_started_again_after_the_delay(tmp_path: Path):
    async def main() -> list[float]:
        host = SinkHost(restart_delay=0.1, max_restart_delay=0.4)
        host.sink("logsql", "logsql", tmp_path / "db.sqlite")
        delays: list[float] = []
        backoff = host._backoff

        def recorded(lived: float) -> float:
            delays.append(backoff(lived))
            return delays[-1]

        host._backoff = recorded  # type: ignore[method-assign]
        host._open = 1
        await host.start()
        for _ in range(3):
            await _kill(host)
            await _until(lambda: not host.down)
        host.closing = True
        assert host.restarts == 3 and host.proc is not None
        host.proc.kill()
        await host.proc.wait()
        assert host._reader is not None
        await host._reader
        for s in host.sinks:
            s.detach()
        return delays

    assert asyncio.run(main()) == [0.1, 0.2, 0.4]


def test_transcript_bytes_stay_charged_while_the_pipe_is_paused(tmp_path: Path):
    async def main() -> tuple[list[int], list[int], object]:
        host = SinkHost()
        tr = host.transcripts(tmp_path / "tr")
        tr.max_pending = 3
        given: list[int] = []
        tr.release = given.append
        await host.start()
        await host.ready()
        assert tr.pipe is not None
        tr.pipe.pause_writing()  # the child does not keep up
        for i in range(1, 3):
            c = conn(i)
            tr.put(c, c.start, packed((0.0, 0, b"x" * 100), (0.1, 1, b"y" * 50)))
        tr.flush()
        held = list(given)  # nothing shipped: nothing given back
        tr.put(conn(3), 0.0, packed((0.0, 0, b"z" * 10)))
        # past max_pending: dropped, its bytes (frame head included) given back
        tr.put(conn(4), 0.0, packed((0.0, 0, b"w" * 7)))
        dropped = list(given)
        tr.pipe.resume_writing()  # ships the rest
        await tr.aclose()
        return held, dropped, tr

    held, dropped, tr = asyncio.run(main())
    assert held == []
    assert dropped == [7 + HEAD]
    assert tr.written == 3 and tr.dropped == 1  # type: ignore[attr-defined]


def test_the_thread_writer_gives_transcript_bytes_back_on_the_loop_once_written(
        tmp_path: Path):
    async def main() -> tuple[list[int], transcripts.TranscriptWriter]:
        writer = transcripts.TranscriptWriter(tmp_path / "tr", max_pending=1, interval=0.01)
        given: list[int] = []
        writer.release = given.append
        writer.put(conn(1), 1_700_000_000.0, packed((0.0, 0, b"a" * 10), (0.1, 1, b"b" * 5)))
        await _until(lambda: given == [15 + 2 * HEAD])
        await writer.aclose()
        return given, writer

    given, writer = asyncio.run(main())
    assert given == [15 + 2 * HEAD] and writer.written == 1


def test_transcripts_wait_for_a_restarted_child(tmp_path: Path):
    async def main():
        host = SinkHost(restart_delay=0.3)
        tr = host.transcripts(tmp_path / "tr")
        tr.interval = 0.05
        await tr.open()
        await host.ready()
        await _kill(host)
        c = conn(5)
        tr.put(c, c.start, packed((0.0, 0, b"USER kept\r\n")))
        await asyncio.sleep(0.15)  # ticks while no child runs: kept, not dropped
        assert len(tr.pending) == 1
        await _until(lambda: host.restarts == 1 and not host.down)
        await tr.aclose()
        return tr

    tr = asyncio.run(main())
    assert tr.dropped == 0
    day = time.strftime("%Y-%m-%d", time.gmtime(1_700_000_000))
    _, chunks = transcripts.read(tmp_path / "tr" / day / "ftp.jsonl", 5)
    assert chunks == [(0.0, "in", b"USER kept\r\n")]


def test_a_batch_every_sink_takes_is_pickled_once_and_only_that_batch():
    host = SinkHost()
    fields = {"username": "root", "password": "x"}
    batch = [Incident("login", i, 1.0 + i, fields) for i in range(5)]
    first = host.pickled(batch)
    assert host.pickled(list(batch)) is first  # the other sink's drain: same incidents
    other = [*batch[:4], Incident("login", 4, 5.0, fields)]  # equal values, another incident
    assert host.pickled(other) is not first
    assert host.pickled(batch[:4]) is not first
    assert pickle.loads(first) == [("login", i, 1.0 + i, fields) for i in range(5)]
