"""The sink process itself (started by sinks/process.py): reads pickled batches, writes them.

Kept apart from the parent's side so that the child imports only what writing
needs: the sinks, the protocols' records modules (sinks/records.py loads them
without their packages) and the standard library; no protocol machine, no
pydantic, no event loop. Each sink runs in its own thread fed by its own pipe.

Besides the final count when its pipe closes, each sink reports its running
count on stdout after every batch (a line per few hundred incidents), so that if
this process dies the parent knows how many of the incidents it sent were written.
Incidents a sink skipped (`skipped`: their connection was never announced to it)
count as failed, not written. A frame ("replay", rows) re-announces the connections
still open to a restarted process: written, but not counted (they are no incidents).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import struct
import sys
import threading
from types import SimpleNamespace
from typing import Any

log = logging.getLogger("muscipula.sinks")
LEN = struct.Struct("<I")


def plain(value: Any) -> Any:
    """A config model as nested SimpleNamespaces (what the parent sends; see SinkHost.sink)."""
    if isinstance(value, dict) and value.get("__config__") is True:
        return SimpleNamespace(**{k: plain(v) for k, v in value.items() if k != "__config__"})
    return value


def make(kind: str, args: tuple[Any, ...]) -> Any:
    args = tuple(plain(a) for a in args)
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

    def write_rows(self, items: list[Any]) -> None:
        self.files.write(items)

    def close_sync(self) -> None:
        self.files.close()


class _Out:
    """stdout lines from several threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def line(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj) + "\n"
        with self.lock:
            sys.stdout.write(data)
            sys.stdout.flush()


def _read_exact(f: Any, n: int) -> bytes | None:
    data = f.read(n)
    if len(data) < n:
        return None
    return data


def serve(name: str, kind: str, args: tuple[Any, ...], fd: int, out: _Out) -> None:
    written = failed = 0
    sink: Any = None
    with os.fdopen(fd, "rb") as f:
        try:
            sink = make(kind, args)
            sink.open_sync()
        except Exception:
            log.exception("sink %s cannot open", name)
            sink = None
        write = None
        if sink is not None:
            write = getattr(sink, "write_rows", None)
            if write is None:
                from muscipula.incidents import Incident

                def write(rows: list[Any], _w: Any = sink.write_sync) -> None:
                    _w([Incident(*row) for row in rows])
        while True:
            head = _read_exact(f, LEN.size)
            if head is None:
                break
            body = _read_exact(f, LEN.unpack(head)[0])
            if body is None:
                break
            try:
                batch = pickle.loads(body)
            except Exception:
                log.exception("sink %s: a batch could not be read", name)
                continue
            if type(batch) is tuple:  # ("replay", rows): not incidents of the bus
                if write is not None:
                    try:
                        write(batch[1])
                    except Exception:
                        log.exception("sink %s: open connections not announced", name)
                continue
            if write is None:
                failed += len(batch)
            else:
                skipped = getattr(sink, "skipped", 0)
                try:
                    write(batch)
                    lost = getattr(sink, "skipped", 0) - skipped
                    written += len(batch) - lost
                    failed += lost
                except Exception:
                    failed += len(batch)
                    log.exception("sink %s failed on a batch of %d incidents", name, len(batch))
            del batch, body
            held = getattr(sink, "held", 0)
            out.line({"name": name, "written": written - held, "held": held,
                      "failed": failed, "final": False})
    if sink is not None:
        try:
            sink.close_sync()
        except Exception:
            log.exception("sink %s failed to close", name)
        if isinstance(sink, _Transcripts):  # it counts per transcript, failures included
            written, failed = sink.files.written, failed + sink.files.dropped
        held = getattr(sink, "held", 0)  # lines of connections never closed: not on disk
        written, failed = written - held, failed + held
    out.line({"name": name, "written": written, "failed": failed, "final": True})


def _ignore_signals() -> None:
    """The child stops when its pipes close, after the parent flushed: not on ^C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main() -> int:
    _ignore_signals()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    user, group, spec, nice = pickle.loads(sys.stdin.buffer.read())
    if nice:  # before the sink threads start: they inherit it; never below the parent's
        here = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, max(nice, here))
    from muscipula.net.listeners import drop_privileges
    from muscipula.sinks.records import load_all

    load_all()  # the protocols' tables, rows and JSON folders
    try:
        drop_privileges(user, group)
    except Exception as exc:
        log.error("sinks: %s", exc)
        return 1
    out = _Out()
    out.line({"name": "", "ready": True})  # the sinks open in their threads
    threads = [threading.Thread(target=serve, args=(name, kind, args, fd, out),
                                name=f"sink-{name}") for name, kind, args, fd in spec]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
