"""hpfeeds sink against the real broker from the `hpfeeds` package, on loopback.

The broker (hpfeeds.broker.server.Server with its in-memory authenticator) and a
subscriber (hpfeeds' own asyncio client) run in the test's loop; the sink under
test speaks the wire protocol itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from hpfeeds.asyncio import ClientSession
from hpfeeds.broker.auth import memory
from hpfeeds.broker.server import Server

from muscipula.config import HpfeedsSink
from muscipula.incidents import Connection, Incident
from muscipula.sinks import hpfeeds
from muscipula.sinks.hpfeeds import Hpfeeds
from muscipula.store import Store
from tests.integration.test_limits import connect, engine, free_port

CHANNELS = [hpfeeds.CONNECTIONS, hpfeeds.CAPTURE, hpfeeds.DCERPC, hpfeeds.SHELLCODE,
            hpfeeds.UNIQUE]
CREDS = {
    "sensor": {"secret": "s3nsor", "owner": "ops", "pubchans": CHANNELS, "subchans": []},
    "reader": {"secret": "r3ader", "owner": "ops", "pubchans": [], "subchans": CHANNELS},
}


@contextlib.asynccontextmanager
async def broker(port: int) -> AsyncIterator[Server]:
    server = Server(auth=memory.Authenticator(CREDS), name="broker")
    server.add_endpoint_legacy(f"127.0.0.1:{port}")
    task = asyncio.ensure_future(server.serve_forever())
    await asyncio.wait_for(asyncio.shield(server.when_started), 5)
    try:
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        for peer in list(server.connections):  # as a broker process that exits would
            peer.transport.abort()


@contextlib.asynccontextmanager
async def subscriber(port: int) -> AsyncIterator[ClientSession]:
    client = ClientSession("127.0.0.1", port, "reader", "r3ader")
    for channel in CHANNELS:
        client.subscribe(channel)
    await asyncio.wait_for(asyncio.shield(client.when_connected), 5)
    await asyncio.sleep(0.1)  # the broker has our subscriptions
    try:
        yield client
    finally:
        client.closing = True
        if client.protocol:
            client.protocol.transport.close()
        client._ensure_connected.cancel()


async def received(client: ClientSession, count: int, within: float = 5) -> list[tuple[str, Any]]:
    out = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while len(out) < count:
                ident, channel, data = await client.read()
                assert ident == "sensor"
                out.append((channel, data))
    return out


def sink_config(port: int, secret: str = "s3nsor", **kw: Any) -> HpfeedsSink:
    return HpfeedsSink(enabled=True, host="127.0.0.1", port=port, ident="sensor",
                       secret=secret, reconnect_delay=0.2, **kw)


def conn(cid: int = 5) -> Connection:
    return Connection(cid, "tcp", "smbd", "accept", "::ffff:192.0.2.10", 445, "203.0.113.9",
                      50123, start=1_700_000_000.0)


def test_publishes_dionaea_channels_after_a_late_broker(tmp_path):
    """Incidents written before the broker exists wait, then all arrive, in order."""
    store = Store(tmp_path / "bin", 1 << 20, 1 << 30)
    exe = b"MZ" + bytes(range(256)) * 20
    stored = store.put(exe)
    assert stored is not None
    c = conn()
    md5 = stored.md5
    incidents = [
        Incident("connection.tcp.accept", 5, 1.0, {"connection": c}),
        Incident("smb.dcerpc.request", 5, 1.0,
                 {"uuid": "4b324fc8-1670-01d3-1278-5a47bf6ee188", "opnum": 31}),
        Incident("download.complete", 5, 1_700_000_100.5,
                 {"url": "http://198.51.100.2/x.exe", "path": str(stored.path), "md5": md5}),
        Incident("download.complete.unique", 5, 1_700_000_100.5,
                 {"url": "http://198.51.100.2/x.exe", "md5": md5}),
        Incident("download.complete.again", 5, 1_700_000_101.0,
                 {"url": "http://198.51.100.2/x.exe", "md5": md5}),
        Incident("connection.refused", 6, 1.0, {"limit": "max_connections",
                                                "remote_host": "203.0.113.10",
                                                "remote_port": 4000}),
        Incident("connection.free", 5, 2.0, {"connection": c}),
    ]

    async def main():
        port = free_port()
        sink = Hpfeeds(sink_config(port))
        await sink.open()
        await sink.write(incidents)
        await asyncio.sleep(0.5)  # several failed connects meanwhile
        assert not sink.authenticated and len(sink.pending) == 6
        async with broker(port), subscriber(port) as client:
            got = await received(client, 6)
            await sink.close()
        return got, sink

    got, sink = asyncio.run(main())
    assert [ch for ch, _ in got] == [hpfeeds.CONNECTIONS, hpfeeds.DCERPC, hpfeeds.CAPTURE,
                                     hpfeeds.UNIQUE, hpfeeds.CAPTURE, hpfeeds.CONNECTIONS]
    conn_msg = json.loads(got[0][1])
    assert conn_msg == {"connection_type": "accept", "connection_transport": "tcp",
                        "connection_protocol": "smbd", "remote_host": "203.0.113.9",
                        "remote_port": 50123, "remote_hostname": "", "local_host": "192.0.2.10",
                        "local_port": 445}
    dce = json.loads(got[1][1])
    assert dce == {"uuid": "4b324fc8-1670-01d3-1278-5a47bf6ee188", "opnum": 31,
                   "saddr": "203.0.113.9", "sport": "50123", "daddr": "192.0.2.10",
                   "dport": "445"}
    cap = json.loads(got[2][1])
    assert cap["md5"] == md5 and cap["sha512"] == hashlib.sha512(exe).hexdigest()
    assert cap["url"] == "http://198.51.100.2/x.exe" and cap["sport"] == "50123"
    assert cap["time"].startswith("2023-11-14 22:15:00.500000") and cap["time"].endswith("+0000")
    assert bytes(got[3][1]) == exe  # the file itself, for unique downloads only
    assert json.loads(got[5][1])["connection_type"] == "reject"
    assert sink.published == 6 and sink.dropped == 0 and sink.connects == 1


def test_wrong_secret_keeps_messages_queued_and_bounded(tmp_path):
    async def main():
        port = free_port()
        async with broker(port):
            sink = Hpfeeds(sink_config(port, secret="wrong"), max_pending=3)
            await sink.open()
            await sink.write([Incident("connection.tcp.accept", i, 1.0,
                                       {"connection": conn(i)}) for i in range(5)])
            await asyncio.sleep(1.0)
            state = (sink.authenticated, len(sink.pending), sink.dropped, sink.connects)
            await sink.close()
        return state, sink

    (authed, pending, dropped, connects), sink = asyncio.run(main())
    assert not authed and pending == 3 and dropped == 2
    assert connects >= 2  # it kept trying, with its delay
    assert sink.published == 0 and sink.dropped == 5  # what never left is counted at close


def test_reconnects_when_the_broker_comes_back(tmp_path):
    async def main():
        port = free_port()
        sink = Hpfeeds(sink_config(port))
        await sink.open()
        async with broker(port), subscriber(port) as client:
            await sink.write([Incident("connection.tcp.accept", 1, 1.0,
                                       {"connection": conn(1)})])
            first = await received(client, 1)
        await asyncio.sleep(0.3)  # broker gone
        await sink.write([Incident("connection.tcp.accept", 2, 1.0, {"connection": conn(2)})])
        await asyncio.sleep(0.3)
        async with broker(port), subscriber(port) as client:
            second = await received(client, 1)
            await sink.close()
        return first, second, sink

    first, second, sink = asyncio.run(main())
    assert len(first) == 1 and len(second) == 1
    assert json.loads(second[0][1])["remote_port"] == 50123
    assert sink.connects >= 2 and sink.published == 2


def test_engine_publishes_blackhole_connections(tmp_path):
    """`sinks.hpfeeds.enabled` in config: the engine's own sink reaches the broker."""

    async def main():
        bport, port = free_port(), free_port()
        sinks = {"logsql": {"enabled": False}, "jsonlog": {"enabled": False},
                 "hpfeeds": {"enabled": True, "host": "127.0.0.1", "port": bport,
                             "ident": "sensor", "secret": "s3nsor", "reconnect_delay": 0.2}}
        svc = {"blackhole": {"tcp_ports": [port], "udp_ports": []}}
        async with broker(bport), subscriber(bport) as client, \
                engine(tmp_path, svc, sinks=sinks):
            for _ in range(3):
                _, w = await connect(port)
                w.write(b"hi")
                await w.drain()
                w.close()
            got = await received(client, 3)
        return got

    got = asyncio.run(main())
    assert [ch for ch, _ in got] == [hpfeeds.CONNECTIONS] * 3
    msg = json.loads(got[0][1])
    assert msg["connection_protocol"] == "blackhole" and msg["remote_host"] == "127.0.0.1"


