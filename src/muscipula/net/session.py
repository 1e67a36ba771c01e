"""One connection's life on the driver side: carrying out a machine's actions.

Both drivers (stream and datagram) subclass `Session`; only how bytes leave and
how the connection closes differ. Everything else, incidents, captures, timers,
children, limits and transcripts, is here once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from muscipula.incidents import Connection
from muscipula.machine import (
    Action,
    CaptureData,
    CaptureEnd,
    ChildClose,
    ChildConnect,
    ChildEvent,
    ChildFailed,
    ChildListen,
    ChildSend,
    Close,
    Emit,
    Machine,
    Send,
    StartTLS,
    Wake,
)
from muscipula.net.runtime import ServiceRuntime
from muscipula.store import Capture, stored_incidents
from muscipula.transcripts import FRAME, REPEAT

log = logging.getLogger(__name__)
FRAME_SIZE = FRAME.size
FRAME_PACK = FRAME.pack
#: the largest chunk a later equal one may repeat (transcripts.REPEAT)
REPEAT_MAX = 1024


class Session:
    __slots__ = (
        "_live", "_wake", "_wake_at", "_wake_due", "bytes_in", "bytes_out", "captures",
        "children", "close_reason", "closing", "conn", "last_active", "live_scans", "machine",
        "rt", "started", "transcript", "transcript_last", "transcript_left",
        "transcript_out_left",
    )

    def __init__(self, rt: ServiceRuntime, conn: Connection, machine: Machine, now: float) -> None:
        self.rt = rt
        self.conn = conn
        self.machine = machine
        self.started = now
        self.last_active = now
        self.bytes_in = 0
        self.bytes_out = 0
        self.closing = False
        self.close_reason = ""
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None  # when the machine wants timer()
        self._wake_due = 0.0  # when the armed handle fires (never later than _wake_at)
        self.captures: dict[str, Capture | None] | None = None
        #: the armed live shellcode scan (rt.live_quiet), and how many ran
        self._live: asyncio.TimerHandle | None = None
        self.live_scans = 0
        self.children: dict[str, Any] | None = None
        #: packed chunks (transcripts.pack); its length is what it charged the budget
        self.transcript: bytearray | None = bytearray() if rt.transcripts else None
        #: bytes this transcript may still take (chunks spelled out, with their heads),
        #: and chunk bytes sent it may still take
        self.transcript_left = rt.limits.max_transcript_bytes
        self.transcript_out_left = rt.limits.max_transcript_out_bytes
        #: the last chunk kept each way (received, sent)
        self.transcript_last: list[bytes | None] = [None, None]

    # ------------------------------------------------------------ subclass hooks

    def _send(self, data: bytes, addr: tuple[str, int] | None) -> None:
        raise NotImplementedError

    def _close(self, abort: bool) -> None:
        raise NotImplementedError

    def _start_tls(self, data: bytes) -> None:
        self.emit("protocol.error", {"detail": "TLS not available on this transport"})

    # ----------------------------------------------------------------- helpers

    def emit(self, name: str, fields: dict[str, Any] | None = None, conn: int = 0) -> None:
        self.rt.shared.bus.emit(name, conn or self.conn.id, fields)

    def record(self, direction: int, data: bytes, now: float | None = None) -> None:
        """Keep transcript bytes, up to the configured bounds.

        Runs for every read and every answer: the bounds are kept as what is left, so
        that a capped direction costs one comparison. A chunk equal to the last one
        that way is kept as its head only (transcripts.REPEAT), but counts against the
        connection's own bound as if it were stored: what is written out of it stays
        within max_transcript_bytes. Every chunk's 13-byte head counts too, so that
        empty or one-byte chunks (UDP keep-alives) cannot pile up heads unbounded."""
        buf = self.transcript
        if buf is None:
            return
        room = self.transcript_left - FRAME_SIZE
        if direction and self.transcript_out_left < room:
            room = self.transcript_out_left
        shared = self.rt.shared
        if shared.transcript_room - FRAME_SIZE < room:
            room = shared.transcript_room - FRAME_SIZE
        n = len(data)
        if room < 0 or (room == 0 and n):
            return
        if n > room:
            data, n = data[:room], room
        offset = (time.time() if now is None else now) - self.started
        last = self.transcript_last
        if data == last[direction]:
            buf += FRAME_PACK(offset, direction | REPEAT, n)
            shared.transcript_room -= FRAME_SIZE
        else:
            buf += FRAME_PACK(offset, direction, n)
            buf += data
            # only small chunks are remembered: the reference keeps them alive outside
            # the transcript budget (a read may be 256 KiB)
            last[direction] = data if n <= REPEAT_MAX else None
            shared.transcript_room -= n + FRAME_SIZE
        self.transcript_left -= n + FRAME_SIZE
        if direction:
            self.transcript_out_left -= n

    def call(self, method: str, *args: Any) -> None:
        """Call the machine and carry out its actions; a machine bug closes only this session."""
        if self.closing and method != "closed":
            return
        try:
            actions = getattr(self.machine, method)(*args, time.time())
        except Exception:
            log.exception("%s machine failed in %s", self.rt.name, method)
            self.emit("protocol.error", {"detail": f"internal error in {method}"})
            self.close(abort=True, reason="internal error")
            return
        if actions:
            self.run(actions)

    def received(self, data: bytes) -> None:
        """Bytes from the peer: count_in, record and call("receive") with one clock read;
        this runs for every read on every connection."""
        if self.closing:
            return
        now = time.time()
        self.bytes_in += len(data)
        self.last_active = now
        limits = self.rt.limits
        if self.bytes_in > limits.max_bytes_in:
            self.limit("max_bytes_in", limits.max_bytes_in)
            return
        if self.transcript is not None:
            self.record(0, data, now)
            if self._live is None and self.live_scans < self.rt.live_scans:
                self._live = self.rt.shared.loop.call_later(self.rt.live_quiet,
                                                            self._live_scan)
        try:
            actions = self.machine.receive(data, now)
        except Exception:
            log.exception("%s machine failed in receive", self.rt.name)
            self.emit("protocol.error", {"detail": "internal error in receive"})
            self.close(abort=True, reason="internal error")
            return
        if actions:
            self.run(actions)

    def deliver(self, event: ChildEvent) -> None:
        self.call("child", event)

    def limit(self, name: str, value: Any) -> None:
        self.emit("connection.limit", {"limit": name, "value": value})
        self.close(abort=True, reason=name)

    def check_time(self, now: float) -> None:
        limits = self.rt.limits
        if now - self.last_active > limits.idle_timeout:
            self.limit("idle_timeout", limits.idle_timeout)
        elif now - self.started > limits.max_session_time:
            self.limit("max_session_time", limits.max_session_time)

    def count_in(self, n: int) -> bool:
        """Account received bytes; False (and closed) past max_bytes_in."""
        self.bytes_in += n
        self.last_active = time.time()
        if self.bytes_in > self.rt.limits.max_bytes_in:
            self.limit("max_bytes_in", self.rt.limits.max_bytes_in)
            return False
        return True

    # ------------------------------------------------------------------ actions

    def run(self, actions: list[Action]) -> None:
        for action in actions:
            if self.closing and not isinstance(action, (Emit, CaptureData, CaptureEnd)):
                continue
            kind = type(action)
            if kind is Send:
                self.bytes_out += len(action.data)
                if self.transcript_out_left > 0:
                    self.record(1, action.data)
                self._send(action.data, action.addr)
            elif kind is Emit:
                self.rt.shared.bus.emit(action.name, self.conn.id, action.fields)
            elif kind is Close:
                self.close(abort=action.abort, reason=action.reason or "machine")
            elif kind is Wake:
                self._set_wake(action.at)
            elif kind is CaptureData:
                self._capture(action.stream, action.data)
            elif kind is CaptureEnd:
                self._capture_end(action.stream, action.url, action.complete)
            elif kind is StartTLS:
                self._start_tls(action.data)
            elif kind in (ChildListen, ChildConnect, ChildSend, ChildClose):
                from muscipula.net import children

                children.handle(self, action)
            else:
                log.error("unknown action %r from %s", action, self.rt.name)

    def _set_wake(self, at: float | None) -> None:
        """Machines push their deadline on with every line they get: an armed handle that
        fires no later than the new deadline is kept and re-armed when it fires, instead
        of being cancelled and made again each time."""
        self._wake_at = at
        wake = self._wake
        if wake is not None:
            if at is not None and self._wake_due <= at:
                return
            wake.cancel()
            self._wake = None
        if at is not None:
            self._arm(at, time.time())

    def _arm(self, at: float, now: float) -> None:
        self._wake_due = at
        self._wake = self.rt.shared.loop.call_later(max(at - now, 0.0), self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        at = self._wake_at
        if at is None:
            return
        now = time.time()
        if at - now > 0.001:  # the deadline moved on since this handle was armed
            self._arm(at, now)
            return
        self._wake_at = None
        self.call("timer")

    def _live_scan(self) -> None:
        """Shellcode looked for while the connection lasts, once its peer is quiet: the
        exploit is whole, and the shell or stager it opens is answered while the attacker
        still waits for it (as the reference did on every read)."""
        self._live = None
        if self.closing or not self.transcript or self.rt.scan is None:
            return
        quiet = self.rt.live_quiet - (time.time() - self.last_active)
        if quiet > 0.001:  # still talking: look again once it stops
            self._live = self.rt.shared.loop.call_later(quiet, self._live_scan)
            return
        self.live_scans += 1
        try:
            self.rt.scan(self.conn, self.transcript, live=True)
        except Exception:
            log.exception("%s: scanning a live transcript failed", self.rt.name)

    # ----------------------------------------------------------------- captures

    def _capture(self, stream: str, data: bytes) -> None:
        if self.captures is None:
            self.captures = {}
        if stream not in self.captures:
            self.captures[stream] = self.rt.shared.store.open()
            if self.captures[stream] is None:
                self.emit("store.refused", {"url": stream, "reason": "quota", "size": 0})
        capture = self.captures[stream]
        if capture is not None and not capture.write(data):
            self.emit("store.refused", {"url": stream, "reason": "max_file_bytes",
                                        "size": capture.size})
            # keep the open capture so that the truncated part is still stored at end

    def _capture_end(self, stream: str, url: str, complete: bool) -> None:
        if self.captures is None or stream not in self.captures:
            self._capture(stream, b"")
        assert self.captures is not None
        capture = self.captures.pop(stream)
        if capture is None:
            return
        for name, fields in stored_incidents(url, capture.finish(), complete):
            self.emit(name, fields)

    # ------------------------------------------------------------------ closing

    def close(self, abort: bool = False, reason: str = "") -> None:
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason  # connection.free says why (a limit's name, "shutdown")
        self._close(abort)

    def finish(self, reason: str) -> None:
        """The transport is gone: tell the machine, flush captures, free everything."""
        reason = self.close_reason or reason
        self.closing = True
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if self._live is not None:
            self._live.cancel()
            self._live = None
        try:
            actions = self.machine.closed(time.time())
        except Exception:
            log.exception("%s machine failed in closed", self.rt.name)
            actions = []
        self.run(actions)
        if self.captures:
            for stream in list(self.captures):
                self._capture_end(stream, stream, complete=False)
        if self.children:
            from muscipula.net import children

            children.close_all(self)
        self.rt.shared.sessions.discard(self)
        self.emit("connection.free", {
            "connection": self.conn, "reason": reason, "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out, "duration": round(time.time() - self.started, 6),
        })
        writer = self.rt.shared.transcripts
        buf = self.transcript
        if buf and self.rt.scan is not None:
            try:
                self.rt.scan(self.conn, buf)
            except Exception:
                log.exception("%s: scanning a transcript failed", self.rt.name)
        if writer is not None and buf:
            # the bytes stay charged until the writer has sent or dropped them (its release)
            writer.put(self.conn, self.started, buf)
        elif buf:
            self.rt.shared.transcript_room += len(buf)
        self.transcript = None
        self.transcript_last = [None, None]

    def child_failed(self, tag: str, reason: str) -> None:
        self.deliver(ChildFailed(tag, reason))
