"""Shellcode in what peers sent: found on the event loop, emulated in worker processes.

`scan` is handed each ended connection's transcript. A regex pass over the inbound
bytes (detect.py) finds GetPC idioms; most connections stop there. Hits become
windows of code that are recorded (shellcode.detected) and queued for emulation
(pool.py, worker.py); the API trace becomes emu.profile, and what it reveals
(profile.py) emu.service and download.offer incidents, a bounded number of each.

A window's bytes go to the store only once emulation showed they are code (they made
API calls): bytes that merely hold a GetPC idiom cost an attacker nothing to send, and
storing each would let anyone fill the store's quota, shared with real downloads, with
them. Their size and sha256 are in shellcode.detected either way.

Fairness: one remote address has at most `max_pending_per_source` connections queued
or emulated, so endless loops from one source cannot hold the emulator for everyone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import json
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from muscipula.capture.shellcode import detect, pool
from muscipula.config import Shellcode
from muscipula.incidents import Bus, Connection
from muscipula.store import Store, stored_incidents

log = logging.getLogger(__name__)


#: inbound bytes before a later look's start that are looked at again
OVERLAP = 16
#: connections whose reported findings are remembered (a window emulated twice)
REPORTED_CONNECTIONS = 1024


@dataclass(slots=True)
class _Looked:
    """What live scans of one connection looked at: its first `upto` inbound bytes,
    whether they held shellcode (the connection is counted as detected once), the
    candidates emulated already, and where a window starts that ran to the end of what
    had come (its code may have been cut: it is looked at again once more comes)."""

    upto: int = 0
    detected: bool = False
    done: set[int] = field(default_factory=set)
    cut: int | None = None


class Emulator:
    def __init__(self, cfg: Shellcode, store: Store, bus: Bus,
                 identity: dict[str, str] | None = None) -> None:
        """`identity`: who the emulated machine says it is (hostname, domain, user),
        from the persona; speakeasy's own defaults would name the emulator."""
        self.cfg, self.store, self.bus = cfg, store, bus
        self._ctx = pool.context()
        self._threads = ThreadPoolExecutor(cfg.workers, thread_name_prefix="emulator")
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = threading.Event()
        self._limits = pool.Limits(memory=cfg.max_worker_memory,
                                   profile_calls=cfg.max_profile_calls,
                                   profile_arg=cfg.max_profile_arg,
                                   findings=cfg.max_findings,
                                   identity=dict(identity or {}))
        #: connections queued or being emulated, and of them per remote address
        self.pending = 0
        self._per_source: Counter[str] = Counter()
        #: live connections looked at already, and how far (until their final scan)
        self._looked: dict[int, _Looked] = {}
        #: services and offers each recent connection's emulations reported
        self._reported: OrderedDict[int, set[str]] = OrderedDict()
        self.scanned = 0
        #: connections with shellcode found
        self.detected = 0
        #: jobs that ran to their end
        self.emulated = 0
        #: connections not emulated: too many waiting (in all, or from their source),
        #: or still queued at shutdown
        self.dropped = 0
        #: jobs that gave no result (worker not started, died, given up at shutdown)
        self.failed = 0
        #: jobs whose worker was killed past its deadline
        self.killed = 0

    def counters(self) -> dict[str, int]:
        """What the emulator did so far, for counters.json."""
        return {"scanned": self.scanned, "detected": self.detected, "emulated": self.emulated,
                "dropped": self.dropped, "failed": self.failed, "killed": self.killed}

    def scan(self, conn: Connection, transcript: bytes | bytearray, live: bool = False) -> None:
        """Look at a connection's packed transcript: at its end, or `live` while it lasts
        (then only what came since the last look is looked at, at the end too); never
        blocks, never raises."""
        try:
            self._scan(conn, transcript, live)
        except Exception:
            log.exception("shellcode scan of connection %s failed", conn.id)

    def _scan(self, conn: Connection, transcript: bytes | bytearray, live: bool) -> None:
        cfg = self.cfg
        seen = self._looked.get(conn.id) if live else self._looked.pop(conn.id, None)
        data, starts = detect.inbound(transcript, cfg.max_scan_bytes)
        if seen is None:
            seen = _Looked()
            if live:
                self._looked[conn.id] = seen
        if not live:
            self.scanned += 1
        # the last few bytes looked at again: an idiom may straddle two looks
        begin = fresh = max(seen.upto - OVERLAP, 0)
        if seen.cut is not None and len(data) > seen.upto:
            begin, seen.cut = min(begin, seen.cut), None
        seen.upto = len(data)
        tail = data[begin:] if begin else data
        if not tail or not detect.maybe(tail):
            return
        found = [begin + at for at in detect.candidates(tail, cfg.max_candidates)
                 if begin + at not in seen.done]
        if not found:
            return
        if not seen.detected:
            seen.detected = True
            self.detected += 1
        # a cut window looked at again keeps to its own candidates; what is new gets
        # windows of its own
        windows = [w for group in ([f for f in found if f < fresh],
                                   [f for f in found if f >= fresh])
                   for w in detect.windows(data, starts, group, cfg.max_shellcode_bytes)]
        kept: list[detect.Window] = []
        budget = cfg.max_candidates  # emulations, chunk starts included
        for w in windows:
            entries = w.entries[:budget]
            if not entries:
                break
            budget -= len(entries)
            self._detected(conn, w)
            kept.append(detect.Window(w.start, w.data, entries))
            if live and w.start + len(w.data) >= len(data) \
                    and len(w.data) < cfg.max_shellcode_bytes:
                seen.cut = w.start if seen.cut is None else min(seen.cut, w.start)
            else:
                seen.done.update(w.start + e for e in entries)
        self._submit(conn, kept)

    def _detected(self, conn: Connection, w: detect.Window) -> None:
        digest = hashlib.sha256(w.data).hexdigest()
        self.bus.emit("shellcode.detected", conn.id,
                      {"offset": w.start + w.entries[0], "size": len(w.data), "sha256": digest})

    def _keep(self, conn: Connection, w: detect.Window) -> None:
        """The window's bytes in the store (it made API calls: it is code)."""
        stored = self.store.put(w.data)
        url = f"shellcode://{conn.remote_host}/{w.start}"
        if stored is None:
            self.bus.emit("store.refused", conn.id,
                          {"url": url, "reason": "quota", "size": len(w.data)})
            return
        for name, fields in stored_incidents(url, stored, True):
            self.bus.emit(name, conn.id, fields)

    def _submit(self, conn: Connection, windows: list[detect.Window]) -> None:
        cfg, source = self.cfg, conn.remote_host
        if self.pending >= cfg.workers + cfg.max_pending:
            self.dropped += 1
            log.warning("shellcode of connection %s not emulated: %d waiting (max_pending)",
                        conn.id, self.pending)
            return
        if self._per_source[source] >= cfg.max_pending_per_source:
            self.dropped += 1
            log.warning("shellcode of connection %s not emulated: %d of %s waiting "
                        "(max_pending_per_source)", conn.id, self._per_source[source], source)
            return
        if self._stop.is_set():  # ended after the emulator closed: nothing runs any more
            self.dropped += 1
            return
        job = [(w.data, list(w.entries)) for w in windows]
        # the emulated machine has the (IPv4) address the shellcode was sent to
        identity = dict(self._limits.identity)
        if address := _ipv4(conn.local_host):
            identity["address"] = address
        limits = dataclasses.replace(self._limits, identity=identity)
        future = self._threads.submit(pool.run, self._ctx, job, cfg.timeout,
                                      cfg.max_api_calls, pool.entry_deadline(cfg.timeout),
                                      limits, self._stop)
        task = asyncio.get_running_loop().create_task(self._finish(conn, windows, future))
        self.pending += 1
        self._per_source[source] += 1
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, source, future))

    def _done(self, task: asyncio.Task[None], source: str, future: Any) -> None:
        """Whatever became of the job (cancelled before it ran included): it waits no more,
        and a job whose task was cancelled never starts."""
        if task.cancelled():
            future.cancel()
        self._tasks.discard(task)
        self.pending -= 1
        self._per_source[source] -= 1
        if self._per_source[source] <= 0:
            del self._per_source[source]
        if task.cancelled():
            self.dropped += 1

    async def _finish(self, conn: Connection, windows: list[detect.Window],
                      future: Any) -> None:
        try:
            outcome = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # still queued: it never runs
            raise
        except Exception as exc:  # the thread failed
            outcome = pool.Outcome([], f"not run: {exc!r}")
        if outcome.killed:
            self.killed += 1
        elif outcome.error:
            self.failed += 1
        else:
            self.emulated += 1
        if outcome.error:
            log.warning("emulation of connection %s stopped short: %s", conn.id, outcome.error)
        seen = Counter[str]()
        for w, result in zip(windows, outcome.results, strict=False):
            self._report(conn, w, result, seen)

    def _report(self, conn: Connection, w: detect.Window, result: dict[str, Any],
                seen: Counter[str]) -> None:
        """One window's result; `seen` counts offers and services of the connection so far."""
        profile = result.get("profile") or []
        if not profile:
            log.info("shellcode at %s of connection %s made no API call (%s)",
                     w.start, conn.id, result.get("error"))
            return
        self._keep(conn, w)
        self.bus.emit("emu.profile", conn.id,
                      {"profile": json.dumps(profile[:self.cfg.max_profile_calls + 1],
                                             separators=(",", ":"))})
        # a window looked at again once more of it came reports only what is new
        reported = self._reported.setdefault(conn.id, set())
        self._reported.move_to_end(conn.id)
        while len(self._reported) > REPORTED_CONNECTIONS:
            self._reported.popitem(last=False)
        shells = result.get("shells") or []
        for url in self._fresh(result.get("services"), "services", seen, reported):
            self.bus.emit("emu.service", conn.id, {
                "url": url, "kind": "shell" if url in shells else "stager",
                "local_host": conn.local_host, "remote_host": conn.remote_host})
        for url in self._fresh(result.get("offers"), "offers", seen, reported):
            self.bus.emit("download.offer", conn.id, {"url": url, "source": "shellcode"})

    def _fresh(self, urls: list[str] | None, kind: str, seen: Counter[str],
               reported: set[str]) -> Iterator[str]:
        """`urls` not reported for the connection yet, up to max_findings of `kind`."""
        cap = self.cfg.max_findings
        for url in (urls or [])[:cap]:
            if seen[kind] >= cap:
                return
            if url not in reported:
                reported.add(url)
                seen[kind] += 1
                yield url

    async def close(self, grace: float | None = None) -> None:
        """Let emulations in flight finish and report, for `grace` seconds (default: the
        longest a job may take); then what is still queued is dropped, what still runs
        is killed, both counted as dropped."""
        tasks = list(self._tasks)
        if tasks:
            limit = grace if grace is not None else pool.deadline(
                [(b"", [0] * self.cfg.max_candidates)], self.cfg.timeout)
            _done, late = await asyncio.wait(tasks, timeout=max(limit, 0.001))
            self._stop.set()
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        self._stop.set()
        self._looked.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)


def _ipv4(host: str) -> str | None:
    """`host` as an IPv4 address (an IPv4-mapped IPv6 one unwrapped), or None: the
    emulator's sockets know IPv4 only."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped  # type: ignore[assignment]
    return str(ip) if ip is not None else None
