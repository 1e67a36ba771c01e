"""SMB machine fed bytes: NetBIOS framing, SMB1/SMB2 negotiate, NTLM login, tree connect."""

from __future__ import annotations

import re
import struct
import time
from pathlib import Path

from muscipula import config as C
from muscipula import services
from muscipula.machine import Close, Emit, Peer, Send
from muscipula.protocols import ntlm
from muscipula.protocols.smb import client as K
from muscipula.protocols.smb import spnego
from muscipula.protocols.smb import wire as W

PEER = Peer("127.0.0.1", 445, "10.1.2.3", 40000)
NOW = 1_700_000_000.0


def make(tmp_path: Path, preset: str = "windows-2008r2", **svc):
    cfg = C.load(extra={"persona": {"preset": preset}, "services": {"smb": svc}})
    ctx = services.context("smb", cfg, tmp_path)
    return services.get("smb").build(ctx)(PEER), ctx


def messages(actions) -> list[bytes]:
    data = b"".join(a.data for a in actions if isinstance(a, Send))
    out = []
    while len(data) >= 4:
        length = int.from_bytes(data[1:4], "big")
        out.append(data[4:4 + length])
        data = data[4 + length:]
    return out


def emits(actions, name):
    return [a.fields for a in actions if isinstance(a, Emit) and a.name == name]


def status2(msg: bytes) -> int:
    return struct.unpack_from("<I", msg, 8)[0]


def smb2_login(m, user="admin", domain="CORP"):
    """NEGOTIATE and both SESSION_SETUP legs; (session id, challenge, all actions)."""
    acts = m.receive(K.nbss(K.smb2_negotiate()), NOW)
    acts += m.receive(K.nbss(K.smb2_session_setup(K.spnego_init(K.ntlm_negotiate()))), NOW)
    leg = messages(acts)[-1]
    assert status2(leg) == W.MORE_PROCESSING_REQUIRED
    sid = struct.unpack_from("<Q", leg, 40)[0]
    token = spnego.ntlm_token(leg[72:])
    assert token is not None and token[8:12] == b"\x02\0\0\0"
    challenge = token[24:32]
    auth = K.ntlm_authenticate(user, domain, "WS01", K.NT_V2)
    acts2 = m.receive(K.nbss(K.smb2_session_setup(K.spnego_resp(auth), mid=2, sid=sid)), NOW)
    return sid, challenge, token, acts + acts2


def test_smb2_negotiate_windows(tmp_path):
    m, ctx = make(tmp_path)
    reply = messages(m.receive(K.nbss(K.smb2_negotiate((0x0202, 0x0210, 0x0300))), NOW))[0]
    body = reply[64:]
    size, mode, dialect, _n, guid, caps, transact, read, write = struct.unpack_from(
        "<HHHH16sIIII", body)
    assert (size, mode, dialect, caps) == (65, 1, 0x0210, 0x7)
    assert (transact, read, write) == (1 << 20, 1 << 20, 1 << 20)
    assert guid == ctx.persona.guid("smb.server").bytes_le
    assert guid != bytes.fromhex("0bff6538547e6c42a43e12d211971644")  # the reference's
    systime, boot = struct.unpack_from("<QQ", body, 40)
    assert systime == W.filetime(NOW) and 0 < boot < W.filetime(time.time() - 86400)
    assert spnego.NTLMSSP_OID and b"\x2b\x06\x01\x04\x01\x82\x37\x02\x02\x0a" in body


