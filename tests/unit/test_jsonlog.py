"""jsonlog: dionaea's log_json field names, flat_data, plain IPv4, rotation by size and day."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

from muscipula.config import JsonSink, Rotation
from muscipula.incidents import Connection, Incident
from muscipula.sinks.jsonlog import JsonLog, RotatingFile, flatten

T0 = 1_700_000_000.25


def conn(cid: int, remote: str = "::ffff:203.0.113.5", local: str = "::ffff:192.0.2.1",
         protocol: str = "ftpd") -> Connection:
    return Connection(cid, "tcp", protocol, "accept", local, 21, remote, 51000, start=T0)


def session(cid: int, c: Connection | None = None) -> list[Incident]:
    c = c or conn(cid)
    return [
        Incident("connection.tcp.accept", cid, T0, {"connection": c}),
        Incident("login", cid, T0, {"username": "root", "password": b"t\xffoor"}),
        Incident("login", cid, T0, {"username": "admin", "password": "admin"}),
        Incident("blackhole.data", cid, T0, {"size": 3}),
        Incident("connection.free", cid, T0 + 2, {"connection": c, "reason": "closed"}),
    ]


def run(tmp_path: Path, batches: list[list[Incident]], **cfg) -> list[dict]:
    path = tmp_path / "log" / "connections.json"

    async def main() -> None:
        sink = JsonLog(path, JsonSink(**cfg))
        await sink.open()
        for batch in batches:
            await sink.write(batch)
        await sink.close()

    asyncio.run(main())
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_object_per_connection_with_dionaea_names(tmp_path):
    (obj,) = run(tmp_path, [session(7)])
    assert obj["connection"] == {"protocol": "ftpd", "transport": "tcp", "type": "accept",
                                 "close_reason": "closed"}
    assert obj["src_ip"] == "203.0.113.5" and obj["src_port"] == 51000
    assert obj["dst_ip"] == "192.0.2.1" and obj["dst_port"] == 21
    assert "src_hostname" in obj
    when = dt.datetime.fromisoformat(obj["timestamp"]).replace(tzinfo=dt.UTC)
    assert when.timestamp() == T0  # UTC
    assert obj["credentials"] == [{"username": "root", "password": "t\\xffoor"},
                                  {"username": "admin", "password": "admin"}]
    assert "_cap" not in obj


def test_objects_appear_only_when_connections_end(tmp_path):
    a, b = session(1), session(2)
    lines = run(tmp_path, [a[:3] + b[:2], b[2:], a[3:]])
    assert [x["credentials"][0]["username"] for x in lines] == ["root", "root"]
    assert len(lines) == 2


def test_ipv4_never_written_mapped(tmp_path):
    lines = run(tmp_path, [session(1), session(2, conn(2, remote="2001:db8::5",
                                                        local="2001:db8::1"))])
    assert lines[0]["src_ip"] == "203.0.113.5" and lines[0]["dst_ip"] == "192.0.2.1"
    assert lines[1]["src_ip"] == "2001:db8::5"
    raw = (tmp_path / "log" / "connections.json").read_text()
    assert "::ffff:" not in raw


def test_flat_data_turns_lists_of_objects_into_objects_of_lists(tmp_path):
    (obj,) = run(tmp_path, [session(3)], flat_data=True)
    assert obj["credentials"] == {"username": ["root", "admin"],
                                  "password": ["t\\xffoor", "admin"]}
    nested = {"ftp": {"commands": [{"command": "USER", "arguments": ["a", "b"]},
                                   {"command": "PASS", "arguments": ["x"]}]}}
    assert flatten(nested) == {"ftp": {"commands": {"command": ["USER", "PASS"],
                                                    "arguments": ["a b", "x"]}}}


def test_items_per_connection_are_capped(tmp_path):
    c = conn(1)
    batch = [Incident("connection.tcp.accept", 1, T0, {"connection": c})]
    batch += [Incident("login", 1, T0, {"username": str(i), "password": ""})
              for i in range(50)]
    batch.append(Incident("connection.free", 1, T0, {"connection": c}))
    (obj,) = run(tmp_path, [batch], max_items_per_connection=10)
    assert len(obj["credentials"]) == 10


def test_rotation_by_size_keeps_every_line(tmp_path):
    path = tmp_path / "j.json"
    rf = RotatingFile(path, max_bytes=100, daily=False, keep=100)
    for i in range(30):
        rf.write(b'{"n":%d,"pad":"xxxxxxxxxxxxxxxxxxxxxx"}\n' % i)
    rf.close()
    files = sorted(tmp_path.glob("j.json*"))
    assert len(files) > 5
    assert all(f.stat().st_size <= 100 for f in files)
    numbers = sorted(json.loads(line)["n"] for f in files for line in f.read_text().splitlines())
    assert numbers == list(range(30))


def test_rotation_keeps_at_most_keep_old_files(tmp_path):
    path = tmp_path / "j.json"
    rf = RotatingFile(path, max_bytes=10, daily=False, keep=3)
    for _ in range(10):
        rf.write(b"0123456789\n")
    rf.close()
    assert len(list(tmp_path.glob("j.json.*"))) == 3
    assert path.exists()


def test_rotation_by_day(tmp_path):
    path = tmp_path / "j.json"
    rf = RotatingFile(path, max_bytes=0, daily=True, keep=30)
    rf.write(b"today 1\n")
    rf.day = "2001-02-03"  # as if the file was opened on an earlier day
    rf.write(b"today 2\n")
    rf.write(b"today 3\n")
    rf.close()
    (old,) = tmp_path.glob("j.json.2001-02-03*")
    assert old.read_bytes() == b"today 1\n"
    assert path.read_bytes() == b"today 2\ntoday 3\n"
    # and without `daily`, a day change alone does not rotate
    other = RotatingFile(tmp_path / "k.json", max_bytes=0, daily=False, keep=30)
    other.day = "2001-02-03"
    other.write(b"x\n")
    other.close()
    assert list(tmp_path.glob("k.json.*")) == []


def test_rotation_config_reaches_the_sink(tmp_path):
    batches = [session(i) for i in range(1, 21)]
    run(tmp_path, batches, rotation=Rotation(max_bytes=600, daily=False, keep=50))
    files = list((tmp_path / "log").glob("connections.json*"))
    assert len(files) > 2
    total = sum(len(f.read_text().splitlines()) for f in files)
    assert total == 20


def test_one_fields_object_under_two_names_is_shaped_by_each(tmp_path, monkeypatch):
    """The session emits one dict as download.complete.hash and .unique."""
    from muscipula.sinks import jsonlog

    monkeypatch.setitem(jsonlog.COLLECTORS, "download.complete.hash",
                        (("hashes",), lambda f: f["md5"]))
    monkeypatch.setitem(jsonlog.COLLECTORS, "download.complete.unique",
                        (("unique",), lambda f: f["url"]))
    c = conn(1)
    base = {"url": "http://x/a", "md5": "0" * 32, "sha256": "1" * 64, "size": 3}
    (obj,) = run(tmp_path, [[
        Incident("connection.tcp.accept", 1, T0, {"connection": c}),
        Incident("download.complete.hash", 1, T0, base),
        Incident("download.complete.unique", 1, T0, base),
        Incident("connection.free", 1, T0, {"connection": c}),
    ]])
    assert obj["hashes"] == ["0" * 32] and obj["unique"] == ["http://x/a"]


def test_items_of_a_connection_never_announced_are_counted_skipped(tmp_path):
    sink = JsonLog(tmp_path / "j.json", JsonSink())
    sink.open_sync()
    sink.write_sync([Incident("login", 5, T0, {"username": "u", "password": "p"}),
                     Incident("blackhole.data", 5, T0, {"size": 1})])  # nothing to fold
    sink.close_sync()
    assert sink.skipped == 1
