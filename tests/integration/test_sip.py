"""End to end: the SIP service against sipp, sipsak, sipvicious and nmap on loopback."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.conftest import only

SIP = {"udp_ports": [5060], "tcp_ports": [5060], "extensions": ["101", "105", "service"],
       "login": {"mode": "list", "accounts": {"102": "s3cret"}},
       "invite": {"auth": False, "final": "answer", "ring_delay": 0, "answer_delay": 0.05}}


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def debian(honeypot_factory):
    return honeypot_factory(only({"sip": SIP}, persona={"preset": "debian-12"}))


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_default_uac_calls_complete(honeypot_factory, transport):
    hp = honeypot_factory(only({"sip": SIP}, persona={"preset": "debian-12"}))
    port = hp.port(5060)
    res = _run(["sipp", "-sn", "uac", "-i", "127.0.0.1", "-p", str(_free_udp()),
                f"127.0.0.1:{port}", "-m", "3", "-t", transport, "-nostdin",
                "-timeout", "20s", "-timeout_error"])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert hp.stop() == 0
    methods = [r[0] for r in hp.rows("SELECT sip_command_method FROM sip_commands")]
    assert methods.count("INVITE") == 3 and methods.count("BYE") == 3
    assert methods.count("ACK") == 3
    # sipp's offer is recorded in dionaea's SDP tables
    media = hp.rows("SELECT sip_sdp_media_media, sip_sdp_media_proto FROM sip_sdp_medias")
    assert ("audio", "RTP/AVP") in media
    assert hp.rows("SELECT count(*) FROM sip_sdp_origins")[0][0] == 3
    addrs = hp.rows("SELECT sip_addr_uri_user FROM sip_addrs WHERE sip_addr_type='addr'")
    assert ("service",) in addrs
    lines = hp.json_lines()
    commands = [c for line in lines for c in line.get("sip", {}).get("commands", [])]
    assert {c["method"] for c in commands} >= {"INVITE", "ACK", "BYE"}
    assert all(c["status"] == 200 for c in commands if c["method"] == "BYE")


def test_sipsak_options_and_svmap_name_the_product(debian):
    port = debian.port(5060)
    res = _run(["sipsak", "-v", "-s", f"sip:100@127.0.0.1:{port}"], timeout=20)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Asterisk PBX 20.6.0" in res.stdout
    res = _run(["sipvicious_svmap", "-p", str(port), "127.0.0.1"], timeout=30)
    assert "Asterisk PBX 20.6.0" in res.stdout, res.stdout + res.stderr
    assert "dionaea" not in res.stdout.lower()
    assert debian.stop() == 0
    ua = {r[0] for r in debian.rows("SELECT sip_command_user_agent FROM sip_commands "
                                   "WHERE sip_command_method='OPTIONS'")}
    assert any("sipsak" in u for u in ua)


def test_svwar_finds_extensions_and_svcrack_the_password(debian, tmp_path):
    port = debian.port(5060)
    res = _run(["sipvicious_svwar", "-e100-110", "-m", "REGISTER", "-p", str(port),
                "127.0.0.1"], timeout=60)
    found = {ln.split("|")[1].strip() for ln in res.stdout.splitlines()
             if ln.count("|") >= 3 and "reqauth" in ln}
    assert found == {"101", "102", "105"}, res.stdout + res.stderr
    words = tmp_path / "words.txt"
    words.write_text("123456\npassword\ns3cret\nqwerty\n")
    res = _run(["sipvicious_svcrack", "-u", "102", "-d", str(words), "-p", str(port),
                "127.0.0.1"], timeout=60)
    assert "s3cret" in res.stdout, res.stdout + res.stderr
    assert debian.stop() == 0
    logins = debian.rows("SELECT login_username FROM logins")
    assert logins.count(("102",)) >= 3
    lines = debian.json_lines()
    creds = [c for line in lines for c in line.get("credentials", [])]
    assert any(c.get("username") == "102" for c in creds)


@pytest.mark.parametrize(("preset", "product"), [("debian-12", "Asterisk PBX 20.6.0"),
                                                  ("windows-2008r2", "3CX")])
def test_nmap_names_the_product(honeypot_factory, preset, product):
    # On 5060 itself (root may bind it): nmap sends its SIP probe first there, so -sV
    # takes a second instead of walking every UDP probe
    hp = honeypot_factory(only({"sip": {**SIP, "tcp_ports": []}}, persona={"preset": preset}),
                          name="nmap", offset=0)
    port = hp.port(5060)
    res = _run(["nmap", "-Pn", "-n", "-sU", "-sV", "-p", str(port), "--script", "+sip-methods",
                "127.0.0.1"], timeout=120)
    out = res.stdout
    assert product in out, out
    assert "sip-methods" in out and "INVITE" in out, out
    assert "honeypot" not in out.lower() and "dionaea" not in out.lower()
    assert hp.stop() == 0
    assert hp.rows("SELECT count(*) FROM sip_commands WHERE sip_command_method='OPTIONS'")[0][0]


def test_sip_over_tls_answers_challenges_and_records_the_hello(honeypot_factory):
    import ssl

    sip = {**SIP, "tls_ports": [5061]}
    hp = honeypot_factory(only({"sip": sip}, persona={"preset": "debian-12"}))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def request(method: str, cseq: int) -> bytes:
        return (f"{method} sip:102@127.0.0.1 SIP/2.0\r\n"
                "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK" + f"{cseq}x;rport\r\n"
                "From: <sip:102@127.0.0.1>;tag=t1\r\nTo: <sip:102@127.0.0.1>\r\n"
                f"Call-ID: tls-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:102@127.0.0.1;"
                "transport=tls>\r\nContent-Length: 0\r\n\r\n").encode()

    with socket.create_connection(("127.0.0.1", hp.port(5061)), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="pbx.example.org") as tls:
        tls.sendall(request("OPTIONS", 1))
        options = tls.recv(4096).decode()
        tls.sendall(request("REGISTER", 2))
        register = tls.recv(4096).decode()
    assert options.startswith("SIP/2.0 200 OK") and "Server: Asterisk PBX 20.6.0" in options
    assert register.startswith("SIP/2.0 401 Unauthorized")
    assert 'WWW-Authenticate: Digest realm="asterisk"' in register
    assert hp.stop() == 0
    methods = hp.rows("SELECT c.connection_transport, s.sip_command_method FROM sip_commands s "
                      "JOIN connections c USING (connection) ORDER BY s.sip_command")
    assert methods == [("tls", "OPTIONS"), ("tls", "REGISTER")]
    assert hp.rows("SELECT tls_hello_sni FROM tls_hellos") == [("pbx.example.org",)]
