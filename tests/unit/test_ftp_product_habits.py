"""FTP habits that differ per product: TYPE A line ends, PASV over IPv6, a stalled TLS data
channel, and the IIS-only verbs its FEAT announces."""

from __future__ import annotations

import pytest

from muscipula import config as configmod
from muscipula import services
from muscipula.machine import (
    CaptureData,
    CaptureEnd,
    ChildClosed,
    ChildConnect,
    ChildConnected,
    ChildData,
    ChildFailed,
    ChildListen,
    ChildListening,
    ChildSend,
    Close,
    Emit,
    Peer,
)
from muscipula.protocols.ftp import SERVICE
from muscipula.protocols.ftp.ascii import CrlfStream, to_crlf
from muscipula.protocols.ftp.config import FtpConfig
from muscipula.protocols.ftp.machine import FtpSession, Setup
from muscipula.protocols.ftp.policy import LoginPolicy
from muscipula.protocols.ftp.replies import iis, vsftpd
from muscipula.protocols.ftp.vfs import SeedFiles, SeedLimits, default_tree
from tests.unit.test_ftp import NOW, login, make, of, passive, sent

PEER6 = Peer("2001:db8::21", 21, "2001:db8::99", 40000)


def make6(dialect: str, **kw) -> FtpSession:
    d = vsftpd() if dialect == "vsftpd" else iis()
    setup = Setup(dialect=d, policy=LoginPolicy("accept_all", [], True, 3),
                  seed=default_tree(d.name, NOW - 86400 * 30, "web01"),
                  files=SeedFiles(None, SeedLimits()), passive_ports=(50000, 50010), **kw)
    m = FtpSession(setup, PEER6)
    m.start(NOW)
    return m


def upload(m: FtpSession, name: bytes, chunks: list[bytes]) -> tuple[bytes, bytes]:
    """STOR over PASV in pieces; (captured bytes, what RETR of it sends back)."""
    tag = passive(m)
    m.receive(b"STOR " + name + b"\r\n", NOW)
    captured = b""
    for chunk in chunks:
        captured += b"".join(a.data for a in of(m.child(ChildData(tag, chunk), NOW),
                                                  CaptureData))
    m.child(ChildClosed(tag), NOW)
    tag = passive(m, port=50004)
    out = m.receive(b"RETR " + name + b"\r\n", NOW)
    return captured, b"".join(a.data for a in of(out, ChildSend))


# ------------------------------------------------------------------ TYPE A


def test_crlf_conversion_keeps_pairs_and_spans_chunks():
    assert to_crlf(b"a\nb\r\nc\r\r\n") == b"a\r\nb\r\nc\r\r\n"
    assert to_crlf(b"\nx", after_cr=True) == b"\nx"
    stream = CrlfStream()
    assert stream.feed(b"one\r") + stream.feed(b"\ntwo\n") == b"one\r\ntwo\r\n"
    assert stream.feed(b"") == b"" and stream.feed(b"\n") == b"\r\n"


def test_vsftpd_type_a_moves_bytes_unchanged_and_says_binary():
    m = make("vsftpd")
    login(m)
    assert sent(m.receive(b"TYPE A\r\n", NOW)) == b"200 Switching to ASCII mode.\r\n"
    body = b"#!/bin/sh\nwget http://x/y\r\n\x00\xff\n"
    captured, back = upload(m, b"s.sh", [body[:10], body[10:]])
    assert captured == body and back == body  # ascii_upload/download_enable=NO
    passive(m, port=50005)
    out = m.receive(b"RETR s.sh\r\n", NOW)
    assert sent(out).startswith(b"150 Opening BINARY mode data connection for s.sh (")


