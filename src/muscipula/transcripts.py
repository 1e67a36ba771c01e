"""Per-connection transcripts, written off the network path, and reading them back.

A transcript is JSON lines under `<state>/transcripts/<YYYY-MM-DD>/`: a header
with the connection, then `[offset_seconds, "in"|"out", base64]` per chunk.
Writes happen in one background thread, in batches, so the event loop never
waits on the disk; when the queue is full the transcript is dropped and counted.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from muscipula.incidents import Connection

log = logging.getLogger(__name__)
DIRECTIONS = ("in", "out")
_CONNECTION_FIELDS = tuple(f.name for f in fields(Connection))


class TranscriptWriter:
    def __init__(self, root: Path, max_pending: int = 10_000) -> None:
        self.root = root
        self.max_pending = max_pending
        self.queue: queue.Queue[tuple[Connection, float, list[Any]] | None] = queue.Queue()
        self.written = 0
        self.dropped = 0
        self._folder: Path | None = None
        self._thread = threading.Thread(target=self._run, name="transcripts", daemon=True)
        self._thread.start()

    def put(self, conn: Connection, started: float, chunks: list[tuple[float, int, bytes]]) -> None:
        if self.queue.qsize() >= self.max_pending:
            self.dropped += 1
            return
        self.queue.put((conn, started, chunks))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            try:
                self._write(*item)
                self.written += 1
            except OSError as exc:
                self.dropped += 1
                log.warning("transcript not written: %s", exc)

    def _write(self, conn: Connection, started: float,
               chunks: list[tuple[float, int, bytes]]) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(started))
        folder = self.root / day
        if folder != self._folder:  # one mkdir a day, not one per connection
            folder.mkdir(parents=True, exist_ok=True)
            self._folder = folder
        stamp = time.strftime("%H%M%S", time.gmtime(started))
        name = f"{conn.service}-{conn.transport}-{stamp}-{conn.id}.jsonl"
        # Connection holds only scalars: a shallow dict is what asdict() makes, at a
        # fraction of its deep-copying cost (it was a third of this thread's time).
        header = {key: getattr(conn, key) for key in _CONNECTION_FIELDS}
        lines = [json.dumps({"connection": header, "start": started})]
        for offset, direction, data in chunks:
            lines.append(f'[{round(offset, 6)!r}, "{DIRECTIONS[direction]}", '
                         f'"{base64.b64encode(data).decode()}"]')
        body = ("\n".join(lines) + "\n").encode("utf-8")
        path = folder / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        except FileNotFoundError:  # the folder was removed under us
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def close(self, timeout: float = 30.0) -> None:
        self.queue.put(None)
        self._thread.join(timeout)


def read(path: Path) -> tuple[dict[str, Any], list[tuple[float, str, bytes]]]:
    """(header, chunks) of a transcript file."""
    lines = path.read_text("utf-8").splitlines()
    if not lines:
        raise ValueError(f"{path}: empty transcript")
    header = json.loads(lines[0])
    chunks = []
    for line in lines[1:]:
        if line.strip():
            offset, direction, data = json.loads(line)
            chunks.append((float(offset), str(direction), base64.b64decode(data)))
    return header, chunks