def test_smb2_negotiate_samba_311_contexts(tmp_path):
    m, _ = make(tmp_path, "debian-12")
    ctx = (struct.pack("<HHI", 1, 38, 0) + struct.pack("<HHH", 1, 32, 1) + bytes(32)
           + bytes(2) + struct.pack("<HHI", 2, 6, 0) + struct.pack("<HHH", 2, 1, 2))
    req = K.smb2_negotiate((0x0202, 0x0210, 0x0300, 0x0302, 0x0311), ctx, 2)
    reply = messages(m.receive(K.nbss(req), NOW))[0]
    _s, _mode, dialect, count = struct.unpack_from("<HHHH", reply, 64)
    assert (dialect, count) == (0x0311, 2)
    offset = struct.unpack_from("<I", reply, 64 + 60)[0]
    assert offset % 8 == 0 and struct.unpack_from("<HH", reply, offset) == (1, 38)
    assert struct.unpack_from("<QQ", reply, 64 + 40)[1] == 0  # Samba: no start time


def test_smb1_negotiate_nt_lm_extended(tmp_path):
    m, ctx = make(tmp_path)
    reply = messages(m.receive(K.nbss(K.smb1_negotiate()), NOW))[0]
    assert reply[:4] == W.SMB1_MAGIC and reply[32] == 17
    index, mode, mpx, vcs, buf, _raw, _k, caps = struct.unpack_from("<HBHHIIII", reply, 33)
    assert (index, mode, mpx, vcs, buf, caps) == (2, 3, 50, 1, 16644, 0x8001E3FD)
    assert struct.unpack_from("<H", reply, 28)[0] == 0  # TID echoed, not 0xFFFF
    assert reply[33 + 33] == 0  # challenge length 0: extended security
    data = reply[33 + 34 + 2:]
    assert data[:16] == ctx.persona.guid("smb.server").bytes_le
    assert data[16] == 0x60  # SPNEGO NegTokenInit


def test_smb1_negotiate_basic_security_has_fresh_challenge(tmp_path):
    m1, _ = make(tmp_path)
    m2, _ = make(tmp_path)
    r1 = messages(m1.receive(K.nbss(K.smb1_negotiate(flags2=0xC003)), NOW))[0]
    r2 = messages(m2.receive(K.nbss(K.smb1_negotiate(flags2=0xC003)), NOW))[0]
    assert r1[33 + 33] == 8 and r1[69:77] != r2[69:77]
    assert bytes.fromhex("a4dfe80bf5c61e3a") not in (r1[69:77], r2[69:77])


def test_smb1_multi_protocol_negotiate_hands_over_to_smb2(tmp_path):
    m, _ = make(tmp_path)
    reply = messages(m.receive(K.nbss(K.smb1_negotiate(("NT LM 0.12", "SMB 2.002",
                                                         "SMB 2.???"))), NOW))[0]
    assert reply[:4] == W.SMB2_MAGIC and struct.unpack_from("<H", reply, 68)[0] == 0x02FF
    m2, _ = make(tmp_path)
    reply = messages(m2.receive(K.nbss(K.smb1_negotiate(("NT LM 0.12", "SMB 2.002"))),
                                NOW))[0]
    assert struct.unpack_from("<H", reply, 68)[0] == 0x0202


def test_samba_refuses_smb1_only_client(tmp_path):
    m, _ = make(tmp_path, "debian-12")
    acts = m.receive(K.nbss(K.smb1_negotiate()), NOW)
    reply = messages(acts)[0]
    assert reply[:4] == W.SMB1_MAGIC and reply[32:35] == b"\x01\xff\xff"
    assert any(isinstance(a, Close) for a in acts)


def test_smb2_session_setup_records_ntlmv2_line(tmp_path):
    m, ctx = make(tmp_path)
    sid, challenge, token, acts = smb2_login(m)
    assert ctx.persona.netbios_name.encode("utf-16-le") in token
    final = messages(acts)[-1]
    assert status2(final) == W.SUCCESS and struct.unpack_from("<Q", final, 40)[0] == sid
    login = emits(acts, "login")[0]
    assert login["username"] == "CORP\\admin" and login["success"] is True
    assert login["extra"]["hash"] == (f"admin::CORP:{challenge.hex()}:{K.NT_V2[:16].hex()}:"
                                      f"{K.NT_V2[16:].hex()}")
    assert login["extra"]["workstation"] == "WS01"
    cmds = emits(acts, "smb.command")
    assert [c["command"] for c in cmds] == ["NEGOTIATE", "SESSION_SETUP", "SESSION_SETUP"]
    # a fresh challenge per session
    m2, _ = make(tmp_path)
    assert smb2_login(m2)[1] != challenge


