"""The FTP machine fed bytes: replies per persona, logins, data channels, uploads, bad input."""

from __future__ import annotations

import pytest

from muscipula.machine import (
    CaptureData,
    CaptureEnd,
    ChildClose,
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
    Send,
    StartTLS,
)
from muscipula.protocols.ftp.machine import FtpSession, Setup, strip_telnet
from muscipula.protocols.ftp.policy import Account, LoginPolicy
from muscipula.protocols.ftp.replies import iis, vsftpd
from muscipula.protocols.ftp.vfs import SeedFiles, SeedLimits, default_tree

NOW = 1_790_000_000.0
PEER = Peer("127.0.0.1", 21, "127.0.0.9", 40000)


def make(dialect: str = "vsftpd", policy: LoginPolicy | None = None, **kw) -> FtpSession:
    d = vsftpd() if dialect == "vsftpd" else iis()
    setup = Setup(dialect=d, policy=policy or LoginPolicy("accept_all", [], True, 3),
                  seed=default_tree(d.name, NOW - 86400 * 30, "web01"),
                  files=SeedFiles(None, SeedLimits()), passive_ports=(50000, 50010),
                  idle_timeout=d.idle_timeout,
                  max_login_fails=d.max_login_fails, **kw)
    m = FtpSession(setup, PEER)
    m.start(NOW)
    return m