def test_iis_type_a_converts_lf_to_crlf_both_ways_and_type_i_does_not():
    m = make("iis")
    login(m)
    assert sent(m.receive(b"TYPE A\r\n", NOW)) == b"200 Type set to A.\r\n"
    captured, back = upload(m, b"s.bat", [b"echo a\necho b\r", b"\necho c\n"])
    assert captured == b"echo a\r\necho b\r\necho c\r\n" == back
    tag = passive(m, port=50006, connect=False)
    m.receive(b"RETR s.bat\r\n", NOW)
    out = m.child(ChildConnected(tag, ("127.0.0.9", 41000)), NOW)
    assert sent(out).startswith(b"150 Opening ASCII mode data connection.\r\n")
    assert sent(m.receive(b"TYPE I\r\n", NOW)) == b"200 Type set to I.\r\n"
    raw = b"MZ\n\x00\n\r\n"
    captured, back = upload(m, b"b.exe", [raw])
    assert captured == raw == back


def test_iis_ascii_download_of_a_seed_file_gets_crlf():
    m = make("iis")
    login(m)
    m.receive(b"TYPE A\r\n", NOW)
    passive(m)
    out = m.receive(b"RETR Public/readme.txt\r\n", NOW)
    body = b"".join(a.data for a in of(out, ChildSend))
    assert body and b"\n" in body and body.count(b"\n") == body.count(b"\r\n")
    assert sent(out).startswith(b"125 Data connection already open; Transfer starting.")


# ------------------------------------------------------------- PASV on IPv6


def test_vsftpd_pasv_on_ipv6_listens_and_says_0_0_0_0_even_with_a_nat_address():
    m = make6("vsftpd", passive_address="203.0.113.7")
    login(m)
    out = m.receive(b"PASV\r\n", NOW)
    (listen,) = of(out, ChildListen)
    out = m.child(ChildListening(listen.tag, "2001:db8::21", 50002), NOW)
    assert sent(out) == b"227 Entering Passive Mode (0,0,0,0,195,82).\r\n"
    out = m.receive(b"EPSV\r\n", NOW)
    (listen,) = of(out, ChildListen)
    assert sent(m.child(ChildListening(listen.tag, "2001:db8::21", 50003), NOW)) == (
        b"229 Entering Extended Passive Mode (|||50003|)\r\n")
    out = m.receive(b"EPSV 2\r\n", NOW)
    assert of(out, ChildListen) and not sent(out)


def test_iis_pasv_on_ipv6_is_refused_and_epsv_works():
    m = make6("iis")
    login(m)
    out = m.receive(b"PASV\r\n", NOW)
    assert sent(out) == b"501 Server cannot accept argument.\r\n" and not of(out, ChildListen)
    assert sent(m.receive(b"EPSV 1\r\n", NOW)) == (
        b"522 Network protocol not supported, use (2)\r\n")
    out = m.receive(b"EPSV\r\n", NOW)
    (listen,) = of(out, ChildListen)
    assert sent(m.child(ChildListening(listen.tag, "2001:db8::21", 50004), NOW)) == (
        b"229 Entering Extended Passive Mode (|||50004|)\r\n")
    v4 = make("iis")
    login(v4)
    assert sent(v4.receive(b"EPSV 2\r\n", NOW)) == (
        b"522 Network protocol not supported, use (1)\r\n")


# ------------------------------------------------------- stalled TLS data


def tls_session(dialect: str) -> FtpSession:
    m = make(dialect, data_tls_timeout=7.5)
    m.receive(b"AUTH TLS\r\n", NOW)
    m.receive(b"PBSZ 0\r\nPROT P\r\n", NOW)
    login(m)
    return m


@pytest.mark.parametrize("dialect", ["vsftpd", "iis"])
def test_data_channels_carry_the_configured_tls_timeout(dialect):
    m = tls_session(dialect)
    (listen,) = of(m.receive(b"PASV\r\n", NOW), ChildListen)
    assert listen.tls and listen.tls_timeout == 7.5
    m.child(ChildListening(listen.tag, "127.0.0.1", 50001), NOW)
    out = m.receive(b"PORT 127,0,0,9,200,1\r\nLIST\r\n", NOW)
    (conn,) = of(out, ChildConnect)
    assert conn.tls and conn.tls_timeout == 7.5


