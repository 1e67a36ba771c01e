"""Sinks in their own process: the network's process only pickles batches into a pipe.

Profiling showed the disk sinks, though they wrote from their own threads, cost
the event loop most of its time: every SQLite step and every file write hands
the GIL back and forth with the loop (dozens of futex calls per connection), and
the loop waits for it on each callback. Here logsql and jsonlog run in one child
process, each in its own thread fed by its own pipe: the loop pays about a
microsecond per incident to pickle it, and a slow or failing sink fills only its
own pipe (then its own bounded bus queue), never another sink's.

The child imports every service (their row writers, tables and JSON folders
register on import), ignores SIGINT/SIGTERM and runs until its pipes close: the
parent closes them at shutdown and waits for each sink's final count, so
`written` means written by the sink, not merely handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import pickle
import signal
import struct
import sys
import threading
from collections import deque
from typing import Any

from muscipula.incidents import Incident

log = logging.getLogger(__name__)
_LEN = struct.Struct("<I")


class _Pipe(asyncio.Protocol):
    """The write end of one sink's pipe, with flow control."""

    def __init__(self) -> None:
        self.paused = False
        self.lost = False
        self._waiter: asyncio.Future[None] | None = None
        self.on_resume: Any = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()
        if self.on_resume is not None:
            self.on_resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    async def drain(self) -> None:
        if self.paused and not self.lost:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


