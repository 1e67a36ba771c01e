"""JSON lines: one object per connection when it ends, with the reference log_json names (compat).

T-Pot/ELK dashboards read these field names; protocols add their detail with
`detail()`, which folds an incident into the connection's pending object, or
`collect()`, which appends a shape of the incident's fields to a list in it.

Collected items are kept as the JSON text they will have in the line (`Raw`),
encoded once per fields object and batch (the server shares the fields of
identical requests): a flood's requests cost one encoding, not one per
connection line, and a pending connection holds compact text rather than dicts.
What pending connections hold is bounded by `max_pending_bytes`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from muscipula.incidents import Connection, Incident

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from muscipula.config import JsonSink

Folder = Callable[[dict[str, Any], Incident], None]
Shape = Callable[[Mapping[str, Any]], Any]
FOLDERS: dict[str, Folder] = {}
#: incident name -> (path, shape) of `collect()`; the sink's fast path
COLLECTORS: dict[str, tuple[tuple[str, ...], Shape]] = {}
#: (incident name, connection protocol) -> folder run after the name's own (`detail(protocol=)`)
SCOPED: dict[tuple[str, str], Folder] = {}
_SCOPED_NAMES: set[str] = set()


def detail(*names: str, protocol: str | None = None) -> Callable[[Folder], Folder]:
    """Register a folder for `names`; with `protocol`, only on connections of that protocol,
    in addition to the name's general folder."""

    def register(fn: Folder) -> Folder:
        for name in names:
            if protocol is None:
                FOLDERS[name] = fn
                COLLECTORS.pop(name, None)
            else:
                SCOPED[(name, protocol)] = fn
                _SCOPED_NAMES.add(name)
        return fn

    return register


class Raw(str):
    """JSON text already encoded: written into the line as it is."""

    __slots__ = ()


