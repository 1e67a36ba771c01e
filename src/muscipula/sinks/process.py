"""Sinks in their own process: the network's process only pickles batches into a pipe.

Profiling showed the disk sinks, though they wrote from their own threads, cost
the event loop most of its time: every SQLite step and every file write hands
the GIL back and forth with the loop (dozens of futex calls per connection), and
the loop waits for it on each callback. Here logsql and jsonlog run in one child
process, each in its own thread fed by its own pipe: the loop pays about a
microsecond per incident to pickle it, and a slow or failing sink fills only its
own pipe (then its own bounded bus queue), never another sink's.

The child (sinks/child.py) loads only the sinks and the protocols' records
modules, ignores SIGINT/SIGTERM and runs until its pipes close: the parent
closes them at shutdown and waits for each sink's final count, so `written`
means written by the sink, not merely handed over. A child that dies is started
again (SinkHost): meanwhile each sink's write waits for it (the bus keeps queueing,
and with backpressure holds the network), and the new child is first told of the
connections still open (`open_connections`), whose later incidents it would
otherwise have no connection row or JSON object for.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import operator
import os
import pickle
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from muscipula.incidents import Connection, Incident

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
    """One child process for every sink made with `sink()`; started by the first open.

    If the child dies it is started again (after `restart_delay`, doubling up to
    `max_restart_delay` while it keeps dying young): meanwhile the sinks' writes wait
    for it, up to `respawn_timeout` (then that batch fails and the bus counts it), and
    what the dead child had not reported written is counted failed at close.
    """

    def __init__(self, restart_delay: float = 0.5, max_restart_delay: float = 30.0,
                 respawn_timeout: float = 45.0, nice: int = 0) -> None:
        #: niceness the child takes before its sink threads start (sinks.nice)
        self.nice = nice
        #: the connections open now, parents before their children (set by the engine):
        #: announced again to a restarted child
        self.open_connections: Callable[[], Iterable[Connection]] | None = None
        self.respawn_timeout = respawn_timeout
        #: the child died and is not running again yet
        self.down = False
        self._waiters: list[asyncio.Future[None]] = []
        self.sinks: list[ProcessSink] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.restarts = 0
        self.closing = False
        self._delay = restart_delay
        self._started_at = 0.0
        self._who: tuple[str | None, str | None] = (None, None)
        self._start_lock: asyncio.Lock | None = None
        self._reader: asyncio.Task[None] | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._ready = asyncio.Event()
        self._open = 0
        #: the last batch pickled and its frame: the sinks' drains take the same batches
        #: (every incident goes to each of them, and they wake together), so the second
        #: sink sends the first one's bytes instead of pickling the batch again
        self._pickled: tuple[list[Incident], bytes] | None = None

    def pickled(self, batch: list[Incident]) -> bytes:
        """`batch` as (name, conn, time, fields) rows, pickled once for every sink."""
        last = self._pickled
        if last is not None and len(last[0]) == len(batch) \
                and all(map(operator.is_, last[0], batch)):
            return last[1]
        data = pickle.dumps([(i.name, i.conn, i.time, i.fields) for i in batch],
                            pickle.HIGHEST_PROTOCOL)
        self._pickled = (batch, data)
        return data

    def transcripts(self, root: Any) -> ProcessTranscripts:
        return ProcessTranscripts(self, root)

    def sink(self, name: str, kind: str, *args: Any) -> ProcessSink:
        """A bus sink that runs `kind` ("logsql", "jsonlog") with `args` in the child.

        Config models among `args` go over as plain data: the child does not import
        pydantic (child.plain makes them attribute objects again)."""
        s = ProcessSink(self, name, kind, tuple(_portable(a) for a in args))
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
            self._who = (user, group)
            await self._spawn()

    async def _spawn(self, restart: bool = False) -> None:
        loop = asyncio.get_running_loop()
        ends = [os.pipe() for _ in self.sinks]
        spec = [(s.name, s.kind, s.args, r) for s, (r, _) in zip(self.sinks, ends, strict=True)]
        env = dict(os.environ)
        env.setdefault("MALLOC_ARENA_MAX", "2")  # one arena per sink thread only fragments
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "muscipula.sinks.child",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                pass_fds=[r for r, _ in ends], env=env,
                start_new_session=True)  # a terminal's ^C is for the parent only
        except BaseException:
            for _, w in ends:
                os.close(w)
            raise
        finally:
            for r, _ in ends:
                with contextlib.suppress(OSError):
                    os.close(r)
        self.proc = proc
        self._started_at = loop.time()
        assert proc.stdin is not None
        user, group = self._who
        if restart and os.geteuid() != 0:  # the parent dropped root already: nothing to drop
            user = group = None
        proc.stdin.write(pickle.dumps((user, group, spec, self.nice)))
        proc.stdin.close()
        self.results = {}
        for s, (_, w) in zip(self.sinks, ends, strict=True):
            with contextlib.suppress(OSError, AttributeError):  # fewer, larger writes
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
            self.results[s.name] = loop.create_future()
            transport, pipe = await loop.connect_write_pipe(
                _Pipe, os.fdopen(w, "wb", buffering=0))
            s.attach(transport, pipe)
            if restart:
                s.replay_due = True
        self._reader = loop.create_task(self._read_results(proc, self.results))
        self.down = False
        self._notify()
        if self.closing:  # shut down while this child was being started: let it finish
            for s in self.sinks:
                if s.transport is not None and not s.transport.is_closing():
                    s.transport.close()

    def _notify(self) -> None:
        """Wake the writes waiting for the child (it died, is back, or we are closing)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def changed(self, timeout: float) -> None:
        """Until the child dies or is back (or we close), at most `timeout` seconds."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)

    def connections(self) -> list[Connection]:
        """The open connections, as the engine lists them (none if it cannot)."""
        if self.open_connections is None:
            return []
        try:
            return list(self.open_connections())
        except Exception:
            log.exception("the open connections could not be listed")
            return []

    async def ready(self, timeout: float = 30.0) -> None:
        """Until the child has imported what the sinks need (or has exited)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def _read_results(self, proc: asyncio.subprocess.Process,
                            results: dict[str, asyncio.Future[dict[str, Any]]]) -> None:
        assert proc.stdout is not None
        by_name = {s.name: s for s in self.sinks}
        async for line in proc.stdout:
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                result = json.loads(line)
                if result.get("ready"):
                    self._ready.set()
                    continue
                name = result["name"]
                if not result.get("final", True):
                    by_name[name].acked = int(result["written"])
                    by_name[name].held = int(result.get("held", 0))
                    continue
                fut = results.get(name)
                if fut is not None and not fut.done():
                    fut.set_result(result)
        self._ready.set()
        await proc.wait()
        died = [fut for fut in results.values() if not fut.done()]
        for fut in died:  # the child is gone: nothing more will come
            fut.set_result({})
        if died and not self.closing:
            self._child_died(proc)

    def _child_died(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff(loop.time() - self._started_at)
        log.error("the sink process exited (%s); restarting it in %.1f s", proc.returncode,
                  delay)
        open_now = self.connections()  # their incidents still queued need them announced
        for s in self.sinks:
            s.detach()
            if s.announces:  # a child that died before it heard the last ones: those too
                s.replay = [*s.replay, *open_now]
        self.down = True
        self._notify()
        self._restart = loop.call_later(delay, lambda: loop.create_task(self._respawn()))

    def _backoff(self, lived: float) -> float:
        """The wait before the next start: doubling while the child dies young (it lived
        `lived` seconds), back to `restart_delay` once it had lived a minute."""
        if lived > 60:
            self._delay = self.restart_delay
        delay, self._delay = self._delay, min(self._delay * 2, self.max_restart_delay)
        return delay

    async def _respawn(self) -> None:
        self._restart = None
        if self.closing:
            return
        try:
            await self._spawn(restart=True)
            self.restarts += 1
        except Exception:
            log.exception("the sink process could not be started again")
            if self.proc is not None and self.proc.returncode is None:
                return
            loop = asyncio.get_running_loop()
            delay = self._backoff(0.0)
            self._restart = loop.call_later(delay, lambda: loop.create_task(self._respawn()))

    async def finished(self, sink: ProcessSink, timeout: float) -> dict[str, Any]:
        """Wait for `sink`'s final count (its pipe is closed); the last one reaps the child."""
        self.closing = True
        self._notify()
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        fut = self.results.get(sink.name)
        result: dict[str, Any] = {}
        if fut is not None and sink.pipe is not None:
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

    #: a restarted child is told of the open connections before this sink's next batch
    announces = True

    def __init__(self, host: SinkHost, name: str, kind: str, args: tuple[Any, ...]) -> None:
        self.host = host
        self.name = name
        self.kind = kind
        self.args = args
        self.transport: asyncio.WriteTransport | None = None
        self.pipe: _Pipe | None = None
        self.sent = 0
        #: sent to the current child, and what it has reported written so far
        self.gen_sent = 0
        self.acked = 0
        #: what the child holds unwritten (JSON lines of open connections): lost if it dies
        self.held = 0
        #: incidents counted written by the bus that no child wrote (final at close)
        self.unwritten = 0
        self.close_timeout = 60.0
        #: the child was started again: announce the open connections before the next batch
        self.replay_due = False
        #: the connections open when the last child died
        self.replay: list[Connection] = []

    def attach(self, transport: asyncio.WriteTransport, pipe: _Pipe) -> None:
        """The pipe to a new child."""
        self.transport, self.pipe = transport, pipe
        self.gen_sent = self.acked = 0

    def detach(self) -> None:
        """The child died: what it had not reported written is lost."""
        self.unwritten += max(self.gen_sent - self.acked, 0)
        self.gen_sent = self.acked = 0
        transport, self.transport, self.pipe = self.transport, None, None
        if transport is not None and not transport.is_closing():
            transport.abort()

    async def open(self) -> None:
        self.host._open += 1
        await self.host.start()

    async def write(self, batch: list[Incident]) -> None:
        pipe = self.pipe
        if pipe is None or pipe.lost:
            await self._child_back()
        if self.replay_due:
            self._replay()
        try:
            ok = self._send_frame(self.host.pickled(batch))
        except Exception:  # one odd field must not cost the whole batch
            rows = [(i.name, i.conn, i.time, i.fields) for i in batch]
            ok = self._frame(_picklable(rows))
        if not ok:
            raise RuntimeError(f"sink process for {self.name} is gone")
        self._sent(len(batch))
        pipe = self.pipe
        if pipe is not None and pipe.paused:
            await pipe.drain()

    def stopping(self) -> None:
        """The bus is closing: a write waiting for a restarted child gives up now."""
        self.host.closing = True
        self.host._notify()

    async def _child_back(self) -> None:
        """Wait for a restarted child rather than fail the batch (the bus keeps it meanwhile).

        A pipe lost while the host has not seen its child die yet gets a short grace for
        that; a child that does not come back in `respawn_timeout` fails the batch."""
        host = self.host
        loop = asyncio.get_running_loop()
        deadline = loop.time() + host.respawn_timeout
        grace = min(loop.time() + 2.0, deadline)
        while self.pipe is None or self.pipe.lost:
            now = loop.time()
            until = deadline if host.down else grace
            if host.closing or now >= until:
                raise RuntimeError(f"sink process for {self.name} is gone")
            await host.changed(until - now)

    def _replay(self) -> None:
        """Announce the connections open at the child's death and now, once, in one frame."""
        self.replay_due = False
        seen: set[int] = set()
        rows = []
        for c in [*self.replay, *self.host.connections()]:
            if c.id not in seen:
                seen.add(c.id)
                rows.append((f"connection.{c.transport}.{c.type}", c.id, c.start,
                             {"connection": c, "replayed": True}))
        self.replay = []
        if rows:
            try:
                self._frame(("replay", rows))
            except Exception:
                log.exception("sink %s: open connections not announced", self.name)

    def _sent(self, n: int) -> None:
        self.sent += n
        self.gen_sent += n

    def _frame(self, obj: Any) -> bool:
        """Pickle `obj` into the pipe; False if the child is gone."""
        if self.pipe is None or self.pipe.lost:
            return False
        return self._send_frame(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))

    def _send_frame(self, data: bytes) -> bool:
        pipe, transport = self.pipe, self.transport
        if pipe is None or transport is None or pipe.lost:
            return False
        transport.write(_LEN.pack(len(data)) + data)
        return True

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        result = await self.host.finished(self, self.close_timeout)
        written = int(result["written"]) if "written" in result else self.acked
        self.unwritten += max(self.gen_sent - written, 0)
        self.gen_sent = self.acked = 0
        if self.unwritten:
            log.error("sink %s: %d items were not written", self.name, self.unwritten)


