"""hpfeeds: the reference system's channels and payloads (compat), sent to a broker.

The wire protocol is small (a length-prefixed frame, four opcodes) and spoken here
directly: the `hpfeeds` package's asyncio client publishes only while connected
and drops messages otherwise, with no bound and a fixed reconnect delay. Here
messages wait in a bounded queue until the broker has taken our AUTH, survive a
reconnect, and every loss is counted.

Frames: `!I` total length (header included), `B` opcode, body. The broker opens
with INFO(name, nonce); we answer AUTH(ident, sha1(nonce + secret)); then
PUBLISH(ident, channel, payload). Strings are 1-byte-length-prefixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import struct
from collections import deque
from pathlib import Path
from typing import Any

from muscipula.config import HpfeedsSink
from muscipula.incidents import Connection, Incident

log = logging.getLogger(__name__)

OP_ERROR, OP_INFO, OP_AUTH, OP_PUBLISH, OP_SUBSCRIBE = range(5)
MAX_FRAME = 5 + 1024 * 1024  # what brokers accept for a publish
AUTH_GRACE = 0.3  # a broker refusing AUTH says so at once; wait that long before publishing
CONNECT_TIMEOUT = 10.0

CONNECTIONS = "dionaea.connections"  # compat: feed consumers subscribe by these names
#: stored files remembered for the capture messages that follow (oldest forgotten first)
MAX_PATHS = 10_000
CAPTURE = "dionaea.capture"  # compat: feed consumers subscribe by these names
DCERPC = "dionaea.dcerpcrequests"  # compat: feed consumers subscribe by these names
SHELLCODE = "dionaea.shellcodeprofiles"  # compat: feed consumers subscribe by these names
UNIQUE = "mwbinary.dionaea.sensorunique"  # compat: feed consumers subscribe by these names

_CONNECTION_EVENTS = {
    "connection.tcp.accept": "accept", "connection.tls.accept": "accept",
    "connection.udp.accept": "accept", "connection.tcp.connect": "connect",
    "connection.udp.connect": "connect", "connection.tcp.listen": "listen",
    "connection.udp.listen": "listen",
}


#: (channel, payload, incident); a payload still to be made from the stored file is None
#: (raw file) or the addresses of the capture message
Message = tuple[str, bytes | dict[str, str] | None, Incident]


def str8(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 255:
        raise ValueError("hpfeeds string longer than 255 bytes")
    return bytes([len(raw)]) + raw


def frame(op: int, body: bytes) -> bytes:
    return struct.pack("!IB", 5 + len(body), op) + body


def auth(ident: str, secret: str, nonce: bytes) -> bytes:
    return frame(OP_AUTH, str8(ident) + hashlib.sha1(nonce + secret.encode()).digest())


def publish(ident: str, channel: str, payload: bytes) -> bytes:
    return frame(OP_PUBLISH, str8(ident) + str8(channel) + payload)


def parse_info(body: bytes) -> tuple[str, bytes]:
    """INFO body -> (broker name, nonce)."""
    n = body[0]
    return body[1:1 + n].decode("utf-8", "replace"), body[1 + n:]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    length, op = struct.unpack("!IB", await reader.readexactly(5))
    if not 5 <= length <= MAX_FRAME:
        raise ValueError(f"frame length {length} out of bounds")
    return op, await reader.readexactly(length - 5)


def timestr(ts: float) -> str:
    """the reference capture time layout (compat): stamp, zone name, offset (always UTC here)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC +0000")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return "" if value is None else str(value)


