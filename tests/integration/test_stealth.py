"""A scanner's view of a whole persona: every TCP service names the persona's product,
the host name, OS family and TLS stack agree across services, and nothing gives the
sensor away (nmap's own dionaea match lines included).

Both personas run side by side and are scanned at once to keep the test near 30 s.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from typing import Any

import pymysql

from tests.conftest import only

GIVEAWAYS = re.compile(
    r"(?i)honeypot|dionaea|muscipula|python|uvicorn|twisted|asyncio|werkzeug|"
    r"Welcome to the ftp service|Directory listing for")
SCRIPTS = "ftp-syst,http-headers,ssl-cert,ssl-enum-ciphers,mysql-info"
EXPECT = {
    "windows-2008r2": {21: "ftp +Microsoft ftpd", 80: "http +Microsoft IIS httpd 7.5",
                       443: "ssl/http +Microsoft IIS httpd 7.5", 3306: "mysql +MySQL 5.5.62"},
    "debian-12": {21: "ftp +vsftpd 3.0.3", 80: "http +nginx 1.22.1",
                  443: "ssl/http +nginx 1.22.1", 3306: "mysql +MySQL 8.0.40"},
}
SIP_OPTIONS = (b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/TCP nm;branch=foo\r\n"
               b"From: <sip:nm@nm>;tag=root\r\nTo: <sip:nm2@nm2>\r\nCall-ID: 50000\r\n"
               b"CSeq: 42 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n"
               b"Contact: <sip:nm@nm>\r\nAccept: application/sdp\r\n\r\n")


def _exchange(port: int, data: bytes) -> bytes:
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        for _ in range(100):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out


def _ftp_syst(port: int) -> tuple[bytes, bytes]:
    """(banner, SYST answer after an anonymous login)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        banner = f.readline()
        for line in (b"USER anonymous", b"PASS a@b.c"):
            s.sendall(line + b"\r\n")
            f.readline()
        s.sendall(b"SYST\r\n")
        return banner, f.readline()


def _mysql_facts(port: int) -> tuple[Any, ...]:
    c = pymysql.connect(host="127.0.0.1", port=port, user="root", password="toor",
                        ssl_disabled=True, connect_timeout=5)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT @@hostname, @@version_compile_os, @@have_ssl, @@server_id, "
                        "@@system_time_zone")
            return cur.fetchone()
    finally:
        c.close()


def test_nmap_sees_one_consistent_host_per_persona(honeypot_factory):
    services = {"ftp": {}, "http": {}, "mysql": {}}
    hps = {preset: honeypot_factory(only(services, persona={"preset": preset}), name=preset)
           for preset in EXPECT}
    scans = {}
    for preset, hp in hps.items():
        ports = ",".join(str(hp.port(p)) for p in EXPECT[preset])
        scans[preset] = subprocess.Popen(
            ["nmap", "-Pn", "-n", "-sV", "-p", ports, "--script", SCRIPTS, "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = {preset: p.communicate(timeout=120) for preset, p in scans.items()}

    for preset, hp in hps.items():
        out, err = outs[preset]
        assert scans[preset].returncode == 0, err
        for port, product in EXPECT[preset].items():
            assert re.search(rf"{hp.port(port)}/tcp +open +{product}", out), out
        assert not GIVEAWAYS.search(out), out
        hostname = json.loads((hp.state / "secrets.json").read_text())["persona.hostname"]
        # the certificate, MySQL and the OS family all speak for the same host
        assert re.search(rf"ssl-cert: Subject: commonName={re.escape(hostname)}\n", out), out
        mysql_host, compile_os, have_ssl, server_id, zone = _mysql_facts(hp.port(3306))
        assert mysql_host == hostname
        banner, syst = _ftp_syst(hp.port(21))
        tls12 = out.split("TLSv1.2:", 1)[-1]
        if preset == "windows-2008r2":
            assert (banner, syst) == (b"220 Microsoft FTP Service\r\n", b"215 Windows_NT\r\n")
            assert (compile_os, str(server_id)) == ("Win64", "0")
            assert zone == "Coordinated Universal Time"
            # SChannel on 2008 R2: TLS 1.0-1.2, no 1.3, no ChaCha20 or ECDHE-GCM, P-256
            assert "TLSv1.0:" in out and "TLSv1.3" not in out, out
            assert "CHACHA20" not in out and "ECDHE_RSA_WITH_AES_128_GCM" not in out, out
            assert "(secp256r1)" in tls12 and "x25519" not in out, out
            # MySQL 5.5 from the Windows installer has no SSL
            assert have_ssl == "DISABLED" and "SwitchToSSLAfterHandshake" not in out, out
        else:
            assert banner == b"220 (vsFTPd 3.0.3)\r\n" and syst == b"215 UNIX Type: L8\r\n"
            assert (compile_os, str(server_id), zone) == ("Linux", "1", "UTC")
            assert "TLSv1.3:" in out and "TLSv1.0:" not in out, out
            # nginx's HIGH:!aNULL:!MD5, not a library's five-cipher default
            assert "TLS_RSA_WITH_AES_256_CBC_SHA " in tls12, out
            assert have_ssl == "YES"
        # nmap's dionaea match: a SIP OPTIONS line answered 200 by the web server
        reply = _exchange(hp.port(80), SIP_OPTIONS)
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
        # and an HTTP/1.0-style answer without Server or Date
        reply = _exchange(hp.port(80), b"GET / HTTP/1.0\r\n\r\n")
        head = reply.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nServer: " in head
        assert b"\r\nDate: " in head and b"Directory listing" not in reply
        assert hp.stop() == 0