def test_smb2_login_policy_list_refuses(tmp_path):
    m, _ = make(tmp_path, login={"mode": "list", "users": {"bob": "x"}})
    _sid, _c, _t, acts = smb2_login(m, user="mallory")
    assert status2(messages(acts)[-1]) == W.LOGON_FAILURE
    assert emits(acts, "login")[0]["success"] is False


def test_smb2_tree_connect_statuses(tmp_path):
    m, _ = make(tmp_path, shares={"data": "disk"})
    sid, _c, _t, _a = smb2_login(m)
    want = {"IPC$": W.SUCCESS, "ADMIN$": W.ACCESS_DENIED, "C$": W.ACCESS_DENIED,
            "DATA": W.SUCCESS, "nope": W.BAD_NETWORK_NAME}
    for share, status in want.items():
        reply = messages(m.receive(K.nbss(K.smb2_tree_connect(f"\\\\srv\\{share}", sid=sid)),
                                   NOW))[0]
        assert status2(reply) == status, share
    ipc = messages(m.receive(K.nbss(K.smb2_tree_connect("\\\\srv\\IPC$", sid=sid)), NOW))[0]
    assert ipc[64 + 2] == 2  # pipe share
    tid = struct.unpack_from("<I", ipc, 36)[0]
    acts = m.receive(K.nbss(K.smb2(0x0B, bytes(56), sid=sid, tid=tid)), NOW)  # IOCTL
    assert status2(messages(acts)[0]) == W.FILE_CLOSED  # on a handle never opened
    acts = m.receive(K.nbss(K.smb2(0x12, bytes(24), sid=sid, tid=tid)), NOW)  # OPLOCK_BREAK
    assert status2(messages(acts)[0]) == W.NOT_SUPPORTED
    assert emits(acts, "smb.unsupported")[0]["command"] == "OPLOCK_BREAK"
    acts = m.receive(K.nbss(K.smb2(4, struct.pack("<HH", 4, 0), sid=sid, tid=tid)), NOW)
    assert status2(messages(acts)[0]) == W.SUCCESS
    acts = m.receive(K.nbss(K.smb2(2, struct.pack("<HH", 4, 0), sid=sid)), NOW)  # LOGOFF
    assert status2(messages(acts)[0]) == W.SUCCESS
    acts = m.receive(K.nbss(K.smb2_tree_connect("\\\\srv\\IPC$", sid=sid)), NOW)
    assert status2(messages(acts)[0]) == W.USER_SESSION_DELETED


def test_smb2_admin_shares_by_policy(tmp_path):
    m, _ = make(tmp_path, admin_shares=True)
    sid, _c, _t, _a = smb2_login(m)
    reply = messages(m.receive(K.nbss(K.smb2_tree_connect("\\\\srv\\C$", sid=sid)), NOW))[0]
    assert status2(reply) == W.SUCCESS and reply[66] == 1


