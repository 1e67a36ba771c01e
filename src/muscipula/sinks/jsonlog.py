"""JSON lines: one object per connection when it ends, with the reference log_json names (compat).

T-Pot/ELK dashboards read these field names; protocols add their detail with
`detail()`, which folds an incident into the connection's pending object.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from muscipula.config import JsonSink
from muscipula.incidents import Connection, Incident

Folder = Callable[[dict[str, Any], Incident], None]
FOLDERS: dict[str, Folder] = {}


def detail(*names: str) -> Callable[[Folder], Folder]:
    def register(fn: Folder) -> Folder:
        for name in names:
            FOLDERS[name] = fn
        return fn

    return register


def append(obj: dict[str, Any], path: tuple[str, ...], item: Any, cap: int) -> None:
    """Append `item` to the list at `path` in `obj`, creating it; at most `cap` items."""
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    items = obj.setdefault(path[-1], [])
    if len(items) < cap:
        items.append(item)


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


@detail("login")
def _credentials(obj: dict[str, Any], inc: Incident) -> None:
    f = inc.fields
    append(obj, ("credentials",),
           {"username": _text(f.get("username")), "password": _text(f.get("password"))},
           obj["_cap"])


@detail("download.offer")
def _offer(obj: dict[str, Any], inc: Incident) -> None:
    append(obj, ("offers",), _text(inc.fields.get("url")), obj["_cap"])


@detail("download.complete.hash")
def _download(obj: dict[str, Any], inc: Incident) -> None:
    f = inc.fields
    append(obj, ("downloads",), {"url": _text(f.get("url")), "md5": f.get("md5"),
                                 "sha256": f.get("sha256"), "size": f.get("size")},
           obj["_cap"])


@detail("connection.tls.hello")
def _tls_hello(obj: dict[str, Any], inc: Incident) -> None:
    f = inc.fields
    obj["tls"] = {k: f.get(k) for k in ("sni", "version", "ciphers", "extensions", "groups",
                                        "point_formats", "alpn", "ja3", "ja3_hash")}


def flatten(obj: dict[str, Any]) -> dict[str, Any]:
    """flat_data (compat): lists of objects become objects of lists, lists of text joined."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out[key] = flatten(value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            merged: dict[str, list[Any]] = {}
            for item in value:
                for k, v in item.items():
                    merged.setdefault(k, []).append(v)
            out[key] = {k: _join(v) for k, v in merged.items()}
        else:
            out[key] = value
    return out


def _join(values: list[Any]) -> Any:
    flat = [" ".join(map(str, v)) if isinstance(v, list) else v for v in values]
    return flat


class RotatingFile:
    """Append-only file rotated by size or by UTC day, keeping `keep` old files."""

    def __init__(self, path: Path, max_bytes: int, daily: bool, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.daily = daily
        self.keep = keep
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "ab")  # noqa: SIM115 - kept open for the sink's life
        self.day = self._day()

    @staticmethod
    def _day() -> str:
        return time.strftime("%Y-%m-%d", time.gmtime())

    def write(self, data: bytes) -> None:
        day = self._day()
        if (self.daily and day != self.day) or (
            self.max_bytes and self.fh.tell() + len(data) > self.max_bytes and self.fh.tell()
        ):
            self.rotate(self.day)
            self.day = day
        self.fh.write(data)
        self.fh.flush()

    def rotate(self, day: str) -> None:
        self.fh.close()
        stamp = time.strftime("%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.{day}.{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.{day}.{stamp}.{n}")
            n += 1
        os.replace(self.path, target)
        old = sorted(self.path.parent.glob(self.path.name + ".*"), key=lambda p: p.stat().st_mtime)
        for stale in old[: max(len(old) - self.keep, 0)]:
            stale.unlink(missing_ok=True)
        self.fh = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self.fh.close()


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


class JsonLog:
    name = "jsonlog"

    def __init__(self, path: Path, cfg: JsonSink) -> None:
        self.path = path
        self.cfg = cfg
        self.open_conns: dict[int, dict[str, Any]] = {}
        self.file: RotatingFile | None = None
        self.overflow = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsonlog")

    def open_sync(self) -> None:
        rot = self.cfg.rotation
        self.file = RotatingFile(self.path, rot.max_bytes, rot.daily, rot.keep)

    def close_sync(self) -> None:
        if self.file is not None:
            self.file.close()

    async def open(self) -> None:
        self.open_sync()

    def _start(self, c: Connection) -> None:
        if len(self.open_conns) >= self.cfg.max_open_connections:
            self.overflow += 1
            return
        self.open_conns[c.id] = {
            "connection": {"protocol": c.protocol, "transport": c.transport, "type": c.type},
            "dst_ip": c.local_host, "dst_port": c.local_port,
            "src_hostname": "", "src_ip": c.remote_host, "src_port": c.remote_port,
            "timestamp": iso(c.start),
            "_cap": self.cfg.max_items_per_connection,
        }

    def fold(self, batch: list[Incident]) -> list[bytes]:
        lines: list[bytes] = []
        conns = self.open_conns
        for inc in batch:
            name = inc.name
            if name == "connection.free":
                obj = conns.pop(inc.conn, None)
                if obj is None:
                    c = inc.fields.get("connection")
                    if not isinstance(c, Connection):
                        continue
                    self._start(c)
                    obj = conns.pop(inc.conn, None)
                    if obj is None:
                        continue
                del obj["_cap"]
                c = inc.fields["connection"]
                obj["connection"]["transport"] = c.transport
                if self.cfg.flat_data:
                    obj = flatten(obj)
                lines.append(json.dumps(obj, default=_text, separators=(",", ":")).encode()
                             + b"\n")
            elif name.startswith("connection.") and "connection" in inc.fields:
                if inc.conn not in conns:
                    self._start(inc.fields["connection"])
            else:
                fn = FOLDERS.get(name)
                obj = conns.get(inc.conn)
                if fn is not None and obj is not None:
                    fn(obj, inc)
        return lines

    def write_sync(self, batch: list[Incident]) -> None:
        """Fold and write in the sink's one thread: the event loop only hands the batch over."""
        lines = self.fold(batch)
        if lines:
            assert self.file is not None
            self.file.write(b"".join(lines))

    async def write(self, batch: list[Incident]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self.write_sync, batch)

    async def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self._pool.shutdown(wait=True)


def collect(name: str, path: tuple[str, ...], shape: Callable[[Any], Any] = dict) -> None:
    """Fold each `name` incident into the list at `path`: its fields, as `shape` makes them."""

    def fold(obj: dict[str, Any], inc: Incident) -> None:
        append(obj, path, shape(inc.fields), obj["_cap"])

    FOLDERS[name] = fold
