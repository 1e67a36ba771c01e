"""TFTP end to end: tftp-hpa, atftp, tftpy and nmap against the running service.

Every download is compared byte for byte with the file in the configured root;
every upload must land in the store under its md5 with `downloads`/`offers`
rows, `tftp_requests`/`tftp_transfers` rows and JSON detail.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import tftpy

from tests.conftest import only

FIVE_MB = 5 * 1024 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "tftproot"
    r.mkdir()
    (r / "big.bin").write_bytes(os.urandom(FIVE_MB))
    (r / "hello.txt").write_bytes(b"hello\nworld\n")
    (r / "pxelinux.0").write_bytes(os.urandom(4000))
    for p in r.iterdir():
        p.chmod(0o644)
    return r


def start(factory: Any, root: Path, **cfg: Any) -> Any:
    body = {"udp_ports": [69], "root": str(root), "linger": 0.5, **cfg}
    return factory(only({"tftp": body}))


def run(cmd: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def assert_captured(hp: Any, data: bytes, name: str) -> None:
    """The upload is in the store by md5, with offer, download and transfer records."""
    digest = md5(data)
    assert (hp.state / "binaries" / digest).read_bytes() == data
    url = f"tftp://127.0.0.1/{name}"
    assert (url,) in hp.rows("SELECT offer_url FROM offers")
    assert (url, digest) in hp.rows("SELECT download_url, download_md5_hash FROM downloads")
    rows = hp.rows("SELECT tftp_transfer_status, tftp_transfer_bytes FROM tftp_transfers "
                   "WHERE tftp_transfer_direction = 'write' AND tftp_transfer_url = ?", url)
    assert rows == [("complete", len(data))]
    entries = [line for line in hp.json_lines()
               if any(d["url"] == url for d in line.get("downloads", []))]
    assert len(entries) == 1
    (line,) = entries
    assert line["connection"]["protocol"] == "TftpSession"
    assert line["offers"] == [url]
    assert line["downloads"][0]["md5"] == digest
    assert line["tftp"]["requests"][0]["opcode"] == "WRQ"
    assert line["tftp"]["transfers"][0]["status"] == "complete"


def test_tftp_hpa_client_get_and_put(honeypot_factory, root, tmp_path):
    hp = start(honeypot_factory, root)
    port = str(hp.port(69))
    work = tmp_path / "work"
    work.mkdir()
    run(["tftp", "-v", "127.0.0.1", port, "-c", "get", "hello.txt", "hello.out"], work)
    assert (work / "hello.out").read_bytes() == b"hello\nworld\n"  # netascii both ways
    r = run(["tftp", "-v", "-m", "octet", "127.0.0.1", port, "-c", "get", "big.bin", "big.out"],
            work)
    assert (work / "big.out").read_bytes() == (root / "big.bin").read_bytes(), r.stdout
    r = run(["tftp", "-v", "127.0.0.1", port, "-c", "get", "nosuch.cfg", "x.out"], work)
    assert "File not found" in r.stdout + r.stderr
    upload = os.urandom(FIVE_MB)
    (work / "up.bin").write_bytes(upload)
    r = run(["tftp", "-v", "-m", "octet", "127.0.0.1", port, "-c", "put", "up.bin", "hpa.bin"],
            work)
    assert "Sent 5242880 bytes" in r.stdout, r.stdout + r.stderr
    time.sleep(1.0)
    assert hp.stop() == 0
    assert_captured(hp, upload, "hpa.bin")
    reqs = hp.rows("SELECT tftp_request_opcode, tftp_request_filename, tftp_request_mode, "
                   "tftp_request_error_code, tftp_request_error_text FROM tftp_requests "
                   "ORDER BY tftp_request")
    assert reqs == [("RRQ", "hello.txt", "netascii", None, None),
                    ("RRQ", "big.bin", "octet", None, None),
                    ("RRQ", "nosuch.cfg", "netascii", 1, "File not found"),
                    ("WRQ", "hpa.bin", "octet", None, None)]
    reads = hp.rows("SELECT tftp_transfer_filename, tftp_transfer_status, tftp_transfer_bytes,"
                    " tftp_transfer_blksize FROM tftp_transfers WHERE "
                    "tftp_transfer_direction = 'read' ORDER BY tftp_transfer")
    assert reads == [("hello.txt", "complete", 14, 512), ("big.bin", "complete", FIVE_MB, 512)]
    # each transfer ran on its own port: a child connection of its request's connection
    links = hp.rows("SELECT c.connection_type, p.local_port FROM connections c JOIN "
                    "connections p ON c.connection_parent = p.connection")
    assert len(links) == 4 and all(t == "listen" and lp == hp.port(69) for t, lp in links)


def test_atftp_options_blksize_tsize_windowsize(honeypot_factory, root, tmp_path):
    hp = start(honeypot_factory, root)
    port = str(hp.port(69))
    work = tmp_path / "work"
    work.mkdir()
    r = run(["atftp", "--trace", "--option", "blksize 1428", "--option", "tsize 0", "-g",
             "-r", "big.bin", "-l", "big.out", "127.0.0.1", port], work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "big.out").read_bytes() == (root / "big.bin").read_bytes()
    assert f"tsize: {FIVE_MB}" in r.stdout + r.stderr  # the OACK carried the file size
    r = run(["atftp", "--option", "windowsize 8", "--option", "blksize 1024", "-g", "-r",
             "pxelinux.0", "-l", "px.out", "127.0.0.1", port], work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "px.out").read_bytes() == (root / "pxelinux.0").read_bytes()
    r = run(["atftp", "-g", "-r", "../../etc/passwd", "-l", "pw.out", "127.0.0.1", port], work)
    assert r.returncode != 0 and "File not found" in r.stdout + r.stderr
    upload = os.urandom(FIVE_MB)
    (work / "up.bin").write_bytes(upload)
    r = run(["atftp", "--option", "blksize 1428", "--option", f"tsize {FIVE_MB}", "-p", "-l",
             "up.bin", "-r", "atftp.bin", "127.0.0.1", port], work)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(1.0)
    assert hp.stop() == 0
    assert_captured(hp, upload, "atftp.bin")
    rows = hp.rows("SELECT tftp_transfer_direction, tftp_transfer_filename, "
                   "tftp_transfer_blksize, tftp_transfer_windowsize, tftp_transfer_tsize, "
                   "tftp_transfer_status FROM tftp_transfers ORDER BY tftp_transfer")
    assert rows == [("read", "big.bin", 1428, 1, FIVE_MB, "complete"),
                    ("read", "pxelinux.0", 1024, 8, None, "complete"),
                    ("write", "atftp.bin", 1428, 1, FIVE_MB, "complete")]
    opts = hp.rows("SELECT tftp_request_options FROM tftp_requests WHERE "
                   "tftp_request_filename = 'big.bin'")
    assert [json.loads(o) for (o,) in opts] == [{"blksize": "1428", "tsize": "0"}]


def test_tftpy_download_and_upload(honeypot_factory, root, tmp_path):
    hp = start(honeypot_factory, root)
    client = tftpy.TftpClient("127.0.0.1", hp.port(69), options={"blksize": 1428})
    out = tmp_path / "py.out"
    client.download("big.bin", str(out))
    assert out.read_bytes() == (root / "big.bin").read_bytes()
    upload = os.urandom(FIVE_MB)
    src = tmp_path / "py_up.bin"
    src.write_bytes(upload)
    client.upload("tftpy.bin", str(src))
    with pytest.raises(tftpy.TftpException, match="File not found"):
        tftpy.TftpClient("127.0.0.1", hp.port(69)).download("missing", str(tmp_path / "m"))
    time.sleep(1.0)
    assert hp.stop() == 0
    assert_captured(hp, upload, "tftpy.bin")
    rows = hp.rows("SELECT tftp_transfer_direction, tftp_transfer_blksize, tftp_transfer_bytes"
                   " FROM tftp_transfers ORDER BY tftp_transfer")
    assert rows == [("read", 1428, FIVE_MB), ("write", 1428, FIVE_MB)]


def test_nmap_sees_tftp_and_tftp_enum_finds_files(honeypot_factory, root, tmp_path):
    # On 69 itself (root may bind it): nmap names the service by its port, as it does
    # for a real tftpd-hpa, whose replies come from a new port that -sV never sees.
    # tftp-enum reads its list through nmap's data path: give it a small one there
    datadir = tmp_path / "nmapdata"
    (datadir / "nselib" / "data").mkdir(parents=True)
    (datadir / "nselib" / "data" / "names.txt").write_text(
        "pxelinux.0\nmissing.cfg\nboot.ini\nhello.txt\n")
    hp = honeypot_factory(only({"tftp": {"udp_ports": [69], "root": str(root)}}),
                          name="nmap", offset=0)
    r = run(["nmap", "-Pn", "-n", "-sU", "-sV", "--version-intensity", "0", "-p", "69",
             "--datadir", str(datadir), "--script", "+tftp-enum", "--script-args",
             "tftp-enum.filelist=nselib/data/names.txt", "127.0.0.1"], tmp_path, timeout=120)
    out = r.stdout
    assert re.search(r"69/udp\s+open\s+tftp", out), out
    assert "pxelinux.0" in out and "hello.txt" in out, out
    assert "missing.cfg" not in out and "boot.ini" not in out
    assert not re.search(r"honeypot|dionaea|muscipula|python", out, re.I), out
    assert hp.stop() == 0
    found = hp.rows("SELECT tftp_request_filename, tftp_request_error_code FROM tftp_requests "
                    "WHERE tftp_request_filename IN ('missing.cfg', 'pxelinux.0')")
    assert sorted(found) == [("missing.cfg", 1), ("pxelinux.0", None)]


# ------------------------------------------------------------------ limits, on the wire


def rrq(sock: socket.socket, port: int, name: bytes, opts: bytes = b"") -> None:
    sock.sendto(b"\0\x01" + name + b"\0octet\0" + opts, ("127.0.0.1", port))


def client(timeout: float = 2.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


def test_retransmission_and_its_limit(honeypot_factory, root):
    hp = start(honeypot_factory, root, retransmit_timeout=0.2, retransmit_count=2)
    s = client(0.3)
    rrq(s, hp.port(69), b"hello.txt")
    seen = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        try:
            data, addr = s.recvfrom(2048)
        except TimeoutError:
            continue
        seen.append((time.monotonic(), data, addr))
    # the first DATA and two resends (0.2 s, then 0.4 s later), then silence
    assert [d for _, d, _ in seen] == [b"\0\x03\0\x01hello\nworld\n"] * 3
    assert len({a for _, _, a in seen}) == 1 and seen[0][2][1] != hp.port(69)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
    assert 0.15 < gaps[0] < 0.6 and 0.3 < gaps[1] < 0.9
    # a duplicate ACK after the transfer gave up gets nothing back
    s.sendto(b"\0\x04\0\x01", seen[0][2])
    with pytest.raises(TimeoutError):
        s.recvfrom(2048)
    assert hp.stop() == 0
    assert hp.rows("SELECT tftp_transfer_status, tftp_transfer_retransmits FROM "
                   "tftp_transfers") == [("timeout", 2)]


def test_max_file_size_refuses_and_keeps_the_part(honeypot_factory, root):
    hp = start(honeypot_factory, root, max_file_size=2000)
    s = client()
    s.sendto(b"\0\x02big.exe\0octet\0", ("127.0.0.1", hp.port(69)))
    reply, addr = s.recvfrom(100)
    assert reply == b"\0\x04\0\0"
    chunk = os.urandom(512)
    for n in range(1, 5):
        s.sendto(b"\0\x03" + n.to_bytes(2, "big") + chunk, addr)
        reply, _ = s.recvfrom(100)
    assert reply == b"\0\x05\0\x03Disk full or allocation exceeded\0"
    time.sleep(0.5)
    assert hp.stop() == 0
    part = chunk * 3
    assert (hp.state / "binaries" / md5(part)).read_bytes() == part
    assert hp.rows("SELECT tftp_transfer_status, tftp_transfer_bytes FROM tftp_transfers") == [
        ("too_large", 1536)]


def test_max_transfers_drops_then_serves_on_retry(honeypot_factory, root):
    hp = start(honeypot_factory, root, max_transfers=1)
    a, b = client(0.5), client(0.5)
    rrq(a, hp.port(69), b"hello.txt")
    first, addr = a.recvfrom(100)
    assert first.startswith(b"\0\x03\0\x01")
    rrq(b, hp.port(69), b"pxelinux.0")
    with pytest.raises(TimeoutError):
        b.recvfrom(1000)  # no free transfer: dropped like a lost packet
    a.sendto(b"\0\x04\0\x01", addr)  # the first one completes
    time.sleep(0.2)
    rrq(b, hp.port(69), b"pxelinux.0")
    assert b.recvfrom(1000)[0].startswith(b"\0\x03\0\x01")
    assert hp.stop() == 0
    assert hp.rows("SELECT tftp_transfer_filename, tftp_transfer_status FROM tftp_transfers "
                   "ORDER BY tftp_transfer") == [("hello.txt", "complete"),
                                                 ("pxelinux.0", "closed")]


def test_max_peers_closes_the_quietest(honeypot_factory, root):
    hp = start(honeypot_factory, root, limits={"max_udp_peers": 2})
    socks = [client(0.5) for _ in range(3)]
    ports = []
    for s in socks:
        rrq(s, hp.port(69), b"big.bin")
        data, addr = s.recvfrom(1000)
        assert data.startswith(b"\0\x03\0\x01")
        ports.append(addr)
        time.sleep(0.1)
    # the third peer pushed out the one quiet longest: its transfer port is gone
    socks[0].sendto(b"\0\x04\0\x01", ports[0])
    with pytest.raises((TimeoutError, ConnectionRefusedError)):
        socks[0].recvfrom(1000)
    for s, addr in zip(socks[1:], ports[1:], strict=True):
        s.sendto(b"\0\x04\0\x01", addr)
        assert s.recvfrom(1000)[0].startswith(b"\0\x03\0\x02")
    assert hp.stop() == 0
    assert len(hp.rows("SELECT 1 FROM connections WHERE connection_type = 'accept'")) == 3
    assert len(hp.rows("SELECT 1 FROM tftp_transfers WHERE tftp_transfer_status = 'closed'")) == 3