def test_smb1_session_setup_and_tree_connect(tmp_path):
    m, _ = make(tmp_path)
    m.receive(K.nbss(K.smb1_negotiate()), NOW)
    leg = messages(m.receive(K.nbss(K.smb1_session_setup(K.spnego_init(K.ntlm_negotiate()))),
                             NOW))[0]
    assert struct.unpack_from("<I", leg, 5)[0] == W.MORE_PROCESSING_REQUIRED
    uid = struct.unpack_from("<H", leg, 28)[0]
    assert uid and "Windows Server 2008 R2".encode("utf-16-le") in leg
    auth = K.ntlm_authenticate("", "", "", b"", b"\0")
    acts = m.receive(K.nbss(K.smb1_session_setup(K.spnego_resp(auth), uid=uid)), NOW)
    assert struct.unpack_from("<I", messages(acts)[0], 5)[0] == W.SUCCESS
    assert emits(acts, "login")[0]["extra"]["anonymous"] is True
    reply = messages(m.receive(K.nbss(K.smb1_tree_connect("\\\\SRV\\IPC$", uid=uid)), NOW))[0]
    assert struct.unpack_from("<I", reply, 5)[0] == W.SUCCESS and b"IPC\0" in reply
    reply = messages(m.receive(K.nbss(K.smb1_tree_connect("\\\\SRV\\ADMIN$", uid=uid)),
                               NOW))[0]
    assert struct.unpack_from("<I", reply, 5)[0] == W.ACCESS_DENIED
    reply = messages(m.receive(K.nbss(K.smb1_tree_connect("\\\\SRV\\IPC$", uid=0x1234)),
                               NOW))[0]
    assert struct.unpack_from("<I", reply, 5)[0] == W.SMB_BAD_UID


def test_netbios_session_request_on_139(tmp_path):
    m, _ = make(tmp_path)
    acts = m.receive(K.nbss(b"\x20" * 68, 0x81), NOW)
    assert [a.data for a in acts if isinstance(a, Send)] == [b"\x82\0\0\0"]


def test_max_message_bound_closes(tmp_path):
    m, _ = make(tmp_path, max_message=1024)
    acts = m.receive(b"\0\0\x08\x00" + b"\xfeSMB", NOW)
    assert any(isinstance(a, Close) for a in acts)
    assert emits(acts, "protocol.error")[0]["detail"] == "message too long"
    assert m.buffered() == 0
    m2, _ = make(tmp_path, max_message=1024)
    m2.receive(b"\0\0\x04\x00" + b"\xfeSMB" * 100, NOW)  # within the bound: held
    assert 0 < m2.buffered() <= 1024 + 4


def test_malformed_input_closes_with_protocol_error(tmp_path):
    for junk in (K.nbss(b"GET / HTTP/1.0\r\n\r\n"), b"\x99\0\0\x01x", K.nbss(b"\xfeSMB\x40")):
        m, _ = make(tmp_path)
        acts = m.receive(junk, NOW)
        assert emits(acts, "protocol.error"), junk
    m, _ = make(tmp_path)
    acts = m.receive(K.nbss(b"\xfeSMB\x40\0"), NOW)
    assert emits(acts, "protocol.error")
    # truncated SPNEGO and NTLM never raise
    m, _ = make(tmp_path)
    m.receive(K.nbss(K.smb2_negotiate()), NOW)
    for blob in (b"\x60\x82\xff\xff", b"\xa1\x05\x30\x03\xa2\x01", b"NTLMSSP\0\x03\0\0\0",
                 b"NTLMSSP\0\x01"):
        acts = m.receive(K.nbss(K.smb2_session_setup(blob)), NOW)
        assert status2(messages(acts)[0]) in (W.LOGON_FAILURE, W.INVALID_PARAMETER,
                                              W.MORE_PROCESSING_REQUIRED)


def test_ntlmv1_and_shared_module(tmp_path):
    auth = K.ntlm_authenticate("u", "D", "H", bytes(range(24)), bytes(24))
    info = ntlm.parse_authenticate(auth, b"\x11" * 8)
    assert info["hash"] == f"u::D:{bytes(24).hex()}:{bytes(range(24)).hex()}:{'11' * 8}"
    assert info["hash_type"] == "netntlmv1"
    from muscipula.protocols.mssql import ntlm as mssql_ntlm
    assert mssql_ntlm.parse_authenticate is ntlm.parse_authenticate


