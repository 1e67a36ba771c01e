"""The incident bus: bounded per-sink queues, isolation between sinks, drain on close."""

from __future__ import annotations

import asyncio
import time

from muscipula.incidents import Bus, Incident


class Recorder:
    """A sink that keeps what it is given; `gate` holds every write until set."""

    def __init__(self, name: str, gate: asyncio.Event | None = None, fail: bool = False,
                 fail_close: bool = False) -> None:
        self.name = name
        self.gate = gate
        self.fail = fail
        self.fail_close = fail_close
        self.got: list[Incident] = []
        self.batches: list[int] = []
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def write(self, batch: list[Incident]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("disk on fire")
        self.batches.append(len(batch))
        self.got.extend(batch)

    async def close(self) -> None:
        self.closed = True
        if self.fail_close:
            raise RuntimeError("cannot close")


def test_queue_is_bounded_and_drops_are_counted():
    async def main():
        bus = Bus()
        sink = Recorder("a")
        bus.add(sink, queue_size=10, batch_size=4)
        await bus.start()
        for i in range(25):  # no await in between: the sink cannot drain yet
            bus.emit("blackhole.data", i, {"size": i})
        await bus.close()
        return bus, sink

    bus, sink = asyncio.run(main())
    c = bus.counters()["a"]
    assert (c.emitted, c.written, c.dropped, c.failed) == (25, 10, 15, 0)
    assert [i.conn for i in sink.got] == list(range(10))  # the first ten, in order
    assert max(sink.batches) <= 4
    assert bus.emitted == 25


def test_slow_sink_does_not_block_another_or_the_emitter():
    async def main():
        gate = asyncio.Event()
        bus = Bus()
        slow, fast = Recorder("slow", gate), Recorder("fast")
        bus.add(slow, queue_size=1000, batch_size=10)
        bus.add(fast, queue_size=1000, batch_size=10)
        await bus.start()
        t0 = time.perf_counter()
        for i in range(500):
            bus.emit("blackhole.data", i)
        emit_time = time.perf_counter() - t0
        for _ in range(100):
            await asyncio.sleep(0.005)
            if len(fast.got) == 500:
                break
        fast_done, slow_count = len(fast.got), len(slow.got)
        gate.set()
        await bus.close()
        return emit_time, fast_done, slow_count, slow, bus

    emit_time, fast_done, slow_count, slow, bus = asyncio.run(main())
    assert emit_time < 0.5
    assert fast_done == 500 and slow_count == 0
    assert len(slow.got) == 500  # the slow one caught up on close, nothing lost
    assert bus.counters()["slow"].written == 500


def test_failing_sink_counts_failures_and_hurts_no_one_else():
    async def main():
        bus = Bus()
        bad, good = Recorder("bad", fail=True, fail_close=True), Recorder("good")
        bus.add(bad, queue_size=100, batch_size=50)
        bus.add(good, queue_size=100, batch_size=50)
        await bus.start()
        for i in range(30):
            bus.emit("login", i, {"username": "u", "password": "p"})
        await bus.close()
        return bus, bad, good

    bus, bad, good = asyncio.run(main())
    counters = bus.counters()
    assert counters["bad"].failed == 30 and counters["bad"].written == 0
    assert counters["good"].written == 30 and counters["good"].failed == 0
    assert bad.closed and good.closed  # a close that raises does not skip the others


def test_close_drains_every_queue_and_closes_sinks():
    async def main():
        bus = Bus()
        sinks = [Recorder(f"s{i}") for i in range(3)]
        for s in sinks:
            bus.add(s, queue_size=100_000, batch_size=333)
        await bus.start()
        for i in range(20_000):
            bus.emit("blackhole.data", i, {"size": 1})
            if i % 5000 == 0:
                await asyncio.sleep(0)
        await bus.close()
        return bus, sinks

    bus, sinks = asyncio.run(main())
    for s in sinks:
        assert s.opened and s.closed
        assert len(s.got) == 20_000
        assert [i.conn for i in s.got] == list(range(20_000))
        c = bus.counters()[s.name]
        assert c.emitted == c.written == 20_000 and c.dropped == 0


def test_close_gives_up_on_a_hung_sink_after_its_timeout():
    async def main():
        bus = Bus()
        hung = Recorder("hung", asyncio.Event())  # never released
        ok = Recorder("ok")
        bus.add(hung)
        bus.add(ok)
        await bus.start()
        bus.emit("blackhole.data", 1)
        t0 = time.perf_counter()
        await bus.close(timeout=0.3)
        return time.perf_counter() - t0, hung, ok

    took, hung, ok = asyncio.run(main())
    assert took < 2 and hung.closed and len(ok.got) == 1


def test_unknown_names_are_counted_not_raised():
    async def main():
        bus = Bus()
        sink = Recorder("a")
        bus.add(sink)
        await bus.start()
        bus.emit("no.such.thing", 1)
        bus.emit("blackhole.data", 1, {"size": 3}, now=123.0)
        await bus.close()
        return bus, sink

    bus, sink = asyncio.run(main())
    assert bus.unknown == {"no.such.thing": 1}
    assert sink.got[1].time == 123.0 and sink.got[1].fields == {"size": 3}


class Reader:
    """Stands in for a connection whose reading the bus pauses."""

    def __init__(self) -> None:
        self.resumed = 0

    def resume(self) -> None:
        self.resumed += 1


def test_backpressure_holds_readers_until_the_queue_drains():
    async def main():
        bus = Bus()
        gate = asyncio.Event()
        sink = Recorder("a", gate=gate)
        bus.add(sink, queue_size=20, batch_size=4, linger=0, backpressure=True)
        await bus.start()
        for i in range(9):
            bus.emit("blackhole.data", i)
        assert not bus.congested  # below half the queue
        bus.emit("blackhole.data", 9)
        assert bus.congested
        readers = [Reader(), Reader()]
        for r in readers:
            bus.hold(r)
        await asyncio.sleep(0.05)
        assert not any(r.resumed for r in readers)  # the sink has not written yet
        gate.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not bus.congested:
                break
        held = [r.resumed for r in readers]
        await bus.close()
        return bus, sink, held

    bus, _sink, held = asyncio.run(main())
    assert held == [1, 1]
    c = bus.counters()["a"]
    assert (c.written, c.dropped) == (10, 0)
    assert bus.holds == 2


def test_a_sink_without_backpressure_never_congests():
    async def main():
        bus = Bus()
        bus.add(Recorder("a", gate=asyncio.Event()), queue_size=10, batch_size=4)
        await bus.start()
        for i in range(25):
            bus.emit("blackhole.data", i)
        congested = bus.congested
        for ch in bus._channels:
            ch.task.cancel()
        return congested, bus.counters()["a"].dropped

    congested, dropped = asyncio.run(main())
    assert not congested and dropped == 15


def test_a_sink_that_never_drains_holds_the_network_only_max_hold():
    async def main():
        bus = Bus()
        bus.max_hold = 5.0
        gate = asyncio.Event()
        bus.add(Recorder("stuck", gate=gate), queue_size=20, batch_size=4, linger=0,
                backpressure=True)
        await bus.start()
        for i in range(10):
            bus.emit("blackhole.data", i, now=100.0)
        reader = Reader()
        bus.hold(reader)
        bus.check(104.0)
        assert bus.congested and not reader.resumed  # within max_hold
        bus.check(106.0)
        assert not bus.congested and reader.resumed == 1 and bus.gave_up == 1
        for i in range(30):  # no longer holds: fills up and drops at queue_size
            bus.emit("blackhole.data", i, now=107.0)
        assert not bus.congested
        dropped = bus.counters()["stuck"].dropped
        gate.set()  # the sink drains again: it holds the network again when full
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not bus._channels[0].queue:
                break
        for i in range(10):
            bus.emit("blackhole.data", i, now=200.0)
        congested_again = bus.congested
        await bus.close()
        return dropped, congested_again

    dropped, congested_again = asyncio.run(main())
    assert dropped > 0
    assert congested_again


class Waiting(Recorder):
    """A sink whose writes wait for something (a restarted process) until told to stop."""

    def __init__(self, name: str, obeys: bool) -> None:
        super().__init__(name)
        self.give_up = asyncio.Event()
        if obeys:
            self.stopping = self.give_up.set

    async def write(self, batch: list[Incident]) -> None:
        await self.give_up.wait()
        raise RuntimeError("gone")


def test_close_gives_up_on_waiting_sinks_and_every_incident_is_counted():
    async def main():
        bus = Bus()
        obeys, deaf = Waiting("obeys", True), Waiting("deaf", False)
        bus.add(obeys, queue_size=100, batch_size=4, linger=0)
        bus.add(deaf, queue_size=100, batch_size=4, linger=0)
        await bus.start()
        for i in range(12):
            bus.emit("blackhole.data", i)
        await asyncio.sleep(0.05)  # both are inside a write
        t = time.monotonic()
        await bus.close(timeout=1.0)
        return bus, time.monotonic() - t

    bus, took = asyncio.run(main())
    assert took < 3.0
    for name in ("obeys", "deaf"):
        c = bus.counters()[name]
        assert c.emitted == 12 and c.written == 0
        assert c.emitted == c.written + c.dropped + c.failed, (name, c)


def test_subscribers_see_their_name_only_and_a_failing_one_hurts_no_one():
    bus = Bus()
    seen: list[Incident] = []

    def broken(inc: Incident) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe("download.offer", broken)
    bus.subscribe("download.offer", seen.append)
    bus.emit("download.offer", 7, {"url": "http://192.0.2.1/x"})
    bus.emit("login", 7, {"username": "sa"})
    assert [(i.name, i.conn, i.fields["url"]) for i in seen] == [
        ("download.offer", 7, "http://192.0.2.1/x")]
    assert bus.emitted == 2
