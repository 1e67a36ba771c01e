"""Running emulations in worker processes, each with a hard deadline.

One process per connection's emulation, forked from a forkserver that has imported
the emulator already (so a job starts in milliseconds, and no state of one attacker's
emulation leaks into the next). The forkserver starts with the first job, after the
server dropped its privileges, so workers never run as root. A thread per running
job waits for its answer; past the deadline the process is killed. Concurrency is
`workers` threads; the caller bounds what waits.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

WORKER = "muscipula.capture.shellcode.worker"
#: seconds a worker may take to start before its first emulation counts
STARTUP = 15.0


def context() -> Any:
    """forkserver where the platform has it (never a fork of the server), else spawn."""
    try:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([WORKER])
        return ctx
    except ValueError:
        return multiprocessing.get_context("spawn")


def _child(out: Connection, windows: list[tuple[bytes, list[int]]], timeout: float,
           max_api_calls: int) -> None:
    """In the worker: emulate each window and send the results back."""
    from muscipula.capture.shellcode.worker import emulate

    results = [emulate(data, entries, timeout, max_api_calls) for data, entries in windows]
    out.send(results)
    out.close()


def deadline(windows: list[tuple[bytes, list[int]]], timeout: float) -> float:
    """The hard deadline of a job: every entry's timeout, slack, and the start-up."""
    entries = sum(len(e) for _d, e in windows)
    return STARTUP + entries * (timeout * 1.5 + 1.0)


def run_job(ctx: Any, windows: list[tuple[bytes, list[int]]], timeout: float,
            max_api_calls: int, hard: float) -> list[dict[str, Any]] | str:
    """Blocking (run in a thread): the results, or why there are none."""
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, windows, timeout, max_api_calls),
                       daemon=True)
    try:
        proc.start()
    except Exception as exc:  # no process could be made (limits, shutdown)
        receive.close()
        send.close()
        return f"worker not started: {exc}"
    send.close()
    try:
        if receive.poll(hard):
            results: list[dict[str, Any]] = receive.recv()
            return results
        return "deadline"
    except (EOFError, OSError):
        return f"worker died (exit code {proc.exitcode})"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        receive.close()
