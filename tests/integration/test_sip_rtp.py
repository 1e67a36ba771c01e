"""End to end: an answered call's RTP port, fed by sipp playing G.711 and RFC 4733 DTMF pcaps."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from tests.conftest import only

PCAPS = Path("/usr/share/sip-tester")  # shipped with sipp (Debian: sip-tester)
SIP = {"udp_ports": [5060], "tcp_ports": [], "extensions": ["101"],
       "invite": {"auth": False, "final": "answer", "ring_delay": 0, "answer_delay": 0.05},
       "rtp": {"ports": [20000, 29998], "record": True}}

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="call with audio and digits">
  <send retrans="500"><![CDATA[
INVITE sip:101@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:101@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [auto_media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-11,16
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
ACK sip:101@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:101@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <nop><action><exec play_pcap_audio="AUDIO"/></action></nop>
  <pause milliseconds="700"/>
  <nop><action><exec play_pcap_audio="DIGIT1"/></action></nop>
  <pause milliseconds="300"/>
  <nop><action><exec play_pcap_audio="DIGIT2"/></action></nop>
  <pause milliseconds="300"/>
  <send retrans="500"><![CDATA[
BYE sip:101@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:101@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>
"""


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head_of_pcap(src: Path, dst: Path, packets: int) -> int:
    """The first `packets` records of a pcap (sipp plays them in real time: keep it short)."""
    data = src.read_bytes()
    out, off = bytearray(data[:24]), 24
    n = 0
    while off + 16 <= len(data) and n < packets:
        size = struct.unpack_from("<I", data, off + 8)[0]
        out += data[off: off + 16 + size]
        off += 16 + size
        n += 1
    dst.write_bytes(bytes(out))
    return n


def test_sipp_call_audio_and_dtmf_recorded(honeypot_factory, tmp_path):
    hp = honeypot_factory(only({"sip": SIP}, persona={"preset": "debian-12"}))
    audio = tmp_path / "audio.pcap"
    sent_audio = _head_of_pcap(PCAPS / "g711a.pcap", audio, 25)  # half a second of PCMA
    scenario = tmp_path / "call.xml"
    scenario.write_text(SCENARIO.replace("AUDIO", str(audio))
                        .replace("DIGIT1", str(PCAPS / "dtmf_2833_1.pcap"))
                        .replace("DIGIT2", str(PCAPS / "dtmf_2833_7.pcap")))
    res = subprocess.run(
        ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1",
         "-p", str(_free_udp()), "-mp", str(_free_udp() & ~1), "-m", "1", "-t", "u1",
         "-nostdin", "-timeout", "20s", "-timeout_error", f"127.0.0.1:{hp.port(5060)}"],
        capture_output=True, text=True, timeout=40)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert hp.stop() == 0
    rows = hp.rows("SELECT sip_rtp_local_port, sip_rtp_remote_host, sip_rtp_codec, "
                   "sip_rtp_packets, sip_rtp_payload_types, sip_rtp_dtmf, sip_rtp_end, "
                   "sip_rtp_recorded, sip_rtp_call_id, connection FROM sip_rtp")
    assert len(rows) == 1, rows
    port, host, codec, packets, types, digits, end, recorded, call_id, conn = rows[0]
    assert 20000 <= port <= 29998 and port % 2 == 0
    assert (host, codec, types, digits, end) == ("127.0.0.1", "PCMA", "[8,101]", "17", "bye")
    # 30 ms packets of 240 bytes (sipp may leave out the pcap's first one)
    assert sent_audio - 2 <= recorded // 240 <= sent_audio and recorded % 240 == 0
    assert packets >= recorded // 240 + 2
    # the row hangs off the SIP connection whose INVITE named the same call
    assert hp.rows("SELECT count(*) FROM sip_commands WHERE connection=? AND "
                   "sip_command_method='INVITE' AND sip_command_call_id=?", conn, call_id) == [(1,)]
    # the media channel is its own connection, a child of the SIP one
    assert hp.rows("SELECT connection_protocol, connection_transport, connection_parent "
                   "FROM connections WHERE connection_type='listen' AND local_port=?", port) \
        == [("RtpUdpStream", "udp", conn)]
    (stored,) = hp.rows("SELECT download_url, download_md5_hash FROM downloads")
    assert stored[0].startswith("rtp://127.0.0.1:")
    assert stored[0].endswith("/" + quote(call_id, safe="@.-_~"))
    sound = (hp.state / "binaries" / stored[1]).read_bytes()
    assert sound[:4] == b".snd" and struct.unpack("!IIIII", sound[4:24]) == (
        24, 0xFFFFFFFF, 27, 8000, 1)
    assert len(sound) == 24 + recorded
    lines = [ln for ln in hp.json_lines() if ln.get("sip", {}).get("rtp")]
    (stream,) = lines[0]["sip"]["rtp"]
    assert stream["dtmf"] == "17" and stream["local_port"] == port


def _invite(port: int, call_id: str) -> bytes:
    body = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 7078 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
    return (f"INVITE sip:101@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{call_id};rport\r\n"
            "From: <sip:300@127.0.0.1>;tag=a\r\nTo: <sip:101@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:300@127.0.0.1:5999>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


def _bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def test_sdp_port_is_open_only_to_the_caller_and_idles_out(honeypot_factory):
    sip = {**SIP, "rtp": {"ports": [20000, 29998], "idle_timeout": 1}}
    hp = honeypot_factory(only({"sip": sip}, persona={"preset": "debian-12"}))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sig, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as media, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        sig.settimeout(5)
        sig.bind(("127.0.0.1", 0))
        media.bind(("127.0.0.1", 0))
        stranger.bind(("127.0.0.2", 0))
        sig.sendto(_invite(hp.port(5060), "raw-1"), ("127.0.0.1", hp.port(5060)))
        answer = ""
        deadline = time.monotonic() + 5
        while not answer.startswith("SIP/2.0 200") and time.monotonic() < deadline:
            answer = sig.recv(4096).decode()
        assert answer.startswith("SIP/2.0 200"), answer
        port = int(re.search(r"^m=audio (\d+) RTP/AVP 0 101\r$", answer, re.M).group(1))
        assert _bound(port) and port % 2 == 0
        for i in range(3):
            rtp = struct.pack("!BBHII", 0x80, 0, i, 160 * i, 7) + b"\xff" * 160
            media.sendto(rtp, ("127.0.0.1", port))
            stranger.sendto(rtp, ("127.0.0.1", port))
        # the PBX answers the caller's media with its own (µ-law silence, paced)
        media.settimeout(2)
        back = [media.recvfrom(2048) for _ in range(10)]
        assert {addr for _, addr in back} == {("127.0.0.1", port)}
        assert all(d[:2] in (b"\x80\x80", b"\x80\x00") and d[12:] == b"\xff" * 160
                   for d, _ in back)
        deadline = time.monotonic() + 5  # no BYE: the stream ends by its idle timeout
        while _bound(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _bound(port)
    assert hp.stop() == 0
    rows = hp.rows("SELECT sip_rtp_packets, sip_rtp_ignored, sip_rtp_codec, sip_rtp_end, "
                   "sip_rtp_recorded FROM sip_rtp")
    assert rows == [(3, 3, "PCMU", "idle", 160 * 3)]
    assert hp.rows("SELECT count(*) FROM downloads") == [(0,)]  # record is off