def sent(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def emitted(actions, name: str) -> list[dict]:
    return [dict(a.fields) for a in actions if isinstance(a, Emit) and a.name == name]


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def login(m: FtpSession, user: bytes = b"admin", pw: bytes = b"secret") -> None:
    out = m.receive(b"USER " + user + b"\r\nPASS " + pw + b"\r\n", NOW)
    assert sent(out).splitlines()[-1].startswith(b"230")


def passive(m: FtpSession, port: int = 50003, connect: bool = True) -> str:
    out = m.receive(b"PASV\r\n", NOW)
    (listen,) = of(out, ChildListen)
    assert listen.ports == (50000, 50010)
    assert sent(out) == b""  # 227 waits for the listener's port
    out = m.child(ChildListening(listen.tag, "127.0.0.1", port), NOW)
    assert sent(out) == b"227 Entering Passive Mode (127,0,0,1,%d,%d).\r\n" % (port >> 8,
                                                                              port & 255)
    if connect:
        m.child(ChildConnected(listen.tag, ("127.0.0.9", 41000)), NOW)
    return listen.tag


def test_banners_and_feat_per_persona():
    v = make("vsftpd")
    assert sent(v.start(NOW)) == b"220 (vsFTPd 3.0.3)\r\n"
    assert sent(v.receive(b"FEAT\r\n", NOW)) == (
        b"211-Features:\r\n AUTH TLS\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n PBSZ\r\n PROT\r\n"
        b" REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n")
    i = make("iis")
    assert sent(i.start(NOW)) == b"220 Microsoft FTP Service\r\n"
    feat = sent(i.receive(b"FEAT\r\n", NOW))
    assert feat.startswith(b"211-Extended features supported:\r\n LANG EN*\r\n")
    assert b" AUTH TLS;TLS-C;SSL;TLS-P;\r\n" in feat and feat.endswith(b"211 END\r\n")
    # SYST before login: IIS answers, vsftpd wants a login
    assert sent(i.receive(b"SYST\r\n", NOW)) == b"215 Windows_NT\r\n"
    assert sent(v.receive(b"SYST\r\n", NOW)) == b"530 Please login with USER and PASS.\r\n"


@pytest.mark.parametrize("dialect,expected", [
    ("vsftpd", [b"331 Please specify the password.", b"530 Login incorrect.",
                b"503 Login with USER first.", b"530 Please login with USER and PASS.",
                b"500 Unknown command."]),
    ("iis", [b"331 Password required for bob.", b"530 User cannot log in.",
             b"503 Login with USER first.", b"530 Please login with USER and PASS.",
             b"500 Command not understood."]),
])
def test_login_errors_are_worded_as_the_product(dialect, expected):
    m = make(dialect)
    out = m.receive(b"USER bob\r\nPASS\r\nPASS again\r\nPWD\r\n", NOW)
    lines = sent(out).splitlines()
    assert lines == expected[:4]
    logins = emitted(out, "login")
    assert logins == [{"username": "bob", "password": "", "success": False, "method": "ftp",
                       "extra": None}]
    commands = emitted(out, "ftp.command")
    assert [c["command"] for c in commands] == ["USER", "PASS", "PASS", "PWD"]
    assert commands[0]["arguments"] == ["bob"]
    login(m, b"bob", b"pw")
    assert sent(m.receive(b"XYZZY now\r\n", NOW)) == expected[4] + b"\r\n"


def test_vsftpd_closes_after_three_failed_logins():
    m = make("vsftpd", LoginPolicy("list", [Account("root", "toor")], False, 0))
    out = m.receive(b"USER a\r\nPASS b\r\nUSER a\r\nPASS c\r\nUSER a\r\nPASS d\r\n", NOW)
    assert sent(out).count(b"530 Login incorrect.") == 3
    assert of(out, Close)
    assert m.receive(b"USER root\r\n", NOW) == []


def test_policies():
    anon_only = LoginPolicy("anonymous", [], True, 0)
    assert anon_only.check("1.2.3.4", "anonymous", "x@y") and anon_only.check("a", "FTP", "")
    assert not anon_only.check("1.2.3.4", "root", "root")
    listed = LoginPolicy("list", [Account("root", "toor")], False, 0)
    assert listed.check("h", "root", "toor") and not listed.check("h", "root", "x")
    assert not listed.check("h", "anonymous", "x")
    refuse = LoginPolicy("refuse_first", [], True, 2, max_addresses=2)
    results = [refuse.check("10.0.0.1", "admin", "pw") for _ in range(4)]
    assert results == [False, False, True, True]
    assert not refuse.check("10.0.0.2", "admin", "pw")  # counted per address
    refuse.check("10.0.0.3", "a", "b")
    assert len(refuse.tries) == 2  # bounded tally
    accept = LoginPolicy("accept_all", [], False, 0)
    assert accept.check("h", "x", "y") and not accept.check("h", "x", "")
    assert not accept.check("h", "anonymous", "a@b")


def test_vsftpd_anonymous_only_refuses_named_users_at_user():
    m = make("vsftpd", LoginPolicy("anonymous", [], True, 0))
    assert sent(m.receive(b"USER root\r\n", NOW)) == b"530 This FTP server is anonymous only.\r\n"
    out = m.receive(b"USER anonymous\r\nPASS me@\r\n", NOW)
    assert sent(out).endswith(b"230 Login successful.\r\n")


def test_passive_list_then_upload_shows_in_listing_and_captures():
    m = make("vsftpd")
    login(m)
    tag = passive(m)
    out = m.receive(b"LIST\r\n", NOW)
    assert sent(out) == (b"150 Here comes the directory listing.\r\n"
                         b"226 Directory send OK.\r\n")
    body = b"".join(a.data for a in of(out, ChildSend))
    assert b" pub\r\n" in body and body.startswith(b"drwxr-xr-x    2 0        0   ")
    assert of(out, ChildClose)[0].tag == tag
    tag = passive(m, 50004)
    out = m.receive(b"STOR /upload/x.exe\r\n", NOW)
    assert sent(out) == b"150 Ok to send data.\r\n"
    assert emitted(out, "download.offer") == [
        {"url": "ftp://admin@127.0.0.1/upload/x.exe", "source": "ftp"}]
    out = m.child(ChildData(tag, b"MZ\x90\x00"), NOW)
    out += m.child(ChildData(tag, b"rest"), NOW)
    assert [a.data for a in of(out, CaptureData)] == [b"MZ\x90\x00", b"rest"]
    stream = of(out, CaptureData)[0].stream
    out = m.child(ChildClosed(tag), NOW)
    assert of(out, CaptureEnd) == [CaptureEnd(stream, "ftp://admin@127.0.0.1/upload/x.exe")]
    assert sent(out) == b"226 Transfer complete.\r\n"
    passive(m, 50005)
    out = m.receive(b"LIST upload\r\n", NOW)
    assert b"1000            8 " in b"".join(a.data for a in of(out, ChildSend))
    assert sent(m.receive(b"SIZE upload/x.exe\r\n", NOW)) == b"213 8\r\n"
    # the upload is served back from memory
    tag = passive(m, 50006)
    out = m.receive(b"TYPE I\r\nRETR upload/x.exe\r\n", NOW)
    assert b"150 Opening BINARY mode data connection for upload/x.exe (8 bytes)." in sent(out)
    assert b"".join(a.data for a in of(out, ChildSend)) == b"MZ\x90\x00rest"
    # another session never sees it
    other = make("vsftpd")
    login(other)
    assert sent(other.receive(b"SIZE upload/x.exe\r\n", NOW)) == (
        b"550 Could not get file size.\r\n")


def test_commands_wait_for_the_data_connection_and_pipelined_lines_queue():
    m = make("iis")
    login(m)
    tag = passive(m, connect=False)
    out = m.receive(b"NLST\r\nPWD\r\n", NOW)
    assert sent(out) == b""  # waits for the client to connect
    out = m.child(ChildConnected(tag, ("127.0.0.9", 41000)), NOW)
    assert sent(out) == (b"150 Opening ASCII mode data connection.\r\n"
                         b"226 Transfer complete.\r\n"
                         b'257 "/" is current directory.\r\n')
    assert b"".join(a.data for a in of(out, ChildSend)) == b"Backup\r\nPublic\r\nUpload\r\n"


def test_data_channel_nobody_connects_to_times_out():
    m = make("vsftpd")
    login(m)
    tag = passive(m, connect=False)
    m.receive(b"RETR pub/README\r\n", NOW)
    out = m.child(ChildFailed(tag, "timeout"), NOW + 30)
    assert sent(out) == b"425 Failed to establish connection.\r\n"
    assert sent(m.receive(b"LIST\r\n", NOW)) == b"425 Use PORT or PASV first.\r\n"


def test_active_mode_and_bounce():
    m = make("vsftpd")
    login(m)
    out = m.receive(b"PORT 10,1,2,3,200,1\r\n", NOW)
    assert sent(out) == b"500 Illegal PORT command.\r\n"
    assert emitted(out, "ftp.bounce") == [{"command": "PORT", "host": "10.1.2.3",
                                           "port": 51201,
                                           "reason": "not the client's address"}]
    assert not of(out, ChildConnect)
    out = m.receive(b"EPRT |1|127.0.0.9|80|\r\n", NOW)
    assert sent(out) == b"500 Illegal EPRT command.\r\n" and emitted(out, "ftp.bounce")
    out = m.receive(b"PORT 127,0,0,9,200,1\r\n", NOW)
    assert sent(out) == b"200 PORT command successful. Consider using PASV.\r\n"
    out = m.receive(b"RETR pub/README\r\n", NOW)
    (conn,) = of(out, ChildConnect)
    assert (conn.host, conn.port) == ("127.0.0.9", 51201)
    out = m.child(ChildConnected(conn.tag, ("127.0.0.9", 51201)), NOW)
    # TYPE A is the default, but vsftpd (ascii_download_enable=NO) sends bytes as they are
    assert sent(out).startswith(b"150 Opening BINARY mode data connection for pub/README (")
    assert b"FTP area of web01" in b"".join(a.data for a in of(out, ChildSend))
    # IIS connects at PORT time and answers once connected
    i = make("iis")
    login(i)
    out = i.receive(b"PORT 127,0,0,9,4,1\r\n", NOW)
    (conn,) = of(out, ChildConnect)
    assert sent(out) == b""
    assert sent(i.child(ChildConnected(conn.tag, ("127.0.0.9", 1025)), NOW)) == (
        b"200 PORT command successful.\r\n")
    assert sent(i.receive(b"PORT 192,168,1,1,4,1\r\n", NOW)) == (
        b"501 Server cannot accept argument.\r\n")


def test_epsv_and_nat_address():
    d = vsftpd()
    m = make("vsftpd", passive_address="203.0.113.7")
    login(m)
    out = m.receive(b"PASV\r\n", NOW)
    tag = of(out, ChildListen)[0].tag
    assert sent(m.child(ChildListening(tag, "127.0.0.1", 50001), NOW)) == (
        b"227 Entering Passive Mode (203,0,113,7,195,81).\r\n")
    out = m.receive(b"EPSV\r\n", NOW)
    assert of(out, ChildClose)[0].tag == tag  # the old channel goes
    tag = of(out, ChildListen)[0].tag
    assert sent(m.child(ChildListening(tag, "127.0.0.1", 50002), NOW)) == (
        b"229 Entering Extended Passive Mode (|||50002|)\r\n")
    assert sent(m.receive(b"EPSV 2\r\n", NOW)) == b"522 Bad network protocol.\r\n"
    assert sent(m.receive(b"EPSV ALL\r\nPASV\r\n", NOW)) == (
        d.line("epsv_all") + d.line("epsv_all_only"))


def test_auth_tls_hands_over_buffered_bytes_and_prot_p_asks_for_tls_data():
    m = make("vsftpd")
    out = m.receive(b"AUTH TLS\r\n\x16\x03\x01hello", NOW)
    assert sent(out) == b"234 Proceed with negotiation.\r\n"
    assert of(out, StartTLS) == [StartTLS(b"\x16\x03\x01hello")]
    out = m.receive(b"PBSZ 0\r\nPROT P\r\n", NOW)
    assert sent(out) == b"200 PBSZ set to 0.\r\n200 PROT now Private.\r\n"
    login(m)
    out = m.receive(b"PASV\r\n", NOW)
    assert of(out, ChildListen)[0].tls is True
    plain = make("iis")
    assert sent(plain.receive(b"PROT P\r\n", NOW)) == b"503 Bad sequence of commands.\r\n"


def test_overlong_line_vsftpd_closes_iis_answers_and_goes_on():
    m = make("vsftpd")
    out = m.receive(b"USER " + b"A" * 5000, NOW)
    assert sent(out) == b"500 Input line too long.\r\n"
    assert of(out, Close) and emitted(out, "protocol.error")
    assert m.buffered() == 0
    i = make("iis")
    out = i.receive(b"USER " + b"A" * 5000, NOW)
    assert sent(out) == b"501 Syntax error in parameters or arguments.\r\n"
    assert i.buffered() == 0
    out = i.receive(b"B" * 3000 + b"\r\nSYST\r\n", NOW)  # rest of the long line is dropped
    assert sent(out) == b"215 Windows_NT\r\n"


def test_binary_junk_and_telnet_iac():
    m = make("vsftpd")
    login(m)
    out = m.receive(b"\x00\x01\xfe\xfa\x80junk\r\n", NOW)
    assert sent(out) == b"500 Unknown command.\r\n"
    assert emitted(out, "protocol.error")
    out = m.receive(b"\xff\xf4\xff\xf2ABOR\r\n", NOW)
    assert sent(out) == b"225 No transfer to ABOR.\r\n"
    i = make("iis")
    out = i.receive(b"\xff\xfb\x01SY\xff\xf1ST\r\n", NOW)
    assert sent(out) == b"215 Windows_NT\r\n"
    assert emitted(out, "protocol.error")[0]["detail"] == "telnet commands in command line"
    assert strip_telnet(b"a\xff\xffb\xff\xfd\x18c") == (b"a\xffbc", True)


def test_abor_during_upload_ends_the_capture():
    m = make("vsftpd")
    login(m)
    tag = passive(m)
    m.receive(b"STOR big.bin\r\n", NOW)
    m.child(ChildData(tag, b"x" * 100), NOW)
    out = m.receive(b"ABOR\r\n", NOW)
    ends = of(out, CaptureEnd)
    assert len(ends) == 1 and ends[0].complete is False
    assert sent(out) == b"426 Failure reading network stream.\r\n226 ABOR successful.\r\n"
    assert sent(m.receive(b"NOOP\r\n", NOW)) == b"200 NOOP ok.\r\n"


def test_closing_mid_upload_keeps_what_arrived():
    m = make("iis")
    login(m)
    tag = passive(m)
    m.receive(b"STOR a.bin\r\n", NOW)
    m.child(ChildData(tag, b"partial"), NOW)
    ends = of(m.closed(NOW), CaptureEnd)
    assert len(ends) == 1 and not ends[0].complete


@pytest.mark.parametrize("dialect", ["vsftpd", "iis"])
def test_filesystem_changes_stay_in_the_session(dialect):
    m = make(dialect)
    login(m)
    out = m.receive(b"MKD newdir\r\nCWD newdir\r\nPWD\r\nCDUP\r\nRNFR newdir\r\nRNTO other\r\n"
                    b"RMD other\r\nDELE nothing\r\nRNTO x\r\nMKD upload\r\n", NOW)
    lines = sent(out).splitlines()
    assert lines[0].startswith(b"257 ") and lines[2].startswith(b'257 "/newdir"')
    assert lines[1].startswith(b"250") and lines[3].startswith(b"250")
    assert lines[4].startswith(b"350") and lines[5].startswith(b"250")
    assert lines[6].startswith(b"250") and lines[7].startswith(b"550")
    assert lines[8].startswith(b"503") and lines[9].startswith(b"550")
    assert sent(m.receive(b"CWD /../../etc\r\n", NOW)).startswith(b"550")
    assert sent(m.receive(b"CWD ../../..\r\nPWD\r\n", NOW)).endswith(b'"/" is current '
                                                                     b"directory.\r\n"
                                                                     if dialect == "iis" else
                                                                     b'"/" is the current '
                                                                     b"directory\r\n")


def test_iis_names_are_case_insensitive_and_mlsd_is_answered():
    m = make("iis")
    login(m)
    assert sent(m.receive(b"CWD PUBLIC\r\nPWD\r\n", NOW)).endswith(
        b'257 "/Public" is current directory.\r\n')
    tag = passive(m)
    out = m.receive(b"MLSD\r\n", NOW)
    body = b"".join(a.data for a in of(out, ChildSend))
    assert body.startswith(b"type=cdir;") and b"type=file;" in body and b"; readme.txt\r\n" in body
    assert of(out, ChildClose)[0].tag == tag
    v = make("vsftpd")
    login(v)
    assert sent(v.receive(b"MLSD\r\n", NOW)) == b"500 Unknown command.\r\n"


def test_idle_timeout_says_421():
    m = make("vsftpd")
    out = m.timer(NOW + 301)
    assert sent(out) == b"421 Timeout.\r\n" and of(out, Close)
    i = make("iis")
    assert sent(i.timer(NOW + 121)) == (
        b"421 Timeout (120 seconds): closing control connection.\r\n")


def test_pipelined_input_while_waiting_is_bounded():
    m = make("vsftpd", max_pending=1024)
    login(m)
    m.receive(b"PASV\r\n", NOW)
    out = m.receive(b"NOOP\r\n" * 2000, NOW)
    assert of(out, Close) and emitted(out, "protocol.error")


def test_vsftpd_refuses_http_verbs():
    m = make("vsftpd")
    login(m)
    out = m.receive(b"GET / HTTP/1.1\r\n", NOW)
    assert sent(out) == b"500 HTTP protocol commands not allowed.\r\n" and of(out, Close)


def test_undecodable_names_survive_into_urls_and_listings():
    m = make("vsftpd")
    login(m, b"r\xffoot", b"pw")
    tag = passive(m)
    out = m.receive(b"STOR ev\xe9l.bin\r\n", NOW)
    (offer,) = emitted(out, "download.offer")
    assert offer["url"] == "ftp://r%FFoot@127.0.0.1/ev%E9l.bin"
    m.child(ChildClosed(tag), NOW)
    passive(m, 50007)
    out = m.receive(b"NLST\r\n", NOW)
    assert b"ev\xe9l.bin\r\n" in b"".join(a.data for a in of(out, ChildSend))
    login_fields = emitted(make().receive(b"USER \xff\r\nPASS \xfe\r\n", NOW), "login")
    assert login_fields[0]["username"] == "\\xff" and login_fields[0]["password"] == "\\xfe"


def test_kept_upload_bytes_and_early_data_are_bounded():
    m = make("vsftpd", max_kept_upload_bytes=10, max_pending=256)
    login(m)
    tag = passive(m)
    m.child(ChildData(tag, b"E" * 1000), NOW)  # before any STOR: only max_pending kept
    assert m.buffered() == 256
    m.receive(b"STOR big\r\n", NOW)
    out = m.child(ChildData(tag, b"x" * 50), NOW)
    assert [len(a.data) for a in of(out, CaptureData)] == [50]
    m.child(ChildClosed(tag), NOW)
    assert m.buffered() == 0  # too big to keep: listed, but not served back
    assert sent(m.receive(b"SIZE big\r\n", NOW)) == b"213 306\r\n"
    passive(m, 50008)
    assert sent(m.receive(b"RETR big\r\n", NOW)) == b"550 Failed to open file.\r\n"


def test_configured_seed_directory(tmp_path):
    from muscipula.protocols.ftp.vfs import load_dir

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "report.pdf").write_bytes(b"%PDF-1.4 x")
    (tmp_path / "link").symlink_to("/etc/passwd")
    limits = SeedLimits(max_entries=10, max_depth=4, max_file_bytes=100)
    seed = load_dir(tmp_path, limits, fold=False)
    assert set(seed.children) == {"docs"}  # symlinks are never followed
    d = vsftpd()
    setup = Setup(dialect=d, policy=LoginPolicy("accept_all", [], True, 3), seed=seed,
                  files=SeedFiles(tmp_path, limits), idle_timeout=300.0,
                  passive_ports=(50000, 50010))
    m = FtpSession(setup, PEER)
    login(m)
    passive(m)
    out = m.receive(b"RETR docs/report.pdf\r\n", NOW)
    assert b"".join(a.data for a in of(out, ChildSend)) == b"%PDF-1.4 x"
    assert sent(m.receive(b"DELE docs/report.pdf\r\n", NOW)) == (
        b"250 Delete operation successful.\r\n")
    assert (tmp_path / "docs" / "report.pdf").exists()  # only the session's view changed
