"""Benchmark plumbing: servers as subprocesses, /proc measurements, load generators, tables.

Everything here talks to 127.0.0.1 only, and every loop is bounded by a count
and a duration. Figures are collected per round into a `Board`, which prints
medians with [min-max] and ratios to the bare server measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BARE = ROOT / "bench" / "bare"
HOST = "127.0.0.1"


# ------------------------------------------------------------------ /proc


def rss_kib(pid: int) -> int:
    """Resident set size of one process, in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (peers that fork a process per service)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def tree_rss_kib(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            total += rss_kib(p)
    return total


def fd_count(pid: int) -> int:
    """Open descriptors of `pid`; st_size of /proc/PID/fd is the count on Linux >= 6.2."""
    size = os.stat(f"/proc/{pid}/fd").st_size
    return size if size > 0 else len(os.listdir(f"/proc/{pid}/fd"))


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- ports


def _free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_offset(ports: list[tuple[int, str]], low: int = 20000, high: int = 40000) -> int:
    """An offset at which every (port, 'tcp'|'udp') is free on 127.0.0.1.

    Kept below the ephemeral range (32768 up) where it can be: a port free now may be taken
    by some client's outgoing connection before the server binds it.
    """
    top = max(p for p, _ in ports)
    if low < EPHEMERAL_LOW - top:
        high = min(high, EPHEMERAL_LOW - top)
    for _ in range(200):
        offset = random.randrange(low, high)
        if all(_free(p + offset, socket.SOCK_DGRAM if t == "udp" else socket.SOCK_STREAM)
               for p, t in ports):
            return offset
    raise RuntimeError("no free port block")


EPHEMERAL_LOW = 32768


def free_port(kind: str = "tcp") -> int:
    return free_offset([(0, kind)], 20000, 60000)


def wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not open in {timeout}s")


def wait_udp(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until something holds UDP `port` on 127.0.0.1 (a bind there fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        if not _free(port, socket.SOCK_DGRAM):
            return
        time.sleep(0.05)
    raise RuntimeError(f"udp port {port} not bound in {timeout}s")


# -------------------------------------------------------------- servers


@dataclass
class Server:
    """A server under test: a subprocess, where to reach it, how it ended."""

    name: str
    proc: subprocess.Popen[bytes]
    offset: int = 0
    workdir: Path | None = None
    #: the process that serves (a peer may fork one per service)
    serving_pid: int = 0
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.serving_pid or self.proc.pid

    def port(self, configured: int) -> int:
        return configured + self.offset

    def rss_kib(self) -> int:
        return tree_rss_kib(self.proc.pid)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        pids = descendants(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in pids[1:]:  # children a peer left behind, by id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_bare(kind: str, port: int, **opts: Any) -> Server:
    """One of bench/bare/*.py on 127.0.0.1:`port`; returns once it prints 'ready'."""
    cmd = [sys.executable, str(BARE / f"{kind}.py"), "--host", HOST, "--port", str(port)]
    for key, value in opts.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if b"ready" not in line:
        proc.kill()
        raise RuntimeError(f"bare {kind} did not start")
    return Server(f"bare {kind}", proc)


def muscipula_services() -> list[str]:
    """The registry as the server will see it (services land while a run goes on)."""
    import importlib

    from muscipula import services

    return importlib.reload(services).names()


def start_muscipula(workdir: Path, services: dict[str, dict[str, Any]],
                    ports: list[tuple[int, str]], limits: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None, timeout: float = 60.0) -> Server:
    """`muscipula run` on 127.0.0.1 with only `services` enabled, at a free port offset."""
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "services": {name: {"enabled": False} for name in muscipula_services()},
        **(extra or {}),
    }
    for name, body in services.items():
        config["services"][name] = {"enabled": True, **body}
    if limits:
        config["limits"] = limits
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    for attempt in range(3):
        offset = free_offset(ports)
        ready = state / "ready"
        ready.unlink(missing_ok=True)
        log = open(workdir / "muscipula.log", "wb")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "muscipula", "run", "--config", str(cfg), "--state-dir",
             str(state), "--listen", HOST, "--port-offset", str(offset)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                said = (workdir / "muscipula.log").read_text()[-2000:]
                if "address already in use" in said and attempt < 2:
                    break  # taken between the check and the bind: another offset
                raise RuntimeError("muscipula did not start:\n" + said)
            time.sleep(0.02)
        else:
            return Server("muscipula", proc, offset, workdir)
    raise AssertionError("unreachable")


def contenders(peers: Any) -> list[str]:
    """The servers an area measures: bare and muscipula, and the peer honeypots if wanted."""
    return ["bare", "muscipula", *(["opencanary", "qeeqbox"] if peers else [])]


def start_other(who: str, kind: str, peers: Any, transport: str = "tcp",
                **opts: Any) -> tuple[Server | None, int]:
    """`kind` served on a free port by the bare server (`opts` are its options) or a peer.

    None for a peer that did not start (it has said why).
    """
    if who == "qeeqbox" and transport == "udp":
        # it checks (and frees) the TCP port of that number even for a UDP service, and gives
        # up if a client's TIME_WAIT holds it: a port free both ways, below the ephemeral range
        port = free_offset([(0, "udp"), (0, "tcp")], 20000, 32000)
    else:
        port = free_port(transport)
    if who == "bare":
        return start_bare(kind, port, **opts), port
    if who == "opencanary":
        return peers.opencanary({kind: port}), port
    return peers.qeeqbox(kind, port, transport), port


def muscipula_counters(server: Server) -> dict[str, Any]:
    assert server.workdir is not None
    return json.loads((server.workdir / "state" / "counters.json").read_text())


def muscipula_rows(server: Server, sql: str) -> list[tuple[Any, ...]]:
    assert server.workdir is not None
    with contextlib.closing(sqlite3.connect(server.workdir / "state" / "logsql.sqlite")) as db:
        return db.execute(sql).fetchall()


def unrecorded(board: Board, area: str, who: str, server: Server,
               checks: list[tuple[str, str, int]]) -> None:
    """Stop `server` and count what it answered but logsql lacks: for each (what, a COUNT
    query, how many were answered), the rows missing; one "unrecorded" figure for them all."""
    server.stop()
    missing, said = 0, []
    for what, sql, answered in checks:
        rows = muscipula_rows(server, sql)[0][0]
        missing += max(answered - rows, 0)
        said.append(f"{rows:,} {what} rows for {answered:,}")
    board.add(area, "unrecorded", "answered but not in logsql", "count", who, missing,
              higher_is_better=False)
    print(f"  {who}: {', '.join(said)}", flush=True)


def lost(server: Server) -> int:
    """Incidents emitted but not written by some sink (0 is the only good answer)."""
    c = muscipula_counters(server)
    return max((c["emitted"] - s["written"] for s in c["sinks"].values()), default=0)


# --------------------------------------------------------- load generators


@dataclass
class Load:
    count: int
    errors: int
    elapsed: float

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0


def sequential(fn: Callable[[], object], duration: float, limit: int = 1_000_000) -> Load:
    """Call `fn` back to back for `duration` seconds (or `limit` calls); errors are counted."""
    count = errors = 0
    t0 = time.perf_counter()
    end = t0 + duration
    while count + errors < limit and time.perf_counter() < end:
        try:
            fn()
            count += 1
        except Exception:
            errors += 1
    return Load(count, errors, time.perf_counter() - t0)


def threaded(fn: Callable[[], object], threads: int, duration: float,
             limit: int = 1_000_000) -> Load:
    """`threads` threads calling `fn` back to back (a blocking client library's concurrency)."""
    lock = threading.Lock()
    totals = [0, 0]
    end = time.perf_counter() + duration

    def worker() -> None:
        ok = bad = 0
        while ok + bad < limit // threads + 1 and time.perf_counter() < end:
            try:
                fn()
                ok += 1
            except Exception:
                bad += 1
        with lock:
            totals[0] += ok
            totals[1] += bad

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(duration + 30)
    return Load(totals[0], totals[1], time.perf_counter() - t0)


def run_async(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


async def concurrent(session: Callable[[], Awaitable[object]], concurrency: int,
                     duration: float, limit: int = 1_000_000, timeout: float = 10.0) -> Load:
    """`concurrency` clients, each running `session` back to back until the deadline."""
    totals = [0, 0]
    loop = asyncio.get_running_loop()
    end = loop.time() + duration

    async def client() -> None:
        while totals[0] + totals[1] < limit and loop.time() < end:
            try:
                await asyncio.wait_for(session(), timeout)
                totals[0] += 1
            except Exception:
                totals[1] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return Load(totals[0], totals[1], time.perf_counter() - t0)


def one_and_many(board: Board, area: str, who: str, what: str, once: Callable[[], object],
                 many: Callable[[], Load], duration: float, many_label: str,
                 failure: str) -> tuple[Load, Load]:
    """`once` back to back, then `many()` (the same with 50 clients), as the area's rows
    "seq" and "c50"; `failure` names what an error was in the board's note."""
    once()  # one to check it answers at all
    seq = sequential(once, duration)
    con = many()
    board.add(area, "seq", f"{what}/s, sequential", "1/s", who, seq.rate)
    board.add(area, "c50", f"{what}/s, {many_label}", "1/s", who, con.rate)
    print(f"  {who}: {seq.rate:,.0f} {what}/s sequential ({seq.errors} errors), "
          f"{con.rate:,.0f}/s with {many_label} ({con.errors} errors)", flush=True)
    if seq.errors or con.errors:
        board.note(area, f"{who}: {seq.errors + con.errors} {failure}")
    return seq, con


@dataclass
class Flood:
    held: list[socket.socket]
    elapsed: float
    accepted: int
    errors: int

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed if self.elapsed > 0 else 0.0

    def close(self) -> None:
        for s in self.held:
            s.close()
        self.held.clear()


def listen_queue(port: int, column: int = 1) -> int:
    """Connections waiting in the accept queue of the listener on `port` (-1 if unknown).

    With `column=2`, the listener's backlog instead.
    """
    try:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return _proc_listen_queue(port) if column == 1 else -1
    queues = [int(line.split()[column]) for line in out.splitlines()
              if line.startswith("LISTEN")]
    return sum(queues) if queues else -1


def _proc_listen_queue(port: int) -> int:
    total, found = 0, False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and parts[3] == "0A" and parts[1].endswith(f":{port:04X}"):
                    total += int(parts[4].split(":")[1], 16)
                    found = True
    return total if found else -1


def hold_flood(port: int, n: int, pid: int, window: int = 256, slack: int = 512,
               timeout: float = 60.0) -> Flood:
    """Open `n` connections and keep them, without blocking on any one of them.

    Connects are fired non-blocking, at most `window` in progress; the server's
    descriptor count (/proc) tells roughly how many it has accepted, and no more
    than `slack` may wait in its listen queue, so the figure is the server's
    accept rate, never the backlog's SYN-retry delays. It ends when every
    connect has completed and the listen queue is empty: the server has
    accepted them all.
    """
    raise_nofile()
    if n + 64 > nofile():
        raise RuntimeError(f"need {n} descriptors, RLIMIT_NOFILE is {nofile()}")
    backlog = listen_queue(port, column=2)
    if backlog > 0:  # Twisted listens with a backlog of 50: never overflow it
        slack = max(4, min(slack, backlog // 2))
    base = fd_count(pid)
    sel = selectors.DefaultSelector()
    held: list[socket.socket] = []
    started = pending = errors = 0
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while len(held) + errors < n and time.perf_counter() < deadline:
        accepted = fd_count(pid) - base
        while started < n and pending < window and started - errors - accepted < slack:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            rc = s.connect_ex((HOST, port))
            if rc not in (0, errno.EINPROGRESS):
                errors += 1
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE)
            pending += 1
        if not pending:
            time.sleep(0.0005)
            continue
        for key, _ in sel.select(0.05):
            s = key.fileobj  # type: ignore[assignment]
            sel.unregister(s)
            pending -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                errors += 1
                s.close()
            else:
                held.append(s)
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
        errors += 1
    sel.close()
    while listen_queue(port) > 0 and time.perf_counter() < deadline:
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    return Flood(held, elapsed, len(held), errors)


def exchange_all(socks: list[socket.socket], request: bytes, marker: bytes,
                 timeout: float = 30.0) -> int:
    """Send `request` on every socket; count those whose answer holds `marker`."""
    sel = selectors.DefaultSelector()
    got: dict[int, bytes] = {}
    for s in socks:
        with contextlib.suppress(OSError):
            s.send(request)
            sel.register(s, selectors.EVENT_READ)
    done = 0
    deadline = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(0.1):
            s = key.fileobj  # type: ignore[assignment]
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            buf = got.get(s.fileno(), b"") + data
            got[s.fileno()] = buf
            if marker in buf or not data:
                sel.unregister(s)
                done += marker in buf
    sel.close()
    return done


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk(url: str, threads: int = 2, conns: int = 50, duration: float = 10.0) -> dict[str, float]:
    """Run wrk; requests/s, p99 latency in ms, and every error it reports."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency",
         "--timeout", "5s", url], capture_output=True, text=True, timeout=duration + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\b", out, re.M)
    requests = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if rps is None:
        raise RuntimeError(f"wrk gave no figure:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)] if p99 else float("nan"),
        "requests": float(requests.group(1)) if requests else 0.0,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "errors": float(sum(int(x) for x in sock.groups())) if sock else 0.0,
    }


# ----------------------------------------------------------------- tables


@dataclass
class Metric:
    title: str
    unit: str
    higher_is_better: bool = True
    #: server name -> one value per round
    values: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fmt(value: float) -> str:
    if value != value:  # nan
        return "-"
    if float(value).is_integer() and abs(value) < 1e12:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Board:
    """Figures by area and metric; printed as one table per area, ratios against bare."""

    SERVERS = ("bare", "muscipula", "opencanary", "qeeqbox")

    def __init__(self) -> None:
        self.areas: dict[str, dict[str, Metric]] = {}
        self.notes: dict[str, list[str]] = {}

    def add(self, area: str, key: str, title: str, unit: str, server: str, value: float,
            higher_is_better: bool = True) -> None:
        metrics = self.areas.setdefault(area, {})
        m = metrics.setdefault(key, Metric(title, unit, higher_is_better))
        m.values.setdefault(server, []).append(value)

    def note(self, area: str, text: str) -> None:
        notes = self.notes.setdefault(area, [])
        if text not in notes:
            notes.append(text)
        print(f"  note: {text}", flush=True)

    @staticmethod
    def cell(values: list[float] | None) -> str:
        if not values:
            return "-"
        med = statistics.median(values)
        if len(values) == 1:
            return fmt(med)
        return f"{fmt(med)} [{fmt(min(values))}-{fmt(max(values))}]"

    def table(self, area: str) -> str:
        metrics = self.areas.get(area, {})
        servers = [s for s in self.SERVERS if any(s in m.values for m in metrics.values())]
        header = ["metric", *servers, "muscipula/bare", "muscipula/best peer"]
        rows = [header]
        for m in metrics.values():
            row = [f"{m.title} ({m.unit})"]
            row += [self.cell(m.values.get(s)) for s in servers]
            mus = m.values.get("muscipula")
            bare = m.values.get("bare")
            ratio = best = "-"
            if mus and bare and statistics.median(bare):
                ratio = f"{statistics.median(mus) / statistics.median(bare):.2f}"
            peers = [statistics.median(m.values[p]) for p in ("opencanary", "qeeqbox")
                     if m.values.get(p)]
            if mus and peers:
                top = max(peers) if m.higher_is_better else min(peers)
                if top:
                    best = f"{statistics.median(mus) / top:.2f}"
            rows += [[*row, ratio, best]]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [f"== {area} =="]
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                                   for j, (c, w) in enumerate(zip(r, widths, strict=True))))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lower = [m.title for m in metrics.values() if not m.higher_is_better]
        if lower:
            lines.append(f"lower is better: {', '.join(lower)}")
        for text in self.notes.get(area, []):
            lines.append(f"note: {text}")
        return "\n".join(lines)

    def render(self) -> str:
        areas = [*self.areas, *(a for a in self.notes if a not in self.areas)]
        return "\n\n".join(self.table(a) for a in areas)


# ----------------------------------------------------------------- areas


def measure_rounds(board: Board, area: str, rounds: int, who_all: list[str],
                   start: Callable[[str, Path], tuple[Server | None, int]],
                   measure: Callable[[str, Server, int, int], None]) -> None:
    """`rounds` rounds over `who_all`, in reverse order every other round.

    Each server is started in its own temp dir by `start(who, dir)`, measured by
    `measure(who, server, port, round)` and stopped; a failure becomes a note, and
    muscipula's lost incidents a figure.
    """
    has = area in muscipula_services()
    for r in range(rounds):
        print(f"{area} round {r + 1}/{rounds}", flush=True)
        for who in who_all if r % 2 == 0 else reversed(who_all):
            if who == "muscipula" and not has:
                continue
            with tempfile.TemporaryDirectory(prefix=f"bench-{area}-") as tmp:
                server, port = start(who, Path(tmp))
                if server is None:
                    continue
                try:
                    with server:
                        measure(who, server, port, r)
                except Exception as exc:
                    board.note(area, f"{who}: {type(exc).__name__}: {exc}")
                    continue
                if who == "muscipula":
                    board.add(area, "lost", "incidents lost", "count", who, lost(server),
                              higher_is_better=False)
