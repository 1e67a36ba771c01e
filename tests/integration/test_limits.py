"""Every configured limit holds, on real sockets, through the real engine and drivers.

The engine runs in the test's own event loop (binding 127.0.0.1 ports, dropping
nothing) with a recording sink on its bus, so each test can check the incident
that names the limit: `connection.refused` at accept, `connection.limit` after.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from muscipula import config as configmod
from muscipula.engine import Engine
from muscipula.incidents import Incident
from tests.conftest import only
from tests.integration import limits_service


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.got: list[Incident] = []

    async def open(self) -> None:
        pass

    async def write(self, batch: list[Incident]) -> None:
        self.got.extend(batch)

    async def close(self) -> None:
        pass

    def fields(self, name: str) -> list[dict[str, Any]]:
        return [dict(i.fields) for i in self.got if i.name == name]

    def limits(self) -> list[str]:
        return [i.fields["limit"] for i in self.got
                if i.name in ("connection.limit", "connection.refused")]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def engine(tmp_path: Path, svc: dict[str, Any], **top: Any) -> AsyncIterator[
        tuple[Engine, Recorder]]:
    raw = only(svc, **top)
    raw.setdefault("sinks", {"logsql": {"enabled": False}, "jsonlog": {"enabled": False}})
    cfg = configmod.parse(configmod.merge(configmod._load_yaml(configmod.default_text(), ""),
                                          raw))
    eng = Engine(cfg, tmp_path / "state", 0, ["127.0.0.1"])
    rec = Recorder()
    eng.bus.add(rec, 100_000, 100)
    await eng.start(eng.bind_all())
    try:
        yield eng, rec
    finally:
        await eng.stop()


async def connect(port: int, source: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True once the server closed or reset the connection, False if it stayed open."""
    try:
        async with asyncio.timeout(within):
            while True:
                if not await reader.read(65536):
                    return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def settle(rec: Recorder, name: str, count: int, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while len(rec.fields(name)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def blackhole(port: int, **limits: Any) -> dict[str, Any]:
    return {"blackhole": {"tcp_ports": [port], "udp_ports": [], "limits": limits}}


def test_global_connection_cap(tmp_path):
    async def main():
        port = free_port()
        async with engine(tmp_path, blackhole(port), limits={"max_connections": 3}) as (_, rec):
            conns = [await connect(port) for _ in range(5)]
            await settle(rec, "connection.refused", 2)
            states = [await closed_by_server(r, 0.3) for r, _ in conns]
            assert states == [False, False, False, True, True]
            assert [f["limit"] for f in rec.fields("connection.refused")] == \
                ["max_connections"] * 2
            conns[0][1].close()  # one leaves: room for one more
            await settle(rec, "connection.free", 1)
            late = await connect(port)
            assert not await closed_by_server(late[0], 0.3)
            assert len(rec.fields("connection.refused")) == 2
            for _, w in [*conns[1:3], late]:
                w.close()

    asyncio.run(main())


def test_per_address_cap(tmp_path):
    async def main():
        port = free_port()
        async with engine(tmp_path, blackhole(port, max_per_address=2)) as (_, rec):
            a = [await connect(port) for _ in range(3)]
            other = await connect(port, "127.0.0.2")  # another address is not affected
            await settle(rec, "connection.refused", 1)
            assert [await closed_by_server(r, 0.3) for r, _ in a] == [False, False, True]
            assert not await closed_by_server(other[0], 0.2)
            (refused,) = rec.fields("connection.refused")
            assert refused["limit"] == "max_per_address"
            assert refused["remote_host"] == "127.0.0.1"

    asyncio.run(main())


def test_idle_timeout(tmp_path):
    async def main():
        port = free_port()
        async with engine(tmp_path, blackhole(port, idle_timeout=0.5)) as (_, rec):
            quiet = await connect(port)
            busy = await connect(port)
            t0 = time.monotonic()
            for _ in range(8):  # the busy one keeps talking for 2.4 s
                busy[1].write(b"x")
                await asyncio.sleep(0.3)
            assert await closed_by_server(quiet[0], 0.1)
            assert not await closed_by_server(busy[0], 0.05)
            assert await closed_by_server(busy[0], 3.0)
            assert time.monotonic() - t0 < 5
            await settle(rec, "connection.free", 2)
            assert rec.limits() == ["idle_timeout", "idle_timeout"]
            assert {f["reason"] for f in rec.fields("connection.free")} == {"idle_timeout"}

    asyncio.run(main())


def test_max_session_time(tmp_path):
    async def main():
        port = free_port()
        async with engine(tmp_path, blackhole(port, max_session_time=1.0,
                                              idle_timeout=60)) as (_, rec):
            r, w = await connect(port)
            t0 = time.monotonic()
            closed = False
            while time.monotonic() - t0 < 4 and not closed:
                w.write(b"still here")
                closed = await closed_by_server(r, 0.2)
            assert closed and 1.0 <= time.monotonic() - t0 < 3.5
            await settle(rec, "connection.free", 1)
            assert rec.limits() == ["max_session_time"]
            assert rec.fields("connection.limit")[0]["value"] == 1.0

    asyncio.run(main())


def test_max_bytes_in(tmp_path):
    async def main():
        port = free_port()
        async with engine(tmp_path, blackhole(port, max_bytes_in=1000)) as (_, rec):
            r, w = await connect(port)
            w.write(b"a" * 600)
            await asyncio.sleep(0.2)
            assert not await closed_by_server(r, 0.1)
            w.write(b"b" * 600)
            assert await closed_by_server(r, 2.0)
            await settle(rec, "connection.free", 1)
            assert rec.limits() == ["max_bytes_in"]
            seen = sum(f["size"] for f in rec.fields("blackhole.data"))
            assert seen <= 1000  # bytes past the limit never reach the machine
            (free,) = rec.fields("connection.free")
            assert free["reason"] == "max_bytes_in" and free["bytes_in"] > 1000

    asyncio.run(main())


def test_max_transcript_bytes(tmp_path):
    async def main():
        port = free_port()
        async with engine(tmp_path, blackhole(port, max_transcript_bytes=1000)) as (eng, rec):
            _, w = await connect(port)
            for _ in range(5):
                w.write(b"z" * 1000)
                await asyncio.sleep(0.05)
            w.close()
            await settle(rec, "connection.free", 1)
            return eng.state_dir

    state = asyncio.run(main())
    (path,) = (state / "transcripts").rglob("*.jsonl")
    from muscipula import transcripts

    _, chunks = transcripts.read(path)
    # the bound counts each chunk with its head
    assert sum(len(data) for _, _, data in chunks) == 1000 - transcripts.FRAME.size


def test_max_transcript_out_bytes_caps_only_what_was_sent(tmp_path, chatty):
    async def main():
        port = free_port()
        svc = {"chatty": {"tcp_ports": [port], "limits": {"max_transcript_out_bytes": 1000}}}
        async with engine(tmp_path, svc) as (eng, rec):
            r, w = await connect(port)
            w.write(b"F")  # a 256 KiB answer
            await r.readexactly(256 * 1024)
            for _ in range(3):
                w.write(b"z" * 2000)  # echoed back in upper case
                await r.readexactly(2000)
            w.close()
            await settle(rec, "connection.free", 1)
            return eng.state_dir

    state = asyncio.run(main())
    (path,) = (state / "transcripts").rglob("*.jsonl")
    from muscipula import transcripts

    _, chunks = transcripts.read(path)
    sent = sum(len(data) for _, d, data in chunks if d == "out")
    got = b"".join(data for _, d, data in chunks if d == "in")
    assert sent == 1000
    assert got == b"F" + b"z" * 6000


def test_max_transcript_memory_is_shared_by_open_connections(tmp_path):
    async def main():
        port = free_port()
        async with engine(tmp_path, blackhole(port), limits={"max_transcript_memory": 3000}) \
                as (eng, rec):
            writers = [(await connect(port))[1] for _ in range(3)]
            for w in writers:  # all open at once: 6000 bytes wanted, 3000 allowed
                w.write(b"a" * 2000)
                await asyncio.sleep(0.05)
            for w in writers:
                w.close()
            await settle(rec, "connection.free", 3)
            for _ in range(300):  # given back once the writer has sent them to its process
                if eng.shared.transcript_room == 3000:
                    break
                await asyncio.sleep(0.01)
            room = eng.shared.transcript_room
            _, w = await connect(port)  # the budget is back once they are written
            w.write(b"b" * 2000)
            await asyncio.sleep(0.05)
            w.close()
            await settle(rec, "connection.free", 4)
            return eng.state_dir, room

    state, room = asyncio.run(main())
    assert room == 3000
    from muscipula import transcripts

    sizes = []
    for path in (state / "transcripts").rglob("*.jsonl"):
        for _, chunks in transcripts.records(path):
            sizes.append(sum(len(data) for _, _, data in chunks))
    # each chunk's frame head is charged too: the second connection got what the first
    # left, less its own chunk's head
    head = transcripts.FRAME.size
    assert sorted(sizes) == [3000 - 2000 - 2 * head, 2000, 2000]


def test_udp_peer_cap(tmp_path):
    async def main():
        port = free_port(socket.SOCK_DGRAM)
        svc = {"blackhole": {"tcp_ports": [], "udp_ports": [port],
                             "limits": {"max_udp_peers": 2}}}
        async with engine(tmp_path, svc) as (_, rec):
            socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
            for i, s in enumerate(socks):
                s.sendto(b"hello %d" % i, ("127.0.0.1", port))
                await settle(rec, "connection.udp.accept", i + 1)
                await asyncio.sleep(0.05)
            await settle(rec, "connection.free", 1)
            for s in socks:
                s.close()
            assert rec.limits() == ["max_udp_peers"]
            accepts = rec.fields("connection.udp.accept")
            (free,) = rec.fields("connection.free")
            assert len(accepts) == 3
            # the peer quiet the longest (the first) made room
            assert free["connection"].remote_port == accepts[0]["connection"].remote_port
            assert free["reason"] == "max_udp_peers"

    asyncio.run(main())


# ------------------------------------------- limits that need a service that talks


def test_max_buffered_out(tmp_path, chatty):
    async def main():
        port = free_port()
        svc = {"chatty": {"tcp_ports": [port], "limits": {"max_buffered_out": 512 * 1024}}}
        async with engine(tmp_path, svc) as (_, rec):
            _, w = await connect(port)
            w.transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
                socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            w.transport.pause_reading()  # type: ignore[attr-defined]  # a peer that never reads
            for _ in range(40):
                w.write(b"F")
                await asyncio.sleep(0.01)
                if rec.fields("connection.limit"):
                    break
            await settle(rec, "connection.free", 1)
            assert rec.limits() == ["max_buffered_out"]
            assert rec.fields("connection.free")[0]["reason"] == "max_buffered_out"
            w.close()

    asyncio.run(main())


def test_child_caps_and_accept_timeout(tmp_path, chatty):
    async def main():
        port = free_port()
        svc = {"chatty": {"tcp_ports": [port],
                          "limits": {"max_children": 2, "child_accept_timeout": 0.5}}}
        async with engine(tmp_path, svc) as (_, rec):
            _, w = await connect(port)
            w.write(b"LLL")
            await settle(rec, limits_service.INCIDENT, 3)
            first = rec.fields(limits_service.INCIDENT)[:3]
            assert sorted(f["event"] for f in first) == ["ChildFailed", "ChildListening",
                                                         "ChildListening"]
            failed = next(f for f in first if f["event"] == "ChildFailed")
            assert failed["tag"] == "c3" and "too many" in failed["reason"]
            assert rec.limits() == ["max_children"]
            # nobody connects to the two listeners: each gives up after the accept timeout
            await settle(rec, limits_service.INCIDENT, 5, within=3)
            late = rec.fields(limits_service.INCIDENT)[3:]
            assert [(f["event"], f["reason"]) for f in late] == [("ChildFailed", "timeout")] * 2
            w.write(b"L")  # the slots are free again
            await settle(rec, limits_service.INCIDENT, 6)
            assert rec.fields(limits_service.INCIDENT)[5]["event"] == "ChildListening"
            w.close()

    asyncio.run(main())


def test_refused_connections_reach_logsql(honeypot_factory):
    """Through the real subprocess: refused peers are logsql `reject` rows; nothing lost."""
    hp = honeypot_factory(only({"blackhole": {"tcp_ports": [23], "udp_ports": []}},
                               limits={"max_connections": 2}))
    held = [socket.create_connection(("127.0.0.1", hp.port(23)), timeout=5) for _ in range(4)]
    time.sleep(0.3)
    for s in held:
        s.close()
    assert hp.stop() == 0
    rows = hp.rows("SELECT connection_type, count(*) FROM connections GROUP BY 1 ORDER BY 1")
    assert rows == [("accept", 2), ("reject", 2)]
    assert len(hp.json_lines()) == 2
    for sink in hp.counters()["sinks"].values():
        assert sink["dropped"] == 0 and sink["failed"] == 0
