"""Running emulations in worker processes, each entry point with a hard deadline.

One process per connection's emulation, forked from a forkserver that has imported
the emulator already (so a job starts in milliseconds, and no state of one attacker's
emulation leaks into the next). The forkserver starts with the first job, after the
server dropped its privileges, so workers never run as root. A thread per running
job waits for its answers; the worker says when it starts each entry point and sends
each window's result as soon as it has it, so the deadline is per entry (the configured
timeout and a little slack) and what was learnt before a kill is kept. The worker's
address space is capped (RLIMIT_AS): an emulated loop writing megabytes into emulated
files fails there instead of growing without bound. Concurrency is `workers` threads;
the caller bounds what waits.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

WORKER = "muscipula.capture.shellcode.worker"
#: seconds a worker may take to say it started (the forkserver's first start included)
STARTUP = 15.0
#: seconds past the emulation's own timeout one entry point may take (building the
#: emulator, loading the code, the report) before its worker is killed
SLACK = 2.0
#: how often a waiting job looks whether the server is shutting down
POLL = 0.25
#: what a worker may say: an entry point starts, a window's result, the end
START, WINDOW, DONE = "start", "window", "done"


@dataclass(frozen=True)
class Limits:
    """What one emulation may take and keep, handed to the worker."""

    #: address space of the worker process (RLIMIT_AS), bytes
    memory: int = 1024 * 1024 * 1024
    #: API calls kept in a profile, and characters of one argument
    profile_calls: int = 1000
    profile_arg: int = 256
    #: offers, shells and commands found per window
    findings: int = 16
    #: who the emulated machine says it is (hostname, domain, user); empty: defaults
    identity: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """A job's results, one per window emulated in full, and why it stopped short if it
    did ("" when it did not; "deadline" when the worker was killed for time)."""

    results: list[dict[str, Any]]
    error: str = ""

    @property
    def killed(self) -> bool:
        return self.error == "deadline"


def context() -> Any:
    """forkserver where the platform has it (never a fork of the server), else spawn."""
    try:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([WORKER])
        return ctx
    except ValueError:
        return multiprocessing.get_context("spawn")


def _child(out: Connection, windows: list[tuple[bytes, list[int]]], timeout: float,
           max_api_calls: int, limits: Limits) -> None:
    """In the worker: emulate each window, saying when each entry starts, and send each
    window's result as soon as it is known."""
    from muscipula.capture.shellcode import worker

    worker.limit_memory(limits.memory)

    def started(_entry: int) -> None:
        out.send((START, None))

    for data, entries in windows:
        result = worker.emulate(data, entries, timeout, max_api_calls, limits, started)
        out.send((WINDOW, result))
    out.send((DONE, None))
    out.close()


def deadline(windows: list[tuple[bytes, list[int]]], timeout: float) -> float:
    """The longest a job may take: start-up, and every entry's timeout with its slack."""
    entries = sum(len(e) for _d, e in windows)
    return STARTUP + entries * (timeout + SLACK)


def entry_deadline(timeout: float) -> float:
    """Seconds one entry point may run before its worker is killed."""
    return timeout + SLACK


def run(ctx: Any, windows: list[tuple[bytes, list[int]]], timeout: float,
        max_api_calls: int, hard: float, limits: Limits | None = None,
        stop: threading.Event | None = None) -> Outcome:
    """Blocking (run in a thread): each entry point gets `hard` seconds from its start,
    the worker STARTUP seconds to start; past either, or once `stop` is set, it is killed."""
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child,
                       args=(send, windows, timeout, max_api_calls, limits or Limits()),
                       daemon=True)
    try:
        proc.start()
    except Exception as exc:  # no process could be made (limits, shutdown)
        receive.close()
        send.close()
        return Outcome([], f"worker not started: {exc}")
    send.close()
    results: list[dict[str, Any]] = []
    until = time.monotonic() + STARTUP
    try:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return Outcome(results, "deadline")
            if stop is not None and stop.is_set():
                return Outcome(results, "shutdown")
            if not receive.poll(min(left, POLL) if stop is not None else left):
                continue
            kind, value = receive.recv()
            if kind == START:
                until = time.monotonic() + hard
            elif kind == WINDOW:
                results.append(value)
            else:
                return Outcome(results)
    except (EOFError, OSError):
        proc.join(1)
        return Outcome(results, f"worker died (exit code {proc.exitcode})")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        receive.close()