class ProcessTranscripts(ProcessSink):
    """The engine's transcript writer: encoding and disk writes happen in the sink process.

    `put` only appends to a list; a timer ships it every `interval` seconds, in frames
    of about `frame_bytes`, and only while the pipe takes them: a child that falls
    behind leaves transcripts in the list (they are the session's own chunks, no copy)
    rather than pickled copies in the pipe's buffer. Past `max_pending` transcripts
    waiting, new ones are dropped and counted.

    The bytes of a transcript stay charged to the sessions' budget
    (limits.max_transcript_memory) while they wait here: `release` is given them back
    once they are pickled into the pipe or dropped, so that a child that falls behind
    makes sessions record less instead of letting the list grow by 10,000 transcripts.
    """

    announces = False  # transcripts carry their connection record with them

    def __init__(self, host: SinkHost, root: Any, max_pending: int = 10_000,
                 interval: float = 0.2, frame_bytes: int = 1 << 20) -> None:
        super().__init__(host, "transcripts", "transcripts", (root,))
        host.sinks.append(self)
        host._open += 1  # a user of the child from the start; closed last by the engine
        self.max_pending = max_pending
        self.interval = interval
        self.frame_bytes = frame_bytes
        self.pending: deque[tuple[Any, float, bytes]] = deque()
        self.written = 0
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        #: called with the bytes of transcripts that left the list (set by the engine)
        self.release: Callable[[int], None] | None = None

    @property
    def dropped(self) -> int:
        return self._dropped + self.unwritten

    def _give_back(self, size: int) -> None:
        if size and self.release is not None:
            self.release(size)

    def _drop(self) -> None:
        """Everything still waiting is lost (no child to take it)."""
        self._dropped += len(self.pending)
        self._give_back(sum(_size(item) for item in self.pending))
        self.pending.clear()

    def put(self, conn: Any, started: float, packed: bytes) -> None:
        if len(self.pending) >= self.max_pending:
            self._dropped += 1
            self._give_back(len(packed))
            return
        self.pending.append((conn, started, packed))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Ship what the pipe takes now; the rest goes when it drains (or at the next tick)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, pipe = self.pending, self.pipe
        if pipe is None or pipe.lost:
            if self.host.down and not self.host.closing:
                # a restart is coming: keep them (max_pending and the transcript memory
                # budget still bound the list) and try again at the next tick
                self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)
                return
            self._drop()
            return
        pipe.on_resume = self.flush
        while pending and not pipe.paused:
            items, size = [], 0
            while pending and (not items or size < self.frame_bytes):
                item = pending.popleft()
                items.append(item)
                size += _size(item)
            try:
                ok = self._frame(items)
            except Exception:
                log.exception("transcripts could not be sent to the sink process")
                ok = False
            self._give_back(size)  # pickled into the pipe's buffer, or lost
            if not ok:
                self._dropped += len(items)
                continue
            self._sent(len(items))
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
        self._drop()
        await self.close()
        self.written = self.sent - self.unwritten


def _size(item: tuple[Any, float, bytes]) -> int:
    """The transcript bytes of one waiting transcript (what its session charged)."""
    return len(item[2])


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


def _portable(value: Any) -> Any:
    """A pydantic config model as a plain dict the child rebuilds (child.plain)."""
    fields = getattr(type(value), "model_fields", None)
    if fields is None:
        return value
    return {"__config__": True, **{k: _portable(getattr(value, k)) for k in fields}}
