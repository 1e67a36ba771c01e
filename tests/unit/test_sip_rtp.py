"""An answered call's media port, fed datagrams: RTP parsed, DTMF decoded, limits, recording."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from muscipula import config, services
from muscipula.machine import (
    CaptureData,
    CaptureEnd,
    ChildClose,
    ChildData,
    ChildFailed,
    ChildListen,
    ChildListening,
    ChildSend,
    Emit,
    Peer,
    Send,
    Wake,
)
from muscipula.protocols.sip import rtp, sdp

UDP = Peer("127.0.0.1", 5060, "10.1.2.3", 40000, "udp")
CALLER = ("10.1.2.3", 6000)
OFFER = ("v=0\r\no=- 5 6 IN IP4 10.1.2.3\r\ns=-\r\nc=IN IP4 10.1.2.3\r\nt=0 0\r\n"
         "m=audio 6000 RTP/AVP 8 0 96\r\na=rtpmap:8 PCMA/8000\r\n"
         "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n")


def make(tmp_path: Path, peer: Peer = UDP, **rtp_cfg):
    body = {"extensions": ["101"], "invite": {"auth": False, "final": "answer",
                                              "ring_delay": 0, "answer_delay": 0.5},
            "rtp": {"ports": [20000, 20100], **rtp_cfg}}
    cfg = config.load(extra={"persona": {"preset": "debian-12"}, "services": {"sip": body}})
    return services.factory("sip", cfg, tmp_path)(peer)


def req(method: str, *, body: str = "", call_id: str = "c1", cseq: int = 1) -> bytes:
    lines = [f"{method} sip:101@127.0.0.1 SIP/2.0",
             "Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK" + f"{cseq}{method};rport",
             "From: <sip:200@10.1.2.3>;tag=f1", "To: <sip:101@127.0.0.1>", f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}"]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def packet(pt: int, seq: int, ts: int, payload: bytes, ssrc: int = 0x1234ABCD,
           marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, ssrc) + payload


def dtmf(event: int, ts: int, seq: int, end: bool = False, duration: int = 160) -> bytes:
    return packet(96, seq, ts, bytes([event, 0x80 if end else 0x0A]) + duration.to_bytes(2, "big"))


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def emits(actions, name: str) -> list[dict]:
    return [dict(a.fields) for a in actions if isinstance(a, Emit) and a.name == name]


def answered(m, call_id: str = "c1", port: int = 20042, now: float = 10.0) -> tuple[str, str]:
    """INVITE -> ring -> timer asks for a port -> the port is bound -> 200 with its SDP."""
    out = m.receive(req("INVITE", body=OFFER, call_id=call_id), now)
    assert [s.data.split(b"\r\n")[0] for s in of(out, Send)] == [b"SIP/2.0 100 Trying",
                                                                 b"SIP/2.0 180 Ringing"]
    out = m.timer(now + 0.5)
    (listen,) = of(out, ChildListen)
    assert not of(out, Send)  # no 200 before the port is there
    assert listen.transport == "udp" and listen.ports[0] == listen.ports[1]
    assert listen.ports[0] % 2 == 0 and 20000 <= listen.ports[0] <= 20100
    out = m.child(ChildListening(listen.tag, "127.0.0.1", port), now + 0.51)
    (ok,) = of(out, Send)
    return listen.tag, ok.data.decode()


def test_answer_names_the_bound_port_and_the_shared_codec(tmp_path):
    m = make(tmp_path)
    _, ok = answered(m)
    assert ok.startswith("SIP/2.0 200 OK\r\n") and "Content-Type: application/sdp" in ok
    body = ok.split("\r\n\r\n", 1)[1]
    assert "m=audio 20042 RTP/AVP 8 96\r\n" in body
    assert "a=rtpmap:8 PCMA/8000" in body and "a=rtpmap:96 telephone-event/8000" in body
    assert "PCMU" not in body and "c=IN IP4 127.0.0.1" in body


def test_rtp_and_dtmf_recorded_at_bye(tmp_path):
    m = make(tmp_path, record=True)
    tag, _ = answered(m)
    audio = bytes(range(160))
    caps: list = []
    for i in range(5):
        caps += m.child(ChildData(tag, packet(8, 100 + i, 160 * i, audio), CALLER), 11.0 + i / 50)
    # digit 5: three packets of one event (the last one three times), then digit #
    for i, end in enumerate((False, False, True, True, True)):
        caps += m.child(ChildData(tag, dtmf(5, 9000, 200 + i, end), CALLER), 11.2)
    caps += m.child(ChildData(tag, dtmf(11, 9800, 210, True), CALLER), 11.3)
    caps += m.child(ChildData(tag, b"\x00garbage", CALLER), 11.3)
    data = of(caps, CaptureData)
    assert data[0].data == rtp.au_header(8) and data[0].data[:4] == b".snd"
    assert struct.unpack("!I", data[0].data[12:16]) == (27,)  # A-law
    assert b"".join(d.data for d in data[1:]) == audio * 5
    out = m.receive(req("BYE", call_id="c1", cseq=2), 12.0)
    assert of(out, Send)[0].data.startswith(b"SIP/2.0 200 OK")
    (inc,) = emits(out, "sip.rtp")
    assert inc["packets"] == 12 and inc["malformed"] == 1 and inc["dtmf"] == "5#"
    assert inc["payload_types"] == [8, 96] and inc["ssrc"] == ["1234abcd"]
    assert inc["codec"] == "PCMA" and inc["end"] == "bye" and inc["local_port"] == 20042
    assert inc["remote_host"] == "10.1.2.3" and inc["remote_port"] == 6000
    assert inc["recorded"] == 800 and inc["duration"] == pytest.approx(0.3)
    (end,) = of(out, CaptureEnd)
    assert end.stream == tag and end.url == "rtp://10.1.2.3:6000/c1" and end.complete
    assert ChildClose(tag) in out
    assert m.child(ChildData(tag, packet(8, 1, 1, audio), CALLER), 12.1) == [Wake(None)]


def test_foreign_sources_are_ignored_and_counted(tmp_path):
    m = make(tmp_path)
    tag, _ = answered(m)
    for host in ("10.9.9.9", "127.0.0.1"):
        assert not of(m.child(ChildData(tag, packet(8, 1, 1, b"x" * 160), (host, 6000)), 11.0),
                      CaptureData)
    m.child(ChildData(tag, packet(8, 2, 2, b"x" * 160), ("::ffff:10.1.2.3", 7000)), 11.0)
    (inc,) = emits(m.receive(req("BYE", cseq=2), 12.0), "sip.rtp")
    assert inc["ignored"] == 2 and inc["packets"] == 1 and inc["remote_port"] == 7000


def test_no_recording_unless_configured(tmp_path):
    m = make(tmp_path)
    tag, _ = answered(m)
    assert not of(m.child(ChildData(tag, packet(8, 1, 1, b"x" * 160), CALLER), 11.0),
                  CaptureData)
    assert not of(m.receive(req("BYE", cseq=2), 12.0), CaptureEnd)


@pytest.mark.parametrize(("limit", "cfg"), [("max_packets", {"max_packets": 3}),
                                            ("max_bytes", {"max_bytes": 1024})])
def test_limits_end_the_stream_and_close_the_port(tmp_path, limit, cfg):
    m = make(tmp_path, record=True, **cfg)
    tag, _ = answered(m)
    out: list = []
    for i in range(20):
        out = m.child(ChildData(tag, packet(0, i, i, b"\xff" * 160), CALLER), 11.0 + i / 50)
        if emits(out, "sip.rtp"):
            break
    (inc,) = emits(out, "sip.rtp")
    assert inc["end"] == limit and ChildClose(tag) in out
    assert inc["packets"] <= cfg.get("max_packets", 1000)
    assert inc["bytes"] <= cfg.get("max_bytes", 1 << 30)
    assert emits(out, "connection.limit")[0]["limit"] == f"rtp.{limit}"
    assert of(out, CaptureEnd) == [] or not of(out, CaptureEnd)[0].complete
    # the call itself is still up: BYE is answered, no second stream record
    bye = m.receive(req("BYE", cseq=2), 12.0)
    assert of(bye, Send)[0].data.startswith(b"SIP/2.0 200") and not emits(bye, "sip.rtp")


def test_idle_stream_ends_by_timer(tmp_path):
    m = make(tmp_path, idle_timeout=5, send_seconds=0)
    tag, _ = answered(m)
    out = m.child(ChildData(tag, packet(8, 1, 1, b"x"), CALLER), 11.0)
    assert Wake(16.0) in out
    assert not emits(m.timer(15.9), "sip.rtp")
    out = m.timer(16.0)
    (inc,) = emits(out, "sip.rtp")
    assert inc["end"] == "idle" and ChildClose(tag) in out


def test_pbx_sends_paced_silence_back_to_the_callers_media(tmp_path):
    m = make(tmp_path, send_seconds=0.5, idle_timeout=30)
    tag, _ = answered(m)
    assert not of(m.child(ChildData(tag, packet(8, 1, 1, b"x"), ("10.9.9.9", 1)), 11.0),
                  ChildSend)  # a stranger's packet starts nothing
    out = m.child(ChildData(tag, packet(8, 1, 1, b"x"), CALLER), 11.0)
    first = of(out, ChildSend)
    assert len(first) == 5 and {s.addr for s in first} == {CALLER}
    assert Wake(11.1) in out
    pkts = [rtp.parse(s.data) for s in first]
    assert all(p is not None and p.payload_type == 8 and p.payload == b"\xd5" * 160
               for p in pkts)
    assert pkts[0].marker and not pkts[1].marker and pkts[0].ssrc != 0x1234ABCD
    assert [(p.seq - pkts[0].seq) % 65536 for p in pkts] == [0, 1, 2, 3, 4]
    assert [p.timestamp - pkts[0].timestamp for p in pkts] == [0, 160, 320, 480, 640]
    assert not of(m.timer(11.05), ChildSend)
    total = len(first)
    now = 11.1
    while now < 12.0:
        total += len(of(m.timer(now), ChildSend))
        now = round(now + 0.1, 3)
    assert total == 25  # half a second of 20 ms packets, then no more
    assert m._wake() == [Wake(41.0)]  # only the idle deadline is left


def test_port_taken_tries_another_then_488(tmp_path):
    m = make(tmp_path)
    m.receive(req("INVITE", body=OFFER), 10.0)
    (listen,) = of(m.timer(10.5), ChildListen)
    ports = {listen.ports[0]}
    for _ in range(7):
        (again,) = of(m.child(ChildFailed(listen.tag, "bind failed: in use"), 10.6), ChildListen)
        ports.add(again.ports[0])
        assert again.tag == listen.tag and again.ports[0] % 2 == 0
    assert len(ports) > 1
    out = m.child(ChildFailed(listen.tag, "bind failed: in use"), 10.7)
    assert [s.data.split(b"\r\n")[0] for s in of(out, Send)] == [b"SIP/2.0 488 Not Acceptable Here"]
    assert "c1" not in m.calls
    # the driver refusing the channel outright (too many channels): 488 at once
    m.receive(req("INVITE", body=OFFER, call_id="c2"), 20.0)
    (listen,) = of(m.timer(20.5), ChildListen)
    out = m.child(ChildFailed(listen.tag, "too many channels"), 20.6)
    assert of(out, Send)[0].data.startswith(b"SIP/2.0 488")


def test_no_shared_codec_is_488_before_ringing(tmp_path):
    offer = OFFER.replace("RTP/AVP 8 0 96", "RTP/AVP 18 96").replace("a=rtpmap:8 PCMA", "a=x")
    out = make(tmp_path).receive(req("INVITE", body=offer), 10.0)
    assert [s.data.split(b"\r\n")[0] for s in of(out, Send)] == [
        b"SIP/2.0 100 Trying", b"SIP/2.0 488 Not Acceptable Here"]
    assert emits(out, "sip.command")[0]["status"] == 488


def test_max_calls_with_media(tmp_path):
    m = make(tmp_path, max_calls_with_media=1)
    answered(m, "c1")
    m.receive(req("INVITE", body=OFFER, call_id="c2"), 20.0)
    out = m.timer(20.5)
    assert not of(out, ChildListen)
    assert of(out, Send)[0].data.startswith(b"SIP/2.0 488")
    assert emits(out, "connection.limit")[0]["limit"] == "rtp.max_calls_with_media"


def test_cancel_while_opening_closes_the_port(tmp_path):
    m = make(tmp_path)
    m.receive(req("INVITE", body=OFFER), 10.0)
    (listen,) = of(m.timer(10.5), ChildListen)
    out = m.receive(req("CANCEL"), 10.51)
    assert ChildClose(listen.tag) in out
    out = m.child(ChildListening(listen.tag, "127.0.0.1", 20010), 10.52)
    assert not of(out, Send) and not emits(out, "sip.rtp")


def test_late_offer_and_reinvite_keep_the_port(tmp_path):
    m = make(tmp_path)
    m.receive(req("INVITE"), 10.0)
    (listen,) = of(m.timer(10.5), ChildListen)
    ok = of(m.child(ChildListening(listen.tag, "127.0.0.1", 20010), 10.6), Send)[0].data
    assert b"m=audio 20010 RTP/AVP 0 8 101\r\n" in ok
    again = of(m.receive(req("INVITE", body=OFFER, cseq=3), 11.0), Send)
    assert b"m=audio 20010 RTP/AVP 0 8 101\r\n" in again[-1].data


def test_session_end_emits_open_streams(tmp_path):
    m = make(tmp_path, record=True)
    tag, _ = answered(m)
    m.child(ChildData(tag, packet(8, 1, 1, b"x" * 10), CALLER), 11.0)
    out = m.closed(12.0)
    (inc,) = emits(out, "sip.rtp")
    assert inc["end"] == "closed" and of(out, CaptureEnd)


def test_wildcard_listener_names_the_dialled_address(tmp_path):
    m = make(tmp_path, peer=Peer("0.0.0.0", 5060, "10.1.2.3", 40000, "udp"))
    _, ok = answered(m)
    assert "c=IN IP4 127.0.0.1" in ok and "0.0.0.0" not in ok


@pytest.mark.parametrize("data", [
    b"", b"\x80" * 11, bytes([0xA0]) + b"\x00" * 11,  # padding count 0
    bytes([0x90]) + b"\x00" * 11 + b"\x00\x00\xff\xff",  # extension past the end
    bytes([0x8F]) + b"\x00" * 11,  # CSRCs past the end
    bytes([0x80, 200]) + b"\x00" * 10,  # RTCP
])
def test_parse_rejects_what_is_not_rtp(data):
    assert rtp.parse(data) is None


def test_parse_skips_csrc_extension_and_padding():
    head = struct.pack("!BBHII", 0xB1, 0x88, 1, 2, 3)  # padding, extension, 1 CSRC, marker
    data = head + b"CSRC" + b"\xbe\xde\x00\x01" + b"EXT!" + b"audio" + b"\x00\x00\x03"
    pkt = rtp.parse(data)
    assert pkt is not None and pkt.payload == b"audio" and pkt.marker and pkt.payload_type == 8


def test_audio_offer_by_name_and_bad_numbers():
    offer = sdp.audio_offer(b"v=0\r\nm=video 1 RTP/AVP 31\r\nm=audio 7000 RTP/AVP \xc2\xb2 0 101"
                            b"\r\na=rtpmap:101 TELEPHONE-EVENT/8000\r\na=rtpmap:\xc2\xb2 x\r\n")
    assert offer is not None and offer.port == 7000 and offer.formats == (0, 101)
    assert offer.codec(rtp.G711) == 0 and offer.event_type() == 101
    assert sdp.audio_offer(b"v=0\r\nm=audio x RTP/AVP 0\r\n") is None


def test_max_media_ports_holds_across_sessions_and_comes_back_with_them(tmp_path):
    body = {"extensions": ["101"], "invite": {"auth": False, "final": "answer",
                                              "ring_delay": 0, "answer_delay": 0.5},
            "rtp": {"ports": [20000, 20100], "max_media_ports": 2}}
    cfg = config.load(extra={"persona": {"preset": "debian-12"}, "services": {"sip": body}})
    factory = services.factory("sip", cfg, tmp_path)
    # one address, many UDP source ports: one session each
    first, second, third = (factory(Peer("127.0.0.1", 5060, "10.1.2.3", 40000 + i, "udp"))
                            for i in range(3))
    answered(first, "a")
    answered(second, "b")
    third.receive(req("INVITE", body=OFFER, call_id="c"), 20.0)
    out = third.timer(20.5)
    assert not of(out, ChildListen) and of(out, Send)[0].data.startswith(b"SIP/2.0 488")
    assert emits(out, "connection.limit") == [{"limit": "rtp.max_media_ports", "value": 2}]
    first.closed(21.0)  # its session ends: its port is given back
    third.receive(req("INVITE", body=OFFER, call_id="d", cseq=2), 22.0)
    assert of(third.timer(22.5), ChildListen)
