"""Per-connection transcripts, written off the network path, and reading them back.

Transcripts are JSON lines in one append-only file per service and UTC day,
`<state>/transcripts/<YYYY-MM-DD>/<service>.jsonl`, one line per connection:
`{"connection": {...}, "start": t, "chunks": [[offset_seconds, "in"|"out", base64], ...]}`.

One file a day instead of one per connection: creating a file per connection cost
more than everything else the writer did. The event loop only appends to a list;
a few times a second the list is handed to a writer off the loop (the engine's is
in the sink process, sinks/process.py; `TranscriptWriter` is a thread), which
encodes it and appends with one write per file, so the loop never waits on the
disk nor pays a hand-off per connection. Past `max_pending` waiting transcripts,
new ones are dropped and counted. A transcript's bytes stay charged to the sessions'
budget (limits.max_transcript_memory) until the writer has taken them off the list:
the writer gives them back through `release`.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

from muscipula.incidents import Connection

log = logging.getLogger(__name__)
DIRECTIONS = ("in", "out")
_CONNECTION_FIELDS = tuple(f.name for f in fields(Connection))
#: a chunk's head in a packed transcript: seconds since the start, flags, length
FRAME = struct.Struct("<dBI")
#: flags: the server sent it; it is the same bytes as the last chunk sent that way
#: (not stored again: floods repeat one request, and a buffer of heads stays small)
SENT, REPEAT = 1, 2
#: encoded lines gathered for one write to a file
WRITE_BYTES = 1 << 20

Pending = tuple[Connection, float, bytes | bytearray]


def pack(buf: bytearray, offset: float, direction: int, data: bytes,
         repeat: bool = False) -> None:
    """Append one chunk to a session's packed transcript (a repeat: its head only).

    Sessions keep their transcript as one growing buffer rather than a list of
    (offset, direction, bytes) tuples: a keep-alive connection of 1,000 requests
    held 1,000 small objects each, which cost the event loop about 2 µs a request
    in allocator and cache traffic, and pickling them to the writer more.
    """
    buf += FRAME.pack(offset, direction | (REPEAT if repeat else 0), len(data))
    if not repeat:
        buf += data


def unpack(packed: bytes | bytearray) -> Iterator[tuple[float, int, bytes]]:
    """The (offset, direction, data) chunks of a packed transcript, in order."""
    view = memoryview(packed)
    at, end, head = 0, len(packed), FRAME.size
    last = [b"", b""]
    while at + head <= end:
        offset, flags, n = FRAME.unpack_from(view, at)
        at += head
        direction = flags & SENT
        if flags & REPEAT:
            data = last[direction]
        else:
            data = last[direction] = bytes(view[at:at + n])
            at += n
        yield offset, direction, data


def encode(conn: Connection, started: float, packed: bytes | bytearray) -> str:
    """One connection's line (without the newline)."""
    # Connection holds only scalars: a shallow dict is what asdict() makes, at a
    # fraction of its deep-copying cost.
    header = {key: getattr(conn, key) for key in _CONNECTION_FIELDS}
    b64 = binascii.b2a_base64
    # floods repeat the same request: each distinct chunk is encoded once
    seen: dict[bytes, str] = {}
    items = []
    for offset, direction, data in unpack(packed):
        text = seen.get(data)
        if text is None:
            text = b64(data, newline=False).decode()
            if len(seen) < 1024:
                seen[data] = text
        items.append(f'[{offset:.6f},"{DIRECTIONS[direction]}","{text}"]')
    head = json.dumps({"connection": header, "start": started}, separators=(",", ":"))
    return f'{head[:-1]},"chunks":[{",".join(items)}]}}'


class TranscriptSink(Protocol):
    """Where a finished connection's transcript goes (never blocking the event loop)."""

    written: int
    dropped: int
    #: given the bytes of transcripts once they left the writer's list (sent or dropped)
    release: Callable[[int], None] | None

    def put(self, conn: Connection, started: float,
            packed: bytes | bytearray) -> None: ...

    async def aclose(self) -> None:
        """Write everything put so far, then stop."""


