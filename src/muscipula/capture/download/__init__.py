"""Fetching the URLs attackers offer (download.offer) into the store.

`offer` never blocks: it schedules. At most `max_concurrent` fetches run, `max_pending`
more wait for a slot, and one more is refused as "busy". A URL is fetched once per
`repeat_window`: offers made while it runs wait for it, offers made after it finished
get the same outcome for their own connection (the file's download.complete,
.hash and .again, or the same download.failed). Each fetch has a total `timeout` and is
given up when fewer than `min_rate` bytes a second arrive over a `slow_window`.

Every offer that is not fetched gets a download.failed {url, reason, detail}, reason one
of: scheme, url, uploaded, destination, dns, connect, timeout, slow, status, redirects,
redirect, protocol, store, busy, limit, shutdown, error. One connection makes at most
`max_offers_per_connection` offers ("limit" for the rest), counted for the last
COUNTED_CONNECTIONS connections that made any.

A file longer than `max_bytes` (or cut by the store's quota) is kept truncated: it is
reported as a capture with complete False, followed by store.refused {url, reason
"max_bytes" or "store quota", size}; it is not a download.failed, since the file was
fetched, in part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from muscipula.capture.download import ftp, http, tcp, tftp
from muscipula.capture.download.body import Body
from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.policy import Policy
from muscipula.capture.download.target import Target, parse
from muscipula.config import Download
from muscipula.incidents import Bus
from muscipula.store import Store, stored_incidents

__all__ = ["Downloader", "FetchError"]

log = logging.getLogger(__name__)

Outcome = list[tuple[str, dict[str, object]]]
Fetch = Callable[[Target, Download, Policy, Body], Awaitable[None]]
#: connections whose offers are counted (the oldest is forgotten past this many)
COUNTED_CONNECTIONS = 65536

FETCHERS: dict[str, Fetch] = {"http": http.fetch, "https": http.fetch, "ftp": ftp.fetch,
                              "tftp": tftp.fetch, "tcp": tcp.fetch}


@dataclass(eq=False)
class _Entry:
    url: str
    target: Target
    #: connections that want this URL's outcome, the offering one first
    conns: list[int]
    task: asyncio.Task[None] | None = None
    outcome: Outcome | None = None
    done_at: float = 0.0


def _failed(url: str, reason: str, detail: str = "") -> Outcome:
    return [("download.failed", {"url": url, "reason": reason, "detail": detail})]


#: failures that say something about the URL, not about this moment's network: kept for
#: `repeat_window` like a fetched file; others (dns, connect, timeout, slow...) are not
_LASTING_FAILURES = frozenset({"scheme", "url", "destination", "status", "redirects",
                               "redirect", "protocol"})


def _lasting(outcome: Outcome) -> bool:
    name, fields = outcome[0]
    return name != "download.failed" or fields.get("reason") in _LASTING_FAILURES


def _again(outcome: Outcome) -> Outcome:
    """The outcome as a later connection sees it: the file is no longer new."""
    return [("download.complete.again" if name == "download.complete.unique" else name, f)
            for name, f in outcome]


class Downloader:
    def __init__(self, cfg: Download, store: Store, bus: Bus) -> None:
        self.cfg, self.store, self.bus = cfg, store, bus
        self.policy = Policy(cfg.allow_networks, cfg.max_concurrent)
        self.memo: OrderedDict[str, _Entry] = OrderedDict()
        self.pending: deque[_Entry] = deque()
        #: offers made so far by the connections that made the latest ones
        self.offers_of: OrderedDict[int, int] = OrderedDict()
        self.running: set[_Entry] = set()
        self.closed = False
        self.fetched = 0
        self.refused_busy = 0
        self.refused_limit = 0

    # -- offers

    def offer(self, conn: int, url: str, source: str | None = None) -> None:
        """Schedule a fetch of `url` for connection `conn`; never blocks, never raises."""
        try:
            self._offer(conn, url, source)
        except Exception as exc:  # a bug here must not reach the network path
            log.exception("offer of %r failed", url[:256])
            self._emit(conn, _failed(url, "error", type(exc).__name__))

    def _offer(self, conn: int, url: str, source: str | None) -> None:
        if source is not None and source in self.cfg.upload_sources:
            self._emit(conn, _failed(url, "uploaded", f"a file uploaded over {source}"))
            return
        if self.closed:
            self._emit(conn, _failed(url, "shutdown"))
            return
        if not self._count(conn):
            self.refused_limit += 1
            self._emit(conn, _failed(url, "limit", "max_offers_per_connection"))
            return
        now = time.monotonic()
        entry = self.memo.get(url)
        if entry is not None and entry.outcome is not None \
                and now - entry.done_at >= self.cfg.repeat_window:
            del self.memo[url]
            entry = None
        if entry is not None:
            if entry.outcome is not None:
                self.memo.move_to_end(url)
                self._emit(conn, _again(entry.outcome))
            elif len(entry.conns) <= self.cfg.max_waiters:
                entry.conns.append(conn)
            else:
                self.refused_busy += 1
                self._emit(conn, _failed(url, "busy", "too many connections wait for it"))
            return
        try:
            target = parse(url, self.cfg.schemes)
        except FetchError as exc:
            self._emit(conn, _failed(url, exc.reason, exc.detail))
            return
        entry = _Entry(url, target, [conn])
        if len(self.running) < self.cfg.max_concurrent:
            self._start(entry)
        elif len(self.pending) < self.cfg.max_pending:
            self.pending.append(entry)
        else:
            self.refused_busy += 1
            self._emit(conn, _failed(url, "busy", f"{len(self.pending)} offers wait"))
            return
        self.memo[url] = entry
        self._trim()

    def _count(self, conn: int) -> bool:
        """One more offer of `conn`; False once it made `max_offers_per_connection`."""
        made = self.offers_of.pop(conn, 0)
        self.offers_of[conn] = made + 1
        if len(self.offers_of) > COUNTED_CONNECTIONS:
            self.offers_of.popitem(last=False)
        return made < self.cfg.max_offers_per_connection

    def _trim(self) -> None:
        """Forget the oldest finished URLs beyond `memo_entries`."""
        excess = len(self.memo) - self.cfg.memo_entries
        if excess <= 0:
            return
        for url in [u for u, e in self.memo.items() if e.outcome is not None][:excess]:
            del self.memo[url]

    # -- fetches

    def _start(self, entry: _Entry) -> None:
        self.running.add(entry)
        entry.task = asyncio.get_running_loop().create_task(self._run(entry))

    async def _run(self, entry: _Entry) -> None:
        body = Body(self.store, self.cfg.max_bytes)
        outcome: Outcome
        try:
            outcome = await self._guarded(entry, body)
        except asyncio.CancelledError:
            body.abort()
            self._finish(entry, _failed(entry.url, "shutdown"), remember=False)
            raise
        except FetchError as exc:
            body.abort()
            outcome = _failed(entry.url, exc.reason, exc.detail)
        except Exception as exc:
            body.abort()
            log.exception("fetching %r failed", entry.url[:256])
            outcome = _failed(entry.url, "error", f"{type(exc).__name__}: {exc}"[:256])
        self._finish(entry, outcome, remember=_lasting(outcome))

    async def _guarded(self, entry: _Entry, body: Body) -> Outcome:
        """The fetch, given up at `timeout` or when slower than `min_rate` over a window."""
        cfg = self.cfg
        fetch = FETCHERS[entry.target.scheme]
        task = asyncio.ensure_future(fetch(entry.target, cfg, self.policy, body))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.timeout
        seen = 0
        try:
            while True:
                window = min(cfg.slow_window, deadline - loop.time())
                done, _ = await asyncio.wait({task}, timeout=max(window, 0))
                if task in done:
                    task.result()
                    break
                if loop.time() >= deadline:
                    raise FetchError("timeout", f"{cfg.timeout:g} s")
                if body.received - seen < cfg.min_rate * cfg.slow_window:
                    raise FetchError("slow", f"{body.received - seen} bytes in "
                                             f"{cfg.slow_window:g} s")
                seen = body.received
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        stored = body.finish()
        self.fetched += 1
        outcome = stored_incidents(entry.url, stored, body.cut is None)
        if body.cut is not None:
            outcome.append(("store.refused", {"url": entry.url, "reason": body.cut,
                                              "size": stored.size}))
        return outcome

    def _finish(self, entry: _Entry, outcome: Outcome, remember: bool) -> None:
        self.running.discard(entry)
        entry.outcome = outcome
        entry.done_at = time.monotonic()
        for i, conn in enumerate(entry.conns):
            self._emit(conn, outcome if i == 0 else _again(outcome))
        entry.conns = []
        forget = not remember or self.cfg.repeat_window == 0
        if forget and self.memo.get(entry.url) is entry:
            del self.memo[entry.url]
        if not self.closed:
            while self.pending and len(self.running) < self.cfg.max_concurrent:
                self._start(self.pending.popleft())

    def _emit(self, conn: int, outcome: Outcome) -> None:
        for name, fields in outcome:
            self.bus.emit(name, conn, dict(fields))

    async def close(self) -> None:
        """Give up fetches still running, each with a download.failed."""
        self.closed = True
        while self.pending:
            entry = self.pending.popleft()
            self._finish(entry, _failed(entry.url, "shutdown"), remember=False)
        tasks = [e.task for e in self.running if e.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        # a task cancelled before it ran, or one that did not end in time, has not said
        # why its offer came to nothing: say it now
        for entry in list(self.running):
            self._finish(entry, _failed(entry.url, "shutdown"), remember=False)
        self.policy.close()
