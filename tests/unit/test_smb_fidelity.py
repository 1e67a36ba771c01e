"""SMB details a scanner can tell apart: ECHO's count, AndX chains, long SMB2 compounds,
dialect switches, 3.1.1 without PREAUTH, and what a session keeps of its login."""

from __future__ import annotations

import struct

from muscipula.machine import Close, Emit
from muscipula.protocols.smb import client as K
from muscipula.protocols.smb import wire as W
from tests.unit.test_smb import NOW, make, messages, smb2_login, status2
from tests.unit.test_smb_ms17 import ipc, status1


def test_echo_honours_its_count_bounded(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    echo = K.smb1(0x2B, struct.pack("<H", 3), b"ping", uid=uid, tid=tid)
    replies = messages(m.receive(K.nbss(echo), NOW))
    assert [struct.unpack_from("<H", r, 33)[0] for r in replies] == [1, 2, 3]
    assert all(r.endswith(b"ping") for r in replies)
    assert messages(m.receive(K.nbss(K.smb1(0x2B, struct.pack("<H", 0), b"x")), NOW)) == []
    many = K.smb1(0x2B, struct.pack("<H", 0xFFFF), b"x" * 1000)
    assert 0 < len(messages(m.receive(K.nbss(many), NOW))) <= 64


def _andx_login_and_tree(path: bytes, next_offset: int | None = None) -> bytes:
    """SESSION_SETUP_ANDX (the pre-SPNEGO form, OEM strings) chained to TREE_CONNECT_ANDX."""
    data = (b"\0"            # OEM password: empty (anonymous)
            + b"\0" + b"\0"  # account, primary domain
            + b"Unix\0" + b"Samba\0")
    first = 32 + 1 + 26 + 2 + len(data)
    pad = b"\0" * (first % 2)
    tree_at = first + len(pad)
    words = struct.pack("<BBHHHHIHHII", 0x75, 0, tree_at, 4356, 10, 0, 0, 1, 0, 0, 0xD4)
    tree_data = b"\0" + path + b"\0" + b"?????\0"
    tree_words = struct.pack("<BBHHH", 0xFF if next_offset is None else 0x75, 0,
                             next_offset or 0, 0x8, 1)
    block = bytes([4]) + tree_words + struct.pack("<H", len(tree_data)) + tree_data
    head = K.smb1(0x73, words, data, flags2=0x4001)
    return head + pad + block


def test_andx_session_setup_and_tree_connect_in_one_message(tmp_path):
    m, _ = make(tmp_path)
    m.receive(K.nbss(K.smb1_negotiate(flags2=0x4001)), NOW)
    acts = m.receive(K.nbss(_andx_login_and_tree(b"\\\\SRV\\IPC$")), NOW)
    replies = messages(acts)
    assert len(replies) == 1
    r = replies[0]
    assert status1(r) == W.SUCCESS
    uid, tid = struct.unpack_from("<H", r, 28)[0], struct.unpack_from("<H", r, 24)[0]
    assert uid and tid
    assert r[33] == 0x75  # the first block points at the tree connect's answer
    at = struct.unpack_from("<H", r, 35)[0]
    assert r[at] in (3, 7) and r[at + 1] == 0xFF
    names = [a.fields["command"] for a in acts if isinstance(a, Emit)
             and a.name == "smb.command"]
    assert names == ["SESSION_SETUP_ANDX", "TREE_CONNECT_ANDX"]
    # the chained tree works for the next request
    peek = K.smb1(0x2B, struct.pack("<H", 1), b"", uid=uid, tid=tid)
    assert status1(messages(m.receive(K.nbss(peek), NOW))[0]) == W.SUCCESS


def test_andx_chain_stops_at_a_loop_and_a_failure(tmp_path):
    m, _ = make(tmp_path)
    m.receive(K.nbss(K.smb1_negotiate(flags2=0x4001)), NOW)
    # the tree connect points back at itself: it runs once, the loop is not followed
    raw = bytearray(_andx_login_and_tree(b"\\\\SRV\\IPC$"))
    tree_at = struct.unpack_from("<H", raw, 35)[0]
    raw[tree_at + 1] = 0x75
    struct.pack_into("<H", raw, tree_at + 3, tree_at)
    acts = m.receive(K.nbss(bytes(raw)), NOW)
    names = [a.fields["command"] for a in acts if isinstance(a, Emit)
             and a.name == "smb.command"]
    assert names == ["SESSION_SETUP_ANDX", "TREE_CONNECT_ANDX"]
    # a share that is not there: the chain's answer carries the failure
    m2, _ = make(tmp_path / "b")
    m2.receive(K.nbss(K.smb1_negotiate(flags2=0x4001)), NOW)
    r = messages(m2.receive(K.nbss(_andx_login_and_tree(b"\\\\SRV\\NOPE")), NOW))[0]
    assert status1(r) == W.BAD_NETWORK_NAME and r[33] == 0x75


def test_more_than_32_compounded_requests_all_answered(tmp_path):
    m, _ = make(tmp_path)
    sid, _, _, _ = smb2_login(m)
    echoes = []
    for i in range(40):
        echo = bytearray(K.smb2(0x0D, struct.pack("<HH", 4, 0), mid=10 + i, sid=sid))
        echo += bytes((8 - len(echo) % 8) % 8)
        if i < 39:
            struct.pack_into("<I", echo, 20, len(echo))
        echoes.append(bytes(echo))
    reply = messages(m.receive(K.nbss(b"".join(echoes)), NOW))[0]
    count, pos = 0, 0
    while True:
        count += 1
        nxt = struct.unpack_from("<I", reply, pos + 20)[0]
        if not nxt:
            break
        pos += nxt
    assert count == 40


def test_smb2_after_smb1_dialect_hangs_up(tmp_path):
    m, _ = make(tmp_path)
    m.receive(K.nbss(K.smb1_negotiate(("NT LM 0.12",))), NOW)
    acts = m.receive(K.nbss(K.smb2_negotiate()), NOW)
    assert not messages(acts) and [a for a in acts if isinstance(a, Close)]


def test_311_without_preauth_context_refused(tmp_path):
    m, _ = make(tmp_path, "debian-12")
    ctx = struct.pack("<HHI", 2, 4, 0) + struct.pack("<HH", 1, 1)  # ENCRYPTION only
    acts = m.receive(K.nbss(K.smb2_negotiate((0x0311,), ctx, 1)), NOW)
    assert status2(messages(acts)[0]) == W.INVALID_PARAMETER
    assert [a for a in acts if isinstance(a, Close)]


def test_session_keeps_only_the_names(tmp_path):
    m, _ = make(tmp_path)
    big = bytes(60000)
    acts = m.receive(K.nbss(K.smb2_negotiate()), NOW)
    acts += m.receive(K.nbss(K.smb2_session_setup(K.spnego_init(K.ntlm_negotiate()))), NOW)
    sid = struct.unpack_from("<Q", messages(acts)[-1], 40)[0]
    auth = K.ntlm_authenticate("u" * 2000, "CORP", "WS", K.NT_V2 + big)
    m.receive(K.nbss(K.smb2_session_setup(K.spnego_resp(auth), mid=2, sid=sid)), NOW)
    session = m.smb2.sessions[sid]
    assert set(session.info) == {"user", "domain"} and len(session.info["user"]) <= 256
    assert len(session.user) <= 256
    assert m.s.cfg.max_sessions == 16  # the limits come from the config object
