"""Shared fixtures: a real `muscipula run` subprocess on 127.0.0.1 high ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml


def free_port_block(size: int = 100) -> int:
    """An offset such that base+offset .. for typical service ports is likely free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if 20000 <= port <= 60000:
            return port
    return 30000


@dataclass
class Honeypot:
    """A running server; ports are the configured ones plus `offset`."""

    proc: subprocess.Popen[bytes]
    state: Path
    offset: int
    config: dict[str, Any]
    log_path: Path
    stopped: bool = False
    exit_code: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def port(self, configured: int) -> int:
        return configured + self.offset

    def stop(self, timeout: float = 20.0) -> int:
        if not self.stopped:
            self.proc.send_signal(signal.SIGTERM)
            self.exit_code = self.proc.wait(timeout)
            self.stopped = True
        assert self.exit_code is not None
        return self.exit_code

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.state / "logsql.sqlite")

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.db() as db:
            return db.execute(sql, params).fetchall()

    def json_lines(self) -> list[dict[str, Any]]:
        path = self.state / "log" / "connections.json"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def counters(self) -> dict[str, Any]:
        return json.loads((self.state / "counters.json").read_text())


def pick_offset(cfg_path: Path, tries: int = 200) -> int:
    """An offset at which every port the config enables can be bound on 127.0.0.1 now.

    Random offsets below the kernel's ephemeral range (32768+), checked by binding each
    endpoint: a busy machine's outgoing connections hold ephemeral ports that even
    SO_REUSEADDR cannot take.
    """
    import random

    from muscipula import config as configmod
    from muscipula.engine import endpoints
    from muscipula.net.listeners import BindError, bind

    cfg = configmod.load(cfg_path)
    top = max((ep.port for ep in endpoints(cfg, 0, ["127.0.0.1"])), default=0)
    for _ in range(tries):
        offset = random.randrange(10000, max(10001, 32000 - top))
        socks = []
        try:
            for ep in endpoints(cfg, offset, ["127.0.0.1"]):
                socks.append(bind(ep))
        except BindError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return offset
    return free_port_block()


def start_honeypot(state: Path, config: dict[str, Any], offset: int | None = None,
                   extra_args: list[str] | None = None, wait: float = 30.0) -> Honeypot:
    state.mkdir(parents=True, exist_ok=True)
    cfg_path = state.parent / f"{state.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    offset = pick_offset(cfg_path) if offset is None else offset
    log_path = state.parent / f"{state.name}.log"
    ready = state / "ready"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "muscipula", "run", "--config", str(cfg_path),
           "--state-dir", str(state), "--listen", "127.0.0.1", "--port-offset", str(offset),
           *(extra_args or [])]
    logf = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + wait
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"muscipula exited {proc.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"muscipula not ready in {wait}s:\n{log_path.read_text()}")
        time.sleep(0.02)
    return Honeypot(proc, state, offset, config, log_path)


def only(services: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A config enabling just `services` (everything else off)."""
    from muscipula import services as registry

    svc = {name: {"enabled": False} for name in registry.names()}
    for name, body in services.items():
        svc[name] = {"enabled": True, **(body or {})}
    return {"services": svc, **top}


@pytest.fixture
def honeypot_factory(tmp_path: Path) -> Iterator[Any]:
    """Call with a config dict (see `only`); every server is stopped at teardown."""
    started: list[Honeypot] = []

    def make(config: dict[str, Any], name: str = "state", root: Path | None = None,
             **kw: Any) -> Honeypot:
        hp = start_honeypot((root or tmp_path) / name, config, **kw)
        started.append(hp)
        return hp

    yield make
    for hp in started:
        if not hp.stopped:
            try:
                hp.stop()
            except subprocess.TimeoutExpired:
                hp.proc.kill()