def test_wire_helpers():
    nonce = b"\x01\x02\x03\x04"
    raw = hpfeeds.auth("sensor", "s3nsor", nonce)
    assert raw[:5] == (5 + 1 + 6 + 20).to_bytes(4, "big") + b"\x02"
    assert raw[12:] == hashlib.sha1(nonce + b"s3nsor").digest()
    pub = hpfeeds.publish("a", "ch", b"{}")
    assert pub == b"\x00\x00\x00\x0c\x03\x01a\x02ch{}"
    assert hpfeeds.parse_info(b"\x06broker" + nonce) == ("broker", nonce)

    async def bad_frame():
        reader = asyncio.StreamReader()
        reader.feed_data(b"\xff\xff\xff\xff\x03")
        try:
            await hpfeeds.read_frame(reader)
        except ValueError as exc:
            return str(exc)
        return ""

    assert "out of bounds" in asyncio.run(bad_frame())


def test_a_capture_after_its_connections_end_keeps_its_addresses():
    sink = Hpfeeds(HpfeedsSink(enabled=True), max_late=1)
    a = Connection(1, "tcp", "httpd", "accept", "192.0.2.1", 80, "203.0.113.9", 40001)
    b = Connection(2, "tcp", "httpd", "accept", "192.0.2.1", 80, "203.0.113.8", 40002)
    for c in (a, b):
        sink._messages(Incident("connection.tcp.accept", c.id, 0.0, {"connection": c}))
        sink._messages(Incident("connection.free", c.id, 0.0, {"connection": c}))
    fields = {"url": "http://x/y", "md5": "0" * 32}
    late = sink._messages(Incident("download.complete.again", 2, 0.0, fields))
    assert late[0][0] == hpfeeds.CAPTURE and late[0][1]["saddr"] == "203.0.113.8"
    forgotten = sink._messages(Incident("download.complete.again", 1, 0.0, fields))
    assert forgotten[0][1]["saddr"] == ""  # past max_late


def test_file_paths_are_remembered_newest_first_past_the_bound(monkeypatch):
    monkeypatch.setattr(hpfeeds, "MAX_PATHS", 3)
    sink = Hpfeeds(HpfeedsSink(enabled=True))
    for n in range(5):
        sink._messages(Incident("download.complete", 1, 0.0,
                                {"md5": f"{n:032x}", "path": f"/store/{n}"}))
    assert list(sink.paths) == [f"{n:032x}" for n in (2, 3, 4)]
