"""The TFTP client against a scripted loopback server: the transfer port is learnt from
the first DATA, and datagrams from any other address or port are not taken as data."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from pathlib import Path

from muscipula.capture.download import tftp
from muscipula.capture.download.body import Body
from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.policy import Policy
from muscipula.capture.download.target import parse
from muscipula.config import Download
from muscipula.store import Store

FILE = bytes(range(256)) * 3  # 768 bytes: two blocks


def serve(listener: socket.socket) -> None:
    """Answer one RRQ from a new port, after a spoofed DATA from 127.0.0.2 and a stray DATA
    from a third port; lose the first ACK's answer once (the client must ACK again)."""
    _, client = listener.recvfrom(1024)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoof, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stray, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tid:
        spoof.bind(("127.0.0.2", 0))
        stray.bind(("127.0.0.1", 0))
        tid.bind(("127.0.0.1", 0))
        tid.settimeout(5)
        spoof.sendto(struct.pack("!HH", 3, 1) + b"EVIL", client)
        tid.sendto(struct.pack("!HH", 3, 1) + FILE[:512], client)
        assert struct.unpack("!HH", tid.recvfrom(100)[0]) == (4, 1)
        stray.sendto(struct.pack("!HH", 3, 2) + b"EVIL", client)
        tid.sendto(struct.pack("!HH", 3, 1) + FILE[:512], client)  # a duplicate
        assert struct.unpack("!HH", tid.recvfrom(100)[0]) == (4, 1)
        tid.sendto(struct.pack("!HH", 3, 2) + FILE[512:], client)
        assert struct.unpack("!HH", tid.recvfrom(100)[0]) == (4, 2)


def fetch(tmp_path: Path, url: str, cfg: Download) -> tuple[Body, Exception | None]:
    body = Body(Store(tmp_path / "b", 1 << 20, 1 << 24), cfg.max_bytes)
    error = None
    try:
        asyncio.run(tftp.fetch(parse(url, ["tftp"]), cfg, Policy(["127.0.0.0/8"]), body))
    except FetchError as exc:
        error = exc
    return body, error


def test_tftp_takes_data_only_from_the_server(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        thread = threading.Thread(target=serve, args=(listener,))
        thread.start()
        cfg = Download(allow_networks=["127.0.0.0/8"])
        body, error = fetch(tmp_path, f"tftp://127.0.0.1:{listener.getsockname()[1]}/f", cfg)
        thread.join(5)
    assert error is None
    stored = body.finish()
    assert stored.path.read_bytes() == FILE


def test_tftp_gives_up_after_bounded_retries(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        cfg = Download(allow_networks=["127.0.0.0/8"], tftp_timeout=0.1, tftp_retries=2)
        _body, error = fetch(tmp_path, f"tftp://127.0.0.1:{silent.getsockname()[1]}/f", cfg)
        silent.settimeout(0.5)
        requests = 0
        while True:
            try:
                silent.recvfrom(1024)
            except TimeoutError:
                break
            requests += 1
    assert isinstance(error, FetchError) and error.reason == "timeout"
    assert requests == 3  # the RRQ and two retransmits


def test_store_quota_cut_is_named(tmp_path: Path) -> None:
    body = Body(Store(tmp_path / "b", 100, 1 << 20), 1000)
    assert body.write(b"a" * 60) and not body.write(b"b" * 60)
    assert body.cut == "store quota" and body.finish().size == 100