class DayFiles:
    """Appends encoded transcripts to one open file per (UTC day, service)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written = 0
        self.dropped = 0
        self._files: dict[tuple[str, str], int] = {}  # (day, service) -> open descriptor

    def write(self, items: list[Pending]) -> None:
        """Encode and append, one write per file for up to WRITE_BYTES of lines.

        Lines are written as they add up rather than all at once: a packed transcript
        of repeats spells out to many times its size, and a frame holds many of them.
        """
        by_file: dict[tuple[str, str], tuple[list[bytes], list[int]]] = {}
        for conn, started, packed in items:
            day = time.strftime("%Y-%m-%d", time.gmtime(started))
            key = (day, conn.service or conn.protocol)
            lines, size = by_file.setdefault(key, ([], [0]))
            line = encode(conn, started, packed).encode("utf-8") + b"\n"
            lines.append(line)
            size[0] += len(line)
            if size[0] >= WRITE_BYTES:
                self._lines(key, lines)
                lines.clear()
                size[0] = 0
        for key, (lines, _size) in by_file.items():
            if lines:
                self._lines(key, lines)

    def _lines(self, key: tuple[str, str], lines: list[bytes]) -> None:
        try:
            self._append(key, b"".join(lines))
            self.written += len(lines)
        except OSError as exc:
            self.dropped += len(lines)
            log.warning("transcripts not written: %s", exc)

    def _append(self, key: tuple[str, str], body: bytes) -> None:
        fd = self._files.get(key)
        if fd is None:
            for old in [k for k in self._files if k[0] != key[0]]:  # a new day: close the old
                os.close(self._files.pop(old))
            folder = self.root / key[0]
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f"{key[1]}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                         0o640)
            self._files[key] = fd
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


class TranscriptWriter:
    """Writes from a thread of this process (the engine uses the sink process instead)."""

    def __init__(self, root: Path, max_pending: int = 10_000, interval: float = 0.2) -> None:
        self.files = DayFiles(root)
        self.max_pending = max_pending
        self.interval = interval
        self.pending: deque[Pending] = deque()
        self._dropped = 0
        self.release: Callable[[int], None] | None = None
        self._loop: Any = None  # where `release` runs (it is called from the thread)
        self._stop = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="transcripts", daemon=True)
        self._thread.start()

    @property
    def written(self) -> int:
        return self.files.written

    @property
    def dropped(self) -> int:
        return self._dropped + self.files.dropped

    def put(self, conn: Connection, started: float, packed: bytes | bytearray) -> None:
        """Called on the event loop: one append, no lock, no wake-up."""
        n = len(self.pending)
        if n >= self.max_pending:
            self._dropped += 1
            if self.release is not None:
                self.release(len(packed))
            return
        if self._loop is None and self.release is not None:
            import asyncio

            with contextlib.suppress(RuntimeError):  # none running: called from the thread
                self._loop = asyncio.get_running_loop()
        self.pending.append((conn, started, packed))
        if n == self.max_pending // 2:  # falling behind: drain now rather than at the tick
            self._wake.set()

    def _run(self) -> None:
        while True:
            stopping = self._stop
            while self.pending:
                self._drain()
            if stopping:
                break
            self._wake.wait(self.interval)
            self._wake.clear()
        self.files.close()

    def _drain(self) -> None:
        pending = self.pending
        items = [pending.popleft() for _ in range(min(len(pending), 5000))]
        self.files.write(items)
        size = sum(len(item[2]) for item in items)
        loop, release = self._loop, self.release
        if release is not None and size:
            if loop is None:
                release(size)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(release, size)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything pending, then stop the thread."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)

    async def aclose(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.close)


def records(path: Path) -> Iterator[tuple[dict[str, Any], list[tuple[float, str, bytes]]]]:
    """Every (header, chunks) in a transcript file, in the order they were written.

    Also reads the older layout of one connection per file (a header line, then
    one line per chunk).
    """
    lines = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty transcript")
    first = json.loads(lines[0])
    if not isinstance(first, dict):
        raise ValueError(f"{path}: not a transcript")
    if "chunks" not in first:
        yield first, [_chunk(json.loads(line)) for line in lines[1:]]
        return
    for line in lines:
        record = json.loads(line)
        chunks = [_chunk(c) for c in record.pop("chunks")]
        yield record, chunks


def _chunk(item: list[Any]) -> tuple[float, str, bytes]:
    offset, direction, data = item
    return float(offset), str(direction), binascii.a2b_base64(data)


def read(path: Path, connection: int | None = None
         ) -> tuple[dict[str, Any], list[tuple[float, str, bytes]]]:
    """(header, chunks) of connection id `connection` in a transcript file, else its first."""
    for header, chunks in records(path):
        if connection is None or header.get("connection", {}).get("id") == connection:
            return header, chunks
    raise ValueError(f"{path}: no connection {connection}")
