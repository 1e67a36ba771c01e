"""Each service's own TLS face, seen by openssl s_client, curl and nmap.

MySQL 8.0.40 on debian-12 shows mysqld's auto-generated chain and suites; nginx on
443 shows the host's snakeoil certificate and OpenSSL's defaults; plain HTTP sent
to 443 gets nginx's 400 page (debian-12) or a closed connection (IIS).
"""

from __future__ import annotations

import re
import subprocess
import time

from tests.conftest import only

SERVER_CN = "MySQL_Server_8.0.40_Auto_Generated_Server_Certificate"
CA_CN = "MySQL_Server_8.0.40_Auto_Generated_CA_Certificate"


def s_client(port: int, *args: str) -> str:
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts",
                          *args], input="", capture_output=True, text=True, timeout=20)
    return out.stdout


def negotiated(text: str) -> tuple[str, str]:
    m = re.search(r"New, (TLSv[\d.]+), Cipher is (\S+)", text)
    assert m, text
    return m.group(1), m.group(2)


def chain(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^ *\d+ s:CN ?= ?(\S+)\n *i:CN ?= ?(\S+)", text, re.M)


def test_debian_mysql_and_https_show_their_own_tls(honeypot_factory):
    hp = honeypot_factory(only({"mysql": {}, "http": {}, "ftp": {}},
                               persona={"preset": "debian-12"}))
    mysql, https = hp.port(3306), hp.port(443)

    out = s_client(mysql, "-starttls", "mysql")
    assert negotiated(out) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")  # mysqld's first suite
    assert chain(out) == [(SERVER_CN, CA_CN), (CA_CN, CA_CN)]
    assert "Requested Signature Algorithms" in out  # mysqld asks for a certificate (optional)
    out12 = s_client(mysql, "-starttls", "mysql", "-tls1_2")
    assert negotiated(out12) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    assert "Server Temp Key: ECDH, prime256v1" in out12  # P-256 first, no X25519
    dhe = s_client(mysql, "-starttls", "mysql", "-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384")
    assert negotiated(dhe)[1] == "DHE-RSA-AES256-GCM-SHA384" and "DH, 2048 bits" in dhe
    old = s_client(mysql, "-starttls", "mysql", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert "Cipher is (NONE)" in old or "New, TLSv1.1" not in old  # no TLS 1.1

    web = s_client(https)
    assert negotiated(web) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")  # OpenSSL's own order
    [(subject, issuer)] = chain(web)
    assert subject == issuer and "MySQL" not in subject
    assert "Requested Signature Algorithms" not in web  # nginx asks for none

    # the FTP service (vsftpd) shares the host's certificate with nginx, as on Debian
    ftp = s_client(hp.port(21), "-starttls", "ftp")
    assert chain(ftp) == [(subject, issuer)]

    # the certificate served is the one made once and kept in the state directory
    pem = (hp.state / "tls" / "mysql-8.0.40" / "server-cert.pem").read_bytes()
    assert pem.decode().strip() in out


def test_plain_http_to_443(honeypot_factory):
    deb = honeypot_factory(only({"http": {}}, persona={"preset": "debian-12"}), name="deb")
    win = honeypot_factory(only({"http": {}}, persona={"preset": "windows-2008r2"}), name="win")
    out = subprocess.run(["curl", "-sS", "-i", "-A", "plain-probe",
                          f"http://127.0.0.1:{deb.port(443)}/admin"],
                         capture_output=True, timeout=20)
    out.stdout = out.stdout.decode("latin-1")  # as sent: \r\n kept
    assert out.stdout.startswith("HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\n")
    assert "Connection: close\r\n" in out.stdout and "Content-Length: 255\r\n" in out.stdout
    assert "<center>The plain HTTP request was sent to HTTPS port</center>" in out.stdout
    iis = subprocess.run(["curl", "-sS", "-i", f"http://127.0.0.1:{win.port(443)}/"],
                         capture_output=True, text=True, timeout=20)
    assert iis.stdout == "" and "Empty reply" in iis.stderr
    # recorded: the incident, and the request as any other
    deb.stop()
    win.stop()
    rows = deb.rows("SELECT http_request_method, http_request_target, http_request_status, "
                    "http_request_user_agent FROM http_requests")
    assert rows == [("GET", "/admin", 400, "plain-probe")]
    [conn] = [c for c in deb.json_lines() if c["dst_port"] == deb.port(443)]
    assert conn["connection"]["transport"] == "tls"
    assert "/admin" in str(conn) and "'status': 400" in str(conn)
    assert not win.rows("SELECT * FROM http_requests")
    [wconn] = win.json_lines()
    assert wconn["dst_port"] == win.port(443) and "requests" not in str(wconn)


def test_nmap_names_mysql_and_its_certificate(honeypot_factory):
    hp = honeypot_factory(only({"mysql": {}}, persona={"preset": "debian-12"}))
    port = hp.port(3306)
    started = time.monotonic()
    out = subprocess.run(["nmap", "-Pn", "-n", "-sV", "-p", str(port), "--script", "ssl-cert",
                          "127.0.0.1"], capture_output=True, text=True, timeout=120)
    assert re.search(rf"{port}/tcp\s+open\s+mysql\s+MySQL 8\.0\.40", out.stdout), out.stdout
    assert f"ssl-cert: Subject: commonName={SERVER_CN}" in out.stdout
    assert f"Issuer: commonName={CA_CN}" in out.stdout
    assert time.monotonic() - started < 60


def test_tls_answers_end_with_close_notify(honeypot_factory):
    """A closing answer ends with close_notify, as nginx's: OpenSSL 3 clients take a bare
    TCP close for a truncation and drop what they read (nmap then retries in plain text)."""
    hp = honeypot_factory(only({"http": {}}, persona={"preset": "debian-12"}))
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{hp.port(443)}", "-quiet", "-ign_eof"],
        input=b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        capture_output=True, timeout=20)
    text = (out.stdout + out.stderr).decode("latin-1")
    assert "HTTP/1.1 200 OK" in text
    assert "unexpected eof" not in text.lower(), text