class Hpfeeds:
    """A bus sink: incidents become hpfeeds messages, queued until the broker is ready."""

    name = "hpfeeds"

    def __init__(self, cfg: HpfeedsSink, max_pending: int | None = None,
                 max_late: int = 50_000) -> None:
        self.cfg = cfg
        self.pending: deque[bytes] = deque()
        self.max_pending = max_pending or cfg.queue_size
        self.conns: dict[int, Connection] = {}
        #: the last `max_late` ended connections (oldest first), for captures after the end
        self.ended: dict[int, Connection] = {}
        self.max_late = max_late
        self.paths: dict[str, str] = {}  # md5 -> stored file, from download.complete
        self.published = 0
        self.dropped = 0
        self.connects = 0
        self.authenticated = False
        self._writer: asyncio.StreamWriter | None = None
        self._ready = asyncio.Event()  # there is something to send
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -------------------------------------------------------------- bus sink API

    async def open(self) -> None:
        if not self.cfg.ident:
            log.warning("hpfeeds: no ident configured; the broker will refuse us")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hpfeeds")

    async def write(self, batch: list[Incident]) -> None:
        messages: list[Message] = []
        for inc in batch:
            messages.extend(self._messages(inc))
        if any(not isinstance(m[1], bytes) for m in messages):
            loop = asyncio.get_running_loop()
            messages = await loop.run_in_executor(None, self._load_files, messages)
        for channel, payload, _ in messages:
            if isinstance(payload, bytes):
                self._queue(publish(self.cfg.ident, channel, payload))
        if self.pending:
            self._ready.set()

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued if the broker is there, then hang up."""
        if self.pending and self.authenticated:
            self._flushed.clear()
            self._ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), timeout)
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._hang_up()
        self.dropped += len(self.pending)
        self.pending.clear()
        log.info("hpfeeds: published %d dropped %d connects %d", self.published, self.dropped,
                 self.connects)

    # ----------------------------------------------------------- incidents -> msgs

    def _messages(self, inc: Incident) -> list[Message]:
        name, f = inc.name, inc.fields
        kind = _CONNECTION_EVENTS.get(name)
        if kind is not None or name == "connection.refused":
            c = f.get("connection")
            if isinstance(c, Connection):
                if len(self.conns) < 100_000:
                    self.conns[inc.conn] = c
                return [(CONNECTIONS, self._conn_payload(c, kind or c.type), inc)]
            return [(CONNECTIONS, _json({
                "connection_type": "reject", "connection_transport": "tcp",
                "connection_protocol": "", "remote_host": _text(f.get("remote_host")),
                "remote_port": f.get("remote_port"), "remote_hostname": "",
                "local_host": "", "local_port": 0}), inc)]
        if name == "connection.free":
            c = self.conns.pop(inc.conn, None)
            if c is not None:
                self.ended[inc.conn] = c
                if len(self.ended) > self.max_late:
                    del self.ended[next(iter(self.ended))]
            return []
        if name == "download.complete":
            if f.get("md5") and f.get("path"):
                paths = self.paths
                paths.pop(str(f["md5"]), None)
                paths[str(f["md5"])] = str(f["path"])  # newest last
                if len(paths) > MAX_PATHS:
                    del paths[next(iter(paths))]
            return []
        if name in ("download.complete.unique", "download.complete.again"):
            # addresses now: the connection may be gone by the time the file is read
            out: list[Message] = [(CAPTURE, self._addrs(inc.conn), inc)]
            if name.endswith("unique"):
                out.append((UNIQUE, None, inc))
            return out
        if name == "smb.dcerpc.request":
            return [(DCERPC, _json({"uuid": _text(f.get("uuid")), "opnum": f.get("opnum"),
                                    **self._addrs(inc.conn)}), inc)]
        if name in ("shellcode.profile", "emu.profile"):
            return [(SHELLCODE, _json({"profile": f.get("profile")}), inc)]
        return []

    @staticmethod
    def _conn_payload(c: Connection, kind: str) -> bytes:
        return _json({"connection_type": kind, "connection_transport": c.transport,
                      "connection_protocol": c.protocol, "remote_host": c.remote_host,
                      "remote_port": c.remote_port, "remote_hostname": "",
                      "local_host": c.local_host, "local_port": c.local_port})

    def _addrs(self, conn_id: int) -> dict[str, str]:
        c = self.conns.get(conn_id) or self.ended.get(conn_id)
        if c is None:
            return {"saddr": "", "sport": "", "daddr": "", "dport": ""}
        return {"saddr": c.remote_host, "sport": str(c.remote_port), "daddr": c.local_host,
                "dport": str(c.local_port)}

    def _load_files(self, messages: list[Message]) -> list[Message]:
        """Payloads that need the stored file (sha512, raw bytes); runs off the loop."""
        out: list[Message] = []
        limit = MAX_FRAME - 5 - 2 - len(self.cfg.ident) - len(UNIQUE)
        for channel, payload, inc in messages:
            if not isinstance(payload, bytes):
                md5 = str(inc.fields.get("md5", ""))
                path = self.paths.get(md5)
                try:
                    data = Path(path).read_bytes() if path else b""
                except OSError as exc:
                    log.warning("hpfeeds: cannot read %s: %s", path, exc)
                    data = b""
                if channel == UNIQUE:
                    if not data or len(data) > limit:
                        self.dropped += 1
                        continue
                    payload = data
                else:
                    payload = _json({
                        "time": timestr(inc.time), **(payload or {}), "md5": md5,
                        "sha512": hashlib.sha512(data).hexdigest() if data else "",
                        "url": _text(inc.fields.get("url"))})
            out.append((channel, payload, inc))
        return out

    def _queue(self, message: bytes) -> None:
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append(message)

    # -------------------------------------------------------------- connection

    async def _run(self) -> None:
        """Connect, authenticate, drain the queue; on any failure wait and start over."""
        while not self._closing:
            try:
                await self._session()
            except (OSError, EOFError, asyncio.IncompleteReadError, ValueError,
                    TimeoutError, IndexError) as exc:
                log.warning("hpfeeds %s:%d: %s; retrying in %.1fs", self.cfg.host,
                            self.cfg.port, exc or type(exc).__name__, self.cfg.reconnect_delay)
            finally:
                self.authenticated = False
                await self._hang_up()
            if not self._closing:
                await asyncio.sleep(self.cfg.reconnect_delay)

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.cfg.host, self.cfg.port), CONNECT_TIMEOUT)
        self._writer = writer
        self.connects += 1
        op, body = await asyncio.wait_for(read_frame(reader), CONNECT_TIMEOUT)
        if op != OP_INFO:
            raise ValueError(f"expected INFO from the broker, got opcode {op}")
        _broker, nonce = parse_info(body)
        writer.write(auth(self.cfg.ident, self.cfg.secret, nonce))
        await writer.drain()
        listener = asyncio.ensure_future(self._listen(reader))
        try:
            done, _ = await asyncio.wait({listener}, timeout=AUTH_GRACE)
            if done:
                listener.result()  # the broker refused us (or went away): raises
                raise EOFError("broker closed the connection after AUTH")
            self.authenticated = True
            log.info("hpfeeds: connected to %s:%d as %s", self.cfg.host, self.cfg.port,
                     self.cfg.ident)
            sender = asyncio.ensure_future(self._send(writer))
            try:
                done, _ = await asyncio.wait({listener, sender},
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
                raise EOFError("broker closed the connection")
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        while True:
            while self.pending:
                message = self.pending[0]
                writer.write(message)
                await writer.drain()
                self.pending.popleft()  # only once the transport took it
                self.published += 1
            self._flushed.set()
            self._ready.clear()
            await self._ready.wait()

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        """Read what the broker says: an ERROR (bad auth, refused channel) or EOF ends it."""
        while True:
            op, body = await read_frame(reader)
            if op == OP_ERROR:
                raise ValueError(f"broker error: {body.decode('utf-8', 'replace')}")

    async def _hang_up(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, default=_text).encode()