def test_no_reference_giveaways_on_the_wire(tmp_path):
    m, _ = make(tmp_path)
    acts = m.receive(K.nbss(K.smb1_negotiate()), NOW)
    raw = b"".join(a.data for a in acts if isinstance(a, Send))
    assert b"HOMEUSER".lower() not in raw.lower() and b"\xfd\xe3\x00\x80" not in raw
    m2, _ = make(tmp_path)
    _sid, _c, _token, acts = smb2_login(m2)
    raw = b"".join(a.data for a in acts if isinstance(a, Send)).lower()
    for word in (b"dionaea", b"muscipula", b"honeypot", b"python"):
        assert word not in raw and word.decode().encode("utf-16-le") not in raw


def test_short_dialect_lists_and_odd_contexts_are_answered_not_raised(tmp_path):
    import struct

    from muscipula.protocols.smb import client as K
    from muscipula.protocols.smb import wire as W

    m, _ = make(tmp_path)
    req = K.smb2_negotiate((0x0202, 0x0210))[:-1]  # DialectCount 2, three bytes of dialects
    msgs = messages(m.receive(K.nbss(req), NOW))
    assert msgs and status2(msgs[0]) != W.SUCCESS
    m, _ = make(tmp_path, "debian-12")
    ctx = (struct.pack("<HHI", 1, 38, 0) + struct.pack("<HHH", 1, 32, 1) + bytes(32) + bytes(2)
           + struct.pack("<HHI", 2, 5, 0) + struct.pack("<HHH", 2, 1, 2)[:5])  # 5-byte data
    assert messages(m.receive(K.nbss(K.smb2_negotiate((0x0202, 0x0311), ctx, 2)), NOW))


def test_a_short_nt_response_is_no_guest_pass(tmp_path):
    from muscipula.protocols.smb import client as K
    from muscipula.protocols.smb import wire as W

    for nt, want in ((bytes(7), W.LOGON_FAILURE), (b"", W.SUCCESS)):  # only no response is
        m, _ = make(tmp_path, login={"mode": "list", "users": {"bob": "x"}})
        m.receive(K.nbss(K.smb2_negotiate()), NOW)
        leg = messages(m.receive(K.nbss(K.smb2_session_setup(
            K.spnego_init(K.ntlm_negotiate()))), NOW))[-1]
        sid = struct.unpack_from("<Q", leg, 40)[0]
        auth = K.ntlm_authenticate("mallory", "CORP", "WS01", nt, b"")
        acts = m.receive(K.nbss(K.smb2_session_setup(K.spnego_resp(auth), mid=2, sid=sid)), NOW)
        assert status2(messages(acts)[-1]) == want, nt


def test_smb1_negotiate_answers_nmaps_probe_as_2008_r2_does(tmp_path):
    # nmap's SMBProgNeg: flags 0x08, flags2 0x4001, eight dialects, NT LM 0.12 last
    probe = (b"\xffSMBr\0\0\0\0\x08\x01\x40" + bytes(14) + b"\x40\x06\0\0\x01\0\0\x81\0"
             + b"".join(b"\x02" + d + b"\0" for d in (
                 b"PC NETWORK PROGRAM 1.0", b"MICROSOFT NETWORKS 1.03",
                 b"MICROSOFT NETWORKS 3.0", b"LANMAN1.0", b"LM1.2X002", b"Samba",
                 b"NT LANMAN 1.0", b"NT LM 0.12")))
    m, _ctx = make(tmp_path)
    reply = K.nbss(messages(m.receive(K.nbss(probe), NOW))[0])
    # the service fingerprint nmap matches as "Microsoft Windows Server 2008 R2 microsoft-ds"
    pattern = (rb"^\0\0\0.\xffSMBr\0\0\0\0\x88\x01@\0\0\0\0\0\0\0\0\0\0\0\0\0\0@\x06\0\0\x01\0"
               rb"\x11\x07\0.2\0\x01\0\x04A\0\0\0\0\x01\0\0\0\0\0\xfd\xe3\x01\0.{21}"
               rb"((?:..)*)\0\0((?:..)*)\0\0")
    found = re.match(pattern, reply, re.DOTALL)
    assert found and found.group(1).decode("utf-16-le") == "WORKGROUP"
