"""The store: files by md5 with sha256 recorded, atomic rename, quotas, no attacker paths."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from muscipula.config import Limits
from muscipula.incidents import Bus, Connection
from muscipula.machine import BaseMachine, CaptureData, CaptureEnd
from muscipula.net.runtime import Caps, ServiceRuntime, Shared
from muscipula.net.session import Session
from muscipula.store import Store


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def visible(store: Store) -> list[str]:
    return sorted(p.name for p in store.dir.iterdir() if p.is_file())


def test_named_by_md5_with_sha256_and_atomic_rename(tmp_path):
    store = Store(tmp_path / "bin", 1 << 20, 1 << 30)
    cap = store.open()
    assert cap is not None
    cap.write(b"MZ\x90\x00")
    cap.write(b"rest of the file")
    incoming = list(store.tmp_dir.iterdir())
    assert len(incoming) == 1  # bytes go to a temp file first ...
    assert visible(store) == []  # ... and nothing is visible under a final name yet
    stored = cap.finish()
    data = b"MZ\x90\x00rest of the file"
    assert stored.md5 == md5(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert (stored.size, stored.new, stored.truncated) == (len(data), True, False)
    assert stored.path == store.dir / md5(data)
    assert stored.path.read_bytes() == data
    assert list(store.tmp_dir.iterdir()) == []
    assert visible(store) == [md5(data)]
    assert stat.S_IMODE(os.stat(stored.path).st_mode) == 0o600  # not world-readable


def test_same_content_twice_is_again_and_counted_once(tmp_path):
    store = Store(tmp_path / "bin", 1 << 20, 1 << 30)
    first = store.put(b"payload")
    second = store.put(b"payload")
    assert first is not None and second is not None
    assert first.new and not second.new
    assert first.md5 == second.md5
    assert store.used == len(b"payload")
    assert visible(store) == [md5(b"payload")]
    assert list(store.tmp_dir.iterdir()) == []


def test_per_file_quota_truncates_and_keeps_what_fits(tmp_path):
    store = Store(tmp_path / "bin", 10, 1 << 30)
    cap = store.open()
    assert cap is not None
    assert cap.write(b"12345678")
    assert not cap.write(b"90abc")  # crosses the per-file cap
    assert not cap.write(b"more")
    stored = cap.finish()
    assert stored.truncated and stored.size == 10
    assert stored.path.read_bytes() == b"1234567890"


def test_total_quota_refuses_new_files_once_full(tmp_path):
    store = Store(tmp_path / "bin", 100, 25)
    a = store.put(b"a" * 20)
    assert a is not None and not a.truncated
    b = store.put(b"b" * 20)
    assert b is not None and b.truncated and b.size == 5  # what room was left
    assert store.room() == 0
    assert store.open() is None
    assert sum(p.stat().st_size for p in store.dir.iterdir() if p.is_file()) <= 25


def test_open_file_cap_and_abort(tmp_path):
    store = Store(tmp_path / "bin", 100, 1000, max_open_files=2)
    c1, c2 = store.open(), store.open()
    assert c1 is not None and c2 is not None
    assert store.open() is None
    c1.write(b"partial")
    c1.abort()
    assert store.used == 0 and store.open_files == 1
    assert len(list(store.tmp_dir.iterdir())) == 1  # only c2's temp file is left
    c2.abort()
    assert list(store.tmp_dir.iterdir()) == []


def test_restart_counts_existing_files_and_removes_stale_temp(tmp_path):
    store = Store(tmp_path / "bin", 100, 1000)
    store.put(b"x" * 40)
    (store.tmp_dir / "leftover").write_bytes(b"half a file")
    again = Store(tmp_path / "bin", 100, 1000)
    assert again.used == 40
    assert list(again.tmp_dir.iterdir()) == []


# ------------------------------------------ through the driver's capture actions


class RecordingBus(Bus):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def emit(self, name, conn=0, fields=None, now=None):  # type: ignore[override]
        self.seen.append((name, dict(fields or {})))


class MemorySession(Session):
    def _send(self, data, addr):
        pass

    def _close(self, abort):
        pass


def session(tmp_path: Path, store: Store) -> tuple[MemorySession, RecordingBus]:
    bus = RecordingBus()
    shared = Shared(bus=bus, store=store, caps=Caps(10), transcripts=None,
                    tls_context=lambda: None)  # type: ignore[arg-type,return-value]
    rt = ServiceRuntime("t", "t", lambda peer: BaseMachine(), Limits(), False, shared)
    conn = Connection(1, "tcp", "t", "accept", "127.0.0.1", 21, "127.0.0.2", 5000)
    return MemorySession(rt, conn, BaseMachine(), 0.0), bus


def test_attacker_names_never_reach_the_disk(tmp_path):
    store = Store(tmp_path / "bin", 1 << 20, 1 << 30)
    s, bus = session(tmp_path, store)
    evil = "../../../../tmp/owned.sh"
    s.run([CaptureData(evil, b"#!/bin/sh\n"), CaptureData(evil, b"rm -rf /\n"),
           CaptureEnd(evil, f"ftp://h/{evil}")])
    s.run([CaptureData("/etc/passwd", b"#!/bin/sh\n"),
           CaptureData("/etc/passwd", b"rm -rf /\n"), CaptureEnd("/etc/passwd", "x")])
    data = b"#!/bin/sh\nrm -rf /\n"
    assert visible(store) == [md5(data)]
    assert not Path("/tmp/owned.sh").exists()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [md5(data)]
    names = [n for n, _ in bus.seen]
    assert names == ["download.complete", "download.complete.hash", "download.complete.unique",
                     "download.complete", "download.complete.hash", "download.complete.again"]
    complete = bus.seen[0][1]
    assert complete["url"] == f"ftp://h/{evil}" and complete["md5"] == md5(data)
    assert complete["sha256"] == hashlib.sha256(data).hexdigest() and complete["complete"]


def test_quota_refusal_becomes_an_incident(tmp_path):
    store = Store(tmp_path / "bin", 4, 1 << 30)
    s, bus = session(tmp_path, store)
    s.run([CaptureData("a", b"123456"), CaptureEnd("a", "tftp://h/a")])
    names = [n for n, _ in bus.seen]
    assert names[0] == "store.refused" and bus.seen[0][1]["reason"] == "max_file_bytes"
    done = dict(bus.seen)["download.complete"]
    assert done["size"] == 4 and done["complete"] is False
