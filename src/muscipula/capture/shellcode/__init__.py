"""Shellcode in what peers sent: found on the event loop, emulated in worker processes.

`scan` is handed each ended connection's transcript. A regex pass over the inbound
bytes (detect.py) finds GetPC idioms; most connections stop there. Hits become
windows of code that are recorded (shellcode.detected, the bytes in the store) and
queued for emulation (pool.py, worker.py); the API trace becomes emu.profile, and
what it reveals (profile.py) emu.service and download.offer incidents.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from muscipula.capture.shellcode import detect, pool
from muscipula.config import Shellcode
from muscipula.incidents import Bus, Connection
from muscipula.store import Store, stored_incidents

log = logging.getLogger(__name__)


class Emulator:
    def __init__(self, cfg: Shellcode, store: Store, bus: Bus) -> None:
        self.cfg, self.store, self.bus = cfg, store, bus
        self._ctx = pool.context()
        self._threads = ThreadPoolExecutor(cfg.workers, thread_name_prefix="emulator")
        self._tasks: set[asyncio.Task[None]] = set()
        #: connections queued or being emulated
        self.pending = 0
        #: connections not emulated because max_pending were waiting
        self.dropped = 0
        #: jobs that gave no result (deadline, worker died)
        self.failed = 0
        self.scanned = 0
        self.detected = 0

    def scan(self, conn: Connection, transcript: bytes | bytearray) -> None:
        """Look at an ended connection's packed transcript; never blocks, never raises."""
        try:
            self._scan(conn, transcript)
        except Exception:
            log.exception("shellcode scan of connection %s failed", conn.id)

    def _scan(self, conn: Connection, transcript: bytes | bytearray) -> None:
        self.scanned += 1
        cfg = self.cfg
        data, starts = detect.inbound(transcript, cfg.max_scan_bytes)
        if not detect.maybe(data):
            return
        found = detect.candidates(data, cfg.max_candidates)
        if not found:
            return
        self.detected += 1
        windows = detect.windows(data, starts, found, cfg.max_shellcode_bytes)
        job: list[tuple[bytes, list[int]]] = []
        budget = cfg.max_candidates  # emulations, chunk starts included
        for w in windows:
            entries = list(w.entries[:budget])
            if not entries:
                break
            budget -= len(entries)
            self._record(conn, w)
            job.append((w.data, entries))
        self._submit(conn, [w.start for w in windows[:len(job)]], job)

    def _record(self, conn: Connection, w: detect.Window) -> None:
        """shellcode.detected, and the window's bytes kept in the store."""
        digest = hashlib.sha256(w.data).hexdigest()
        self.bus.emit("shellcode.detected", conn.id,
                      {"offset": w.start + w.entries[0], "size": len(w.data), "sha256": digest})
        stored = self.store.put(w.data)
        url = f"shellcode://{conn.remote_host}/{w.start}"
        if stored is None:
            self.bus.emit("store.refused", conn.id,
                          {"url": url, "reason": "quota", "size": len(w.data)})
            return
        for name, fields in stored_incidents(url, stored, True):
            self.bus.emit(name, conn.id, fields)

    def _submit(self, conn: Connection, starts: list[int],
                job: list[tuple[bytes, list[int]]]) -> None:
        if self.pending >= self.cfg.workers + self.cfg.max_pending:
            self.dropped += 1
            log.warning("shellcode of connection %s not emulated: %d waiting (max_pending)",
                        conn.id, self.pending)
            return
        self.pending += 1
        cfg = self.cfg
        hard = pool.deadline(job, cfg.timeout)
        future = self._threads.submit(pool.run_job, self._ctx, job, cfg.timeout,
                                      cfg.max_api_calls, hard)
        task = asyncio.get_running_loop().create_task(self._finish(conn, starts, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, conn: Connection, starts: list[int], future: Any) -> None:
        try:
            results = await asyncio.wrap_future(future)
        except Exception as exc:  # cancelled at shutdown, or the thread failed
            results = f"not run: {exc!r}"
        finally:
            self.pending -= 1
        if isinstance(results, str):
            self.failed += 1
            log.warning("emulation of connection %s gave no result: %s", conn.id, results)
            return
        for start, result in zip(starts, results, strict=False):
            self._report(conn, start, result)

    def _report(self, conn: Connection, start: int, result: dict[str, Any]) -> None:
        profile = result.get("profile") or []
        if not profile:
            log.info("shellcode at %s of connection %s made no API call (%s)",
                     start, conn.id, result.get("error"))
            return
        self.bus.emit("emu.profile", conn.id,
                      {"profile": json.dumps(profile, separators=(",", ":"))})
        for url in result.get("services") or []:
            self.bus.emit("emu.service", conn.id, {"url": url, "local_host": conn.local_host,
                                                   "remote_host": conn.remote_host})
        for url in result.get("offers") or []:
            self.bus.emit("download.offer", conn.id, {"url": url, "source": "shellcode"})

    async def close(self) -> None:
        """Let emulations in flight finish (bounded by their deadline) and report."""
        tasks = list(self._tasks)
        if tasks:
            limit = pool.deadline([(b"", [0] * self.cfg.max_candidates)], self.cfg.timeout)
            _done, late = await asyncio.wait(tasks, timeout=limit)
            for task in late:
                task.cancel()
        self._threads.shutdown(wait=False, cancel_futures=True)