def _plain(value: Any) -> Any:
    """What json cannot encode by itself: bytes as text, anything else as its str()."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def _encoder() -> Callable[[Any], str]:
    """Compact, ASCII-only JSON of one value; the C encoder made once, not once per call
    as json.dumps does (that was most of an item's cost). Incident fields are trees,
    never cyclic: no cycle check."""
    from json import encoder as e

    if e.c_make_encoder is None:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(separators=(",", ":"), default=_plain).encode
    make = e.c_make_encoder(None, _plain, e.encode_basestring_ascii, None, ":", ",", False,
                            False, True)

    def encode(value: Any) -> str:
        return "".join(make(value, 0))

    return encode


_encode = encode = _encoder()


def dumps(value: Any) -> str:
    """`value` as compact JSON; Raw values, and Raw items of lists, go in as they are."""
    if type(value) is dict:
        return "{" + ",".join([f"{_encode(str(k))}:{dumps(v)}" for k, v in value.items()]) + "}"
    if type(value) is list and value and isinstance(value[0], Raw):
        return "[" + ",".join([v if isinstance(v, Raw) else _encode(v) for v in value]) + "]"
    if isinstance(value, Raw):
        return value
    return _encode(value)


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


@detail("download.failed")
def _download_failed(obj: dict[str, Any], inc: Incident) -> None:
    f = inc.fields
    append(obj, ("downloads_failed",), {"url": _text(f.get("url")), "reason": f.get("reason"),
                                        "detail": _text(f.get("detail"))}, obj["_cap"])


@detail("shellcode.detected", "emu.profile", "emu.service", "shell.command")
def _emulation(obj: dict[str, Any], inc: Incident) -> None:
    f = inc.fields
    if inc.name == "shell.command":
        append(obj, ("shellcode", "commands"), {"shell": _text(f.get("shell")),
                                                "command": _text(f.get("command"))},
               obj["_cap"])
    elif inc.name == "shellcode.detected":
        append(obj, ("shellcode", "detected"), {"offset": f.get("offset"), "size": f.get("size"),
                                                "sha256": f.get("sha256")}, obj["_cap"])
    elif inc.name == "emu.profile":
        profile = f.get("profile")
        if isinstance(profile, str):
            try:
                profile = json.loads(profile)
            except ValueError:
                pass
        append(obj, ("shellcode", "profiles"), profile, obj["_cap"])
    else:
        append(obj, ("shellcode", "services"), _text(f.get("url")), obj["_cap"])


@detail("protocol.error", "connection.limit", "store.refused")
def _event(obj: dict[str, Any], inc: Incident) -> None:
    f = inc.fields
    if inc.name == "protocol.error":
        item = {"kind": inc.name, "detail": _text(f.get("detail")), "data": _text(f.get("data"))}
    elif inc.name == "connection.limit":
        item = {"kind": inc.name, "detail": f.get("limit"), "data": f.get("value")}
    else:
        item = {"kind": inc.name, "detail": f.get("reason"), "data": _text(f.get("url"))}
    append(obj, ("events",), item, obj["_cap"])


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


#: what a connection's line says of the connection itself (kept after its end)
_HEAD = ("connection", "dst_ip", "dst_port", "src_hostname", "src_ip", "src_port", "timestamp")


class JsonLog:
    name = "jsonlog"

    def __init__(self, path: Path, cfg: JsonSink, max_late: int = 50_000) -> None:
        self.path = path
        self.cfg = cfg
        self.open_conns: dict[int, dict[str, Any]] = {}
        #: the heads of the last `max_late` ended connections (oldest first): what comes
        #: after the end (a download, an emulation's findings) is a line of its own
        self.ended: dict[int, dict[str, Any]] = {}
        self.max_late = max_late
        self.file: RotatingFile | None = None
        self.overflow = 0
        #: incidents with something to fold whose connection was never seen (the sink
        #: started late): the sink process reports them failed, not written
        self.skipped = 0
        #: bytes of collected JSON text held for open connections (max_pending_bytes)
        self.pending_bytes = 0
        #: incidents folded into lines not written yet (their connection is open): not
        #: on disk, so the sink process does not count them written until they are
        self.held = 0
        self._pool: ThreadPoolExecutor | None = None

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
            "_lists": {}, "_bytes": 0, "_left_out": 0, "_n": 0,
        }

    def _settle(self, obj: dict[str, Any]) -> None:
        """Take the bookkeeping out of a finished object, its bytes and incidents given back."""
        del obj["_cap"], obj["_lists"]
        self.pending_bytes -= obj.pop("_bytes")
        self.held -= obj.pop("_n")
        left_out = obj.pop("_left_out")
        if left_out:
            obj["items_left_out"] = left_out

    def _line(self, obj: dict[str, Any]) -> bytes:
        if self.cfg.flat_data:
            return (_encode(flatten(obj)) + "\n").encode()
        return (dumps(obj) + "\n").encode()

    def _end(self, obj: dict[str, Any], fields: Mapping[str, Any]) -> bytes:
        """The connection's line, and what it held given back to the budget."""
        self._settle(obj)
        c = fields["connection"]
        head = obj["connection"]
        head["transport"] = c.transport
        ended = self.ended
        ended[c.id] = {key: obj[key] for key in _HEAD}
        if len(ended) > self.max_late:
            del ended[next(iter(ended))]
        reason = fields.get("reason")
        if reason is not None:
            head["close_reason"] = _plain(reason) if not isinstance(reason, str) else reason
        return self._line(obj)

    def _late(self, cid: int, late: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
        """The object for an incident that came after its connection ended, if that
        connection is still remembered: its head again, marked, written with this batch."""
        obj = late.get(cid)
        if obj is None:
            head = self.ended.get(cid)
            if head is None:
                return None
            obj = late[cid] = {**head, "connection": {**head["connection"]},
                               "after_end": True, "_cap": self.cfg.max_items_per_connection,
                               "_lists": {}, "_bytes": 0, "_left_out": 0, "_n": 0}
        return obj

    def fold(self, batch: list[Incident]) -> list[bytes]:
        lines: list[bytes] = []
        conns = self.open_conns
        late: dict[int, dict[str, Any]] = {}
        collectors = {} if self.cfg.flat_data else COLLECTORS
        budget = self.cfg.max_pending_bytes
        # (name, id(fields)) -> its item's text, within this batch: one fields object may
        # be emitted under several names, each shaped its own way
        memo: dict[tuple[str, int], Raw] = {}
        for inc in batch:
            name = inc.name
            col = collectors.get(name)
            if col is not None:  # the fast path: requests, commands
                obj = conns.get(inc.conn)
                if obj is None:
                    obj = self._late(inc.conn, late)
                    if obj is None:
                        self._skip(inc)
                        continue
                obj["_n"] += 1
                self.held += 1
                lists = obj["_lists"]
                items = lists.get(col[0])
                if items is None:
                    items = lists[col[0]] = _list_at(obj, col[0])
                if len(items) >= obj["_cap"]:
                    continue
                fields = inc.fields
                key = (name, id(fields))
                raw = memo.get(key)
                if raw is None:
                    try:
                        raw = memo[key] = Raw(_encode(col[1](fields)))
                    except (TypeError, ValueError, KeyError, AttributeError):
                        obj["_left_out"] += 1
                        continue
                size = len(raw)
                if self.pending_bytes + size > budget:
                    obj["_left_out"] += 1
                    continue
                self.pending_bytes += size
                obj["_bytes"] += size
                items.append(raw)
            elif name == "connection.free":
                obj = conns.pop(inc.conn, None)
                if obj is None:
                    c = inc.fields.get("connection")
                    if not isinstance(c, Connection):
                        continue
                    self._start(c)
                    obj = conns.pop(inc.conn, None)
                    if obj is None:
                        continue
                lines.append(self._end(obj, inc.fields))
            elif name.startswith("connection.") and "connection" in inc.fields:
                if inc.conn not in conns:
                    self._start(inc.fields["connection"])
                    obj = conns.get(inc.conn)
                    if obj is not None and "replayed" not in inc.fields:
                        obj["_n"] += 1
                        self.held += 1
            else:
                obj = conns.get(inc.conn)
                if obj is None:
                    if name not in FOLDERS and name not in _SCOPED_NAMES:
                        continue
                    obj = self._late(inc.conn, late)
                    if obj is None:
                        self._skip(inc)
                        continue
                obj["_n"] += 1
                self.held += 1
                fn = FOLDERS.get(name)
                if fn is not None:
                    fn(obj, inc)
                if name in _SCOPED_NAMES:
                    fn = SCOPED.get((name, obj["connection"]["protocol"]))
                    if fn is not None:
                        fn(obj, inc)
        for obj in late.values():
            self._settle(obj)
            lines.append(self._line(obj))
        return lines

    def _skip(self, inc: Incident) -> None:
        """An incident for a connection this sink holds no object for (never announced to
        it, or past max_open_connections): not written, so counted."""
        if inc.conn:
            self.skipped += 1

    def write_sync(self, batch: list[Incident]) -> None:
        """Fold and write in the sink's one thread: the event loop only hands the batch over."""
        lines = self.fold(batch)
        if lines:
            assert self.file is not None
            self.file.write(b"".join(lines))

    def write_rows(self, rows: list[tuple[str, int, float, Mapping[str, Any]]]) -> None:
        """For the sink process: (name, conn, time, fields) as they come from the pipe."""
        self.write_sync([Incident(*row) for row in rows])

    async def write(self, batch: list[Incident]) -> None:
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsonlog")
        await asyncio.get_running_loop().run_in_executor(self._pool, self.write_sync, batch)

    async def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _list_at(obj: dict[str, Any], path: tuple[str, ...]) -> list[Any]:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    items: list[Any] = obj.setdefault(path[-1], [])
    return items


def collect(name: str, path: tuple[str, ...], shape: Shape = dict) -> None:
    """Fold each `name` incident into the list at `path`: its fields, as `shape` makes them.

    `shape` must depend on the fields only: the sink encodes it once per fields object.
    """

    def fold(obj: dict[str, Any], inc: Incident) -> None:
        append(obj, path, shape(inc.fields), obj["_cap"])

    FOLDERS[name] = fold
    COLLECTORS[name] = (path, shape)