class SinkHost:
    """One child process for every sink made with `sink()`; started by the first open."""

    def __init__(self) -> None:
        self.sinks: list[ProcessSink] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._start_lock: asyncio.Lock | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._open = 0

    def transcripts(self, root: Any) -> ProcessTranscripts:
        return ProcessTranscripts(self, root)

    def sink(self, name: str, kind: str, *args: Any) -> ProcessSink:
        """A bus sink that runs `kind` ("logsql", "jsonlog") with `args` in the child."""
        s = ProcessSink(self, name, kind, args)
        self.sinks.append(s)
        return s

    async def start(self, user: str | None = None, group: str | None = None) -> None:
        """Spawn the child (once). The engine calls this before it drops root, so that the
        child is started and imports as root too, then becomes `user`/`group` itself before
        it opens any file."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.proc is not None:
                return
            loop = asyncio.get_running_loop()
            ends = [os.pipe() for _ in self.sinks]
            spec = [(s.name, s.kind, s.args, r) for s, (r, _) in zip(self.sinks, ends,
                                                                     strict=True)]
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "muscipula.sinks.process",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    pass_fds=[r for r, _ in ends],
                    start_new_session=True)  # a terminal's ^C is for the parent only
            finally:
                for r, _ in ends:
                    os.close(r)
            assert self.proc.stdin is not None
            self.proc.stdin.write(pickle.dumps((user, group, spec)))
            self.proc.stdin.close()
            for s, (_, w) in zip(self.sinks, ends, strict=True):
                with contextlib.suppress(OSError, AttributeError):  # fewer, larger writes
                    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
                self.results[s.name] = loop.create_future()
                s.transport, s.pipe = await loop.connect_write_pipe(
                    _Pipe, os.fdopen(w, "wb", buffering=0))
            self._reader = loop.create_task(self._read_results())

    async def ready(self, timeout: float = 30.0) -> None:
        """Until the child has imported what the sinks need (or has exited)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def _read_results(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                result = json.loads(line)
                if result.get("ready"):
                    self._ready.set()
                    continue
                fut = self.results.get(result["name"])
                if fut is not None and not fut.done():
                    fut.set_result(result)
        self._ready.set()
        for fut in self.results.values():  # the child is gone: nothing more will come
            if not fut.done():
                fut.set_result({})

    async def finished(self, sink: ProcessSink, timeout: float) -> dict[str, Any]:
        """Wait for `sink`'s final count (its pipe is closed); the last one reaps the child."""
        fut = self.results.get(sink.name)
        result: dict[str, Any] = {}
        if fut is not None:
            try:
                result = await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                log.error("sink %s: no final count from its process in %.0f s", sink.name,
                          timeout)
        self._open -= 1
        if self._open <= 0 and self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    await self._reader
        return result


class ProcessSink:
    """The parent's side of one sink running in the host process."""

    def __init__(self, host: SinkHost, name: str, kind: str, args: tuple[Any, ...]) -> None:
        self.host = host
        self.name = name
        self.kind = kind
        self.args = args
        self.transport: asyncio.WriteTransport | None = None
        self.pipe: _Pipe | None = None
        self.sent = 0
        #: incidents counted written by the bus that the child did not write (set at close)
        self.unwritten = 0
        self.close_timeout = 60.0

    async def open(self) -> None:
        self.host._open += 1
        await self.host.start()

    async def write(self, batch: list[Incident]) -> None:
        rows = [(i.name, i.conn, i.time, i.fields) for i in batch]
        try:
            ok = self._frame(rows)
        except Exception:  # one odd field must not cost the whole batch
            ok = self._frame(_picklable(rows))
        if not ok:
            raise RuntimeError(f"sink process for {self.name} is gone")
        self.sent += len(batch)
        pipe = self.pipe
        if pipe is not None and pipe.paused:
            await pipe.drain()

    def _frame(self, obj: Any) -> bool:
        """Pickle `obj` into the pipe; False if the child is gone."""
        pipe, transport = self.pipe, self.transport
        if pipe is None or transport is None or pipe.lost:
            return False
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        transport.write(_LEN.pack(len(data)) + data)
        return True

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        result = await self.host.finished(self, self.close_timeout)
        self.unwritten = max(self.sent - int(result.get("written", 0)), 0)
        if self.unwritten:
            log.error("sink %s: %d items were not written", self.name, self.unwritten)


class ProcessTranscripts(ProcessSink):
    """The engine's transcript writer: encoding and disk writes happen in the sink process.

    `put` only appends to a list; a timer ships it every `interval` seconds, in frames
    of about `frame_bytes`, and only while the pipe takes them: a child that falls
    behind leaves transcripts in the list (they are the session's own chunks, no copy)
    rather than pickled copies in the pipe's buffer. Past `max_pending` transcripts
    waiting, new ones are dropped and counted.
    """

    def __init__(self, host: SinkHost, root: Any, max_pending: int = 10_000,
                 interval: float = 0.2, frame_bytes: int = 1 << 20) -> None:
        super().__init__(host, "transcripts", "transcripts", (root,))
        host.sinks.append(self)
        host._open += 1  # a user of the child from the start; closed last by the engine
        self.max_pending = max_pending
        self.interval = interval
        self.frame_bytes = frame_bytes
        self.pending: deque[tuple[Any, float, list[tuple[float, int, bytes]]]] = deque()
        self.written = 0
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def dropped(self) -> int:
        return self._dropped + self.unwritten

    def put(self, conn: Any, started: float, chunks: list[tuple[float, int, bytes]]) -> None:
        if len(self.pending) >= self.max_pending:
            self._dropped += 1
            return
        self.pending.append((conn, started, chunks))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Ship what the pipe takes now; the rest goes when it drains (or at the next tick)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, pipe = self.pending, self.pipe
        if pipe is None or pipe.lost:
            self._dropped += len(pending)
            pending.clear()
            return
        pipe.on_resume = self.flush
        while pending and not pipe.paused:
            items, size = [], 0
            while pending and (not items or size < self.frame_bytes):
                item = pending.popleft()
                items.append(item)
                size += sum(len(c[2]) for c in item[2])
            if not self._frame(items):
                self._dropped += len(items)
                continue
            self.sent += len(items)
        if pending and self._timer is None and not pipe.paused:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    async def open(self) -> None:
        await self.host.start()

    async def aclose(self) -> None:
        """Ship everything still waiting (the pipe drains as the child reads), then close."""
        pipe = self.pipe
        while self.pending and pipe is not None and not pipe.lost:
            self.flush()
            if pipe.paused:
                await pipe.drain()
        self._dropped += len(self.pending)
        self.pending.clear()
        await self.close()
        self.written = self.sent - self.unwritten


def _picklable(rows: list[tuple[str, int, float, Any]]) -> list[tuple[str, int, float, Any]]:
    out = []
    for row in rows:
        try:
            pickle.dumps(row, pickle.HIGHEST_PROTOCOL)
        except Exception:
            log.warning("incident %s has a field that cannot leave the process", row[0])
            continue
        out.append(row)
    return out


def _ignore_signals() -> None:
    """The child stops when its pipes close, after the parent flushed: not on ^C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# --------------------------------------------------------------------- the child


def _make(kind: str, args: tuple[Any, ...]) -> Any:
    if kind == "logsql":
        from muscipula.sinks.logsql import LogSql

        return LogSql(*args)
    if kind == "jsonlog":
        from muscipula.sinks.jsonlog import JsonLog

        return JsonLog(*args)
    if kind == "transcripts":
        return _Transcripts(*args)
    raise ValueError(f"unknown sink kind {kind!r}")


class _Transcripts:
    """The child's side of ProcessTranscripts."""

    def __init__(self, root: Any) -> None:
        from muscipula.transcripts import DayFiles

        self.files = DayFiles(root)

    def open_sync(self) -> None:
        pass

    def write_sync(self, items: list[Any]) -> None:
        self.files.write(items)

    def close_sync(self) -> None:
        self.files.close()


def _read_exact(f: Any, n: int) -> bytes | None:
    data = f.read(n)
    if len(data) < n:
        return None
    return data


def _serve(name: str, kind: str, args: tuple[Any, ...], fd: int, out_lock: threading.Lock
           ) -> None:
    written = failed = 0
    sink: Any = None
    with os.fdopen(fd, "rb") as f:
        try:
            sink = _make(kind, args)
            sink.open_sync()
        except Exception:
            log.exception("sink %s cannot open", name)
            sink = None
        while True:
            head = _read_exact(f, _LEN.size)
            if head is None:
                break
            body = _read_exact(f, _LEN.unpack(head)[0])
            if body is None:
                break
            try:
                batch = pickle.loads(body)
                if kind != "transcripts":
                    batch = [Incident(*row) for row in batch]
            except Exception:
                log.exception("sink %s: a batch could not be read", name)
                continue
            if sink is None:
                failed += len(batch)
                continue
            try:
                sink.write_sync(batch)
                written += len(batch)
            except Exception:
                failed += len(batch)
                log.exception("sink %s failed on a batch of %d incidents", name, len(batch))
    if sink is not None:
        try:
            sink.close_sync()
        except Exception:
            log.exception("sink %s failed to close", name)
        if isinstance(sink, _Transcripts):  # it counts per transcript, failures included
            written, failed = sink.files.written, failed + sink.files.dropped
    line = json.dumps({"name": name, "written": written, "failed": failed}) + "\n"
    with out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def main() -> int:
    _ignore_signals()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    user, group, spec = pickle.loads(sys.stdin.buffer.read())
    from muscipula import services
    from muscipula.net.listeners import drop_privileges

    for name in services.names():  # protocols register their tables, writers and folders
        try:
            services.get(name)
        except Exception:
            log.exception("service %s could not be loaded for its sink records", name)
    try:
        drop_privileges(user, group)
    except Exception as exc:
        log.error("sinks: %s", exc)
        return 1
    lock = threading.Lock()
    with lock:  # the sinks open in their threads; the parent may wait for this line
        sys.stdout.write(json.dumps({"name": "", "ready": True}) + "\n")
        sys.stdout.flush()
    threads = [threading.Thread(target=_serve, args=(name, kind, args, fd, lock),
                                name=f"sink-{name}") for name, kind, args, fd in spec]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