def test_vsftpd_upload_whose_tls_handshake_stalls_gets_421_and_closes():
    m = tls_session("vsftpd")
    tag = passive(m)
    m.receive(b"STOR x.bin\r\n", NOW)
    out = m.child(ChildFailed(tag, "tls handshake timeout"), NOW + 7.5)
    assert sent(out) == b"421 Data timeout. Reconnect. Sorry.\r\n"
    assert not of(out, CaptureEnd)  # nothing arrived: no empty file in the store
    assert of(out, Close)
    assert any(isinstance(a, Emit) and a.name == "protocol.error"
               and "tls handshake timeout" in a.fields["detail"] for a in out)


def test_iis_upload_whose_tls_handshake_stalls_gets_426_and_goes_on():
    m = tls_session("iis")
    tag = passive(m)
    m.receive(b"STOR x.bin\r\n", NOW)
    out = m.child(ChildFailed(tag, "tls handshake timeout"), NOW + 7.5)
    assert sent(out) == b"426 Connection closed; transfer aborted.\r\n"
    assert not of(out, Close)
    assert sent(m.receive(b"NOOP\r\n", NOW)) == b"200 NOOP command successful.\r\n"


@pytest.mark.parametrize("preset,configured,expected", [
    ("debian-12", None, 300.0), ("windows-2008r2", None, 30.0), ("debian-12", 7.5, 7.5)])
def test_data_tls_timeout_is_the_products_unless_configured(tmp_path, preset, configured,
                                                            expected):
    assert FtpConfig().data_tls_timeout is None
    with pytest.raises(ValueError):
        FtpConfig(data_tls_timeout=0)
    assert SERVICE.config_model is FtpConfig  # the key the service really reads
    cfg = configmod.load(extra={"persona": {"preset": preset},
                                "services": {"ftp": {"data_tls_timeout": configured}}})
    m = services.factory("ftp", cfg, tmp_path)(Peer("127.0.0.1", 21, "127.0.0.9", 40000))
    assert m.s.data_tls_timeout == expected


# -------------------------------------------------------- IIS-only verbs


def test_iis_host_lang_clnt_ccc_as_its_feat_promises():
    m = make("iis")
    feat = sent(m.receive(b"FEAT\r\n", NOW))
    assert b" HOST\r\n" in feat and b" LANG EN*\r\n" in feat and b" CCC\r\n" in feat
    out = m.receive(b"HOST web01.example.com\r\nHOST\r\nLANG en-US\r\nLANG fr\r\nLANG\r\n"
                    b"CLNT lftp 4.9\r\nCCC\r\n", NOW)
    assert sent(out) == (b"220 Host accepted.\r\n"
                         b"501 Syntax error in parameters or arguments.\r\n"
                         b"200 LANG command successful.\r\n"
                         b"504 Command not implemented for that parameter.\r\n"
                         b"200 LANG command successful.\r\n"
                         b"200 CLNT command successful.\r\n"
                         b"503 Bad sequence of commands.\r\n")
    assert sent(m.receive(b"USER bob\r\nHOST web01\r\n", NOW)).endswith(
        b"503 Bad sequence of commands.\r\n")
    t = make("iis")
    t.receive(b"AUTH TLS\r\n", NOW)
    assert sent(t.receive(b"CCC\r\n", NOW)) == b"534 Policy requires SSL.\r\n"


def test_vsftpd_does_not_know_the_iis_verbs():
    m = make("vsftpd")
    assert sent(m.receive(b"HOST x\r\n", NOW)) == b"530 Please login with USER and PASS.\r\n"
    login(m)
    assert sent(m.receive(b"HOST x\r\nLANG en\r\nCLNT c\r\nCCC\r\n", NOW)) == (
        b"500 Unknown command.\r\n" * 4)
    no_tls = make("iis", tls=False)
    login(no_tls)
    assert sent(no_tls.receive(b"CCC\r\n", NOW)) == b"500 Command not understood.\r\n"


def test_active_connect_failure_before_the_transfer_still_says_425():
    m = make("vsftpd")
    login(m)
    m.receive(b"PORT 127,0,0,9,200,1\r\n", NOW)
    (conn,) = of(m.receive(b"LIST\r\n", NOW), ChildConnect)
    out = m.child(ChildFailed(conn.tag, "connect failed: refused"), NOW)
    assert sent(out) == b"425 Failed to establish connection.\r\n"
    assert not of(out, Close)
