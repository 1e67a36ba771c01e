"""Bind the ports first, then become run_as.user: the server keeps serving as that user."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from tests.conftest import only


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_drops_to_run_as_user_after_binding(honeypot_factory):
    nobody = pwd.getpwnam("nobody")
    cfg = only({"blackhole": {"tcp_ports": [23], "udp_ports": []}},
               run_as={"user": "nobody"})
    if os.geteuid() != 0:
        with pytest.raises(RuntimeError, match="changing user needs root"):
            honeypot_factory(cfg)
        return
    # pytest's tmp_path is private to root; nobody needs a path it can walk.
    root = Path(tempfile.mkdtemp(prefix="muscipula-privs-"))
    os.chmod(root, 0o755)
    try:
        _check_dropped(honeypot_factory(cfg, root=root), nobody.pw_uid)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check_dropped(hp, uid: int) -> None:
    assert _uid_of(hp.proc.pid) == uid
    with socket.create_connection(("127.0.0.1", hp.port(23)), timeout=5) as s:
        s.sendall(b"x")
    assert hp.stop() == 0
    assert (hp.state / "logsql.sqlite").stat().st_uid == uid
    assert hp.rows("SELECT count(*) FROM connections") == [(1,)]
