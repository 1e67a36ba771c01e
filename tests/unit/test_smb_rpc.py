"""DCE/RPC on the IPC$ pipes fed bytes: bind results, requests, faults, fragments, bounds,
srvsvc/wkssvc stubs (decoded with impacket's NDR), and the SMB2/SMB1 pipe commands."""

from __future__ import annotations

import struct

from impacket.dcerpc.v5 import srvs, wkst

from muscipula.protocols.smb import client as K
from muscipula.protocols.smb import dcerpc as R
from muscipula.protocols.smb import interfaces as I
from muscipula.protocols.smb import wire as W
from tests.unit.test_smb import NOW, emits, make, messages, smb2_login, status2

HOST = I.Host("WIN-ABCDEF", "WORKGROUP", (6, 1), 0x9003, "",
              (I.Share("ADMIN$", I.STYPE_SPECIAL, "Remote Admin"),
               I.Share("C$", I.STYPE_SPECIAL, "Default share"),
               I.Share("IPC$", I.STYPE_SPECIAL | I.STYPE_IPC, "Remote IPC"),
               I.Share("data", I.STYPE_DISKTREE, "drop here")))


def pipe(max_request: int = 64 * 1024, max_output: int = 64 * 1024) -> R.Pipe:
    return R.Pipe("srvsvc", I.interfaces(HOST), R.Limits(max_request, max_output), 0x12345)


def pdus(data: bytes) -> list[bytes]:
    out = []
    while len(data) >= 16:
        n = struct.unpack_from("<H", data, 8)[0]
        out.append(data[:n])
        data = data[n:]
    return out


def results(ack: bytes) -> list[tuple[int, int, str]]:
    port_len = struct.unpack_from("<H", ack, 24)[0]
    pos = 26 + port_len
    pos += (4 - pos % 4) % 4
    count = ack[pos]
    pos += 4
    return [(*struct.unpack_from("<HH", ack, pos + 24 * i),
             R.uuid_str(ack[pos + 24 * i + 4:pos + 24 * i + 20])) for i in range(count)]


def bound() -> R.Pipe:
    p = pipe()
    p.write(K.rpc_bind(K.SRVSVC, (3, 0)))
    p.read(65536)
    return p


def call(p: R.Pipe, opnum: int, stub: bytes) -> tuple[bytes, list]:
    acts = p.write(K.rpc_request(opnum, stub))
    data, more = p.read(65536)
    assert not more
    return data, acts


def test_bind_accepts_ndr_refuses_ndr64_and_unknown_interfaces():
    p = pipe()
    more = (struct.pack("<HBB", 1, 1, 0) + R.uuid_raw(K.SRVSVC) + struct.pack("<HH", 3, 0)
            + R.uuid_raw(R.NDR64) + struct.pack("<I", 1)
            + struct.pack("<HBB", 2, 1, 0) + R.uuid_raw("11111111-2222-3333-4444-555555555555")
            + struct.pack("<HH", 1, 0) + R.uuid_raw(R.NDR) + struct.pack("<I", 2)
            + struct.pack("<HBB", 3, 1, 0) + R.uuid_raw(K.SRVSVC) + struct.pack("<HH", 3, 0)
            + R.uuid_raw("6cb71c2c-9812-4540-0300-000000000000") + struct.pack("<I", 1))
    acts = p.write(K.rpc_bind(K.SRVSVC, (3, 0), more=more, count=4))
    ack, more_left = p.read(4280)
    assert not more_left and ack[2] == R.BIND_ACK
    assert b"\\PIPE\\srvsvc\0" in ack
    assert struct.unpack_from("<I", ack, 20)[0] == 0x12345  # the association group
    res = results(ack)
    assert res[0] == (R.ACCEPTANCE, 0, R.NDR)
    assert res[1][:2] == (R.PROVIDER_REJECTION, R.TRANSFER_NOT_SUPPORTED)
    assert res[2][:2] == (R.PROVIDER_REJECTION, R.ABSTRACT_NOT_SUPPORTED)
    assert res[3][:2] == (R.NEGOTIATE_ACK, 1)
    binds = emits(acts, "smb.dcerpc.bind")
    assert [b["uuid"] for b in binds].count(K.SRVSVC) == 3 and len(binds) == 4
    assert binds[1]["transfersyntax"] == R.NDR64
    assert set(p.contexts) == {0}


def test_alter_context_has_no_secondary_address():
    p = bound()
    p.write(K.rpc_bind("6bffd098-a112-3610-9833-46c3f87e345a", (1, 0), ctx=1, call_id=3,
                       ptype=R.ALTER))
    resp, _ = p.read(4280)
    assert resp[2] == R.ALTER_RESP and struct.unpack_from("<H", resp, 24)[0] == 0
    assert p.contexts[1].name == "wkssvc"


def test_unknown_opnum_and_unbound_context_fault_never_silence():
    p = bound()
    data, acts = call(p, 200, b"")
    assert data[2] == R.FAULT and data[3] & R.DID_NOT_EXECUTE
    assert struct.unpack_from("<I", data, 24)[0] == R.OP_RNG_ERROR
    assert emits(acts, "smb.dcerpc.request")[0]["opnum"] == 200
    assert emits(acts, "smb.dcerpc.request")[0]["uuid"] == K.SRVSVC
    acts = p.write(K.rpc_request(15, b"", ctx=7))
    data, _ = p.read(4280)
    assert struct.unpack_from("<I", data, 24)[0] == R.UNKNOWN_IF
    # an operation the interface has but refuses, and a stub that does not decode
    data, _ = call(p, 31, b"\0" * 8)  # NetPathCanonicalize
    assert data[2] == R.FAULT and struct.unpack_from("<I", data, 24)[0] == R.ACCESS_DENIED
    data, acts = call(p, 15, b"\1\0")
    assert data[2] == R.FAULT and struct.unpack_from("<I", data, 24)[0] == 0x6F7
    assert emits(acts, "protocol.error")


def test_fragments_reassembled_and_bounded():
    p = bound()
    stub = K.share_enum_stub(1)
    first = K.rpc_request(15, stub[:20], flags=R.FIRST)
    last = K.rpc_request(15, stub[20:], flags=R.LAST)
    # split across writes, in the middle of a header
    assert p.write(first + last[:7]) == []
    acts = p.write(last[7:])
    data, _ = p.read(65536)
    assert data[2] == R.RESPONSE and emits(acts, "smb.dcerpc.request")[0]["size"] == len(stub)
    small = pipe(max_request=100)
    small.write(K.rpc_bind(K.SRVSVC, (3, 0)))
    small.read(4280)
    small.write(K.rpc_request(15, bytes(80), flags=R.FIRST))
    acts = small.write(K.rpc_request(15, bytes(80), flags=R.LAST))
    data, _ = small.read(4280)
    assert struct.unpack_from("<I", data, 24)[0] == R.REMOTE_NO_MEMORY
    assert emits(acts, "protocol.error") and small.buffered() == 0


def test_output_bounded_and_responses_fragmented_to_max_recv():
    p = pipe(max_output=200)
    p.write(K.rpc_bind(K.SRVSVC, (3, 0)))
    for i in range(20):
        p.write(K.rpc_request(200, b"", call_id=10 + i))
    assert p.buffered() <= 200
    q = pipe()
    bind = bytearray(K.rpc_bind(K.SRVSVC, (3, 0)))
    bind[18:20] = struct.pack("<H", 64)  # max_recv_frag: 64-byte fragments only
    q.write(bytes(bind))
    q.read(4280)
    q.write(K.rpc_request(15, K.share_enum_stub(1)))
    frags = pdus(q.read(65536)[0])
    assert len(frags) > 3 and all(len(f) <= 64 for f in frags)
    assert frags[0][3] & R.FIRST and frags[-1][3] & R.LAST
    stub = b"".join(f[24:] for f in frags)
    resp = srvs.NetrShareEnumResponse(stub)
    assert len(resp["InfoStruct"]["ShareInfo"]["Level1"]["Buffer"]) == 4


def test_share_enum_levels_decode_with_impacket():
    p = bound()
    data, acts = call(p, 15, K.share_enum_stub(1))
    resp = srvs.NetrShareEnumResponse(data[24:])
    items = resp["InfoStruct"]["ShareInfo"]["Level1"]["Buffer"]
    got = [(i["shi1_netname"][:-1], i["shi1_type"], i["shi1_remark"][:-1]) for i in items]
    assert got == [("ADMIN$", 0x80000000, "Remote Admin"), ("C$", 0x80000000, "Default share"),
                   ("IPC$", 0x80000003, "Remote IPC"), ("data", 0, "drop here")]
    assert resp["TotalEntries"] == 4 and resp["ErrorCode"] == 0
    assert emits(acts, "smb.dcerpc.request")[0]["operation"] == "NetShareEnum"
    data, _ = call(p, 15, K.share_enum_stub(0))
    resp = srvs.NetrShareEnumResponse(data[24:])
    assert [i["shi0_netname"][:-1] for i in resp["InfoStruct"]["ShareInfo"]["Level0"][
        "Buffer"]] == ["ADMIN$", "C$", "IPC$", "data"]
    data, _ = call(p, 15, K.share_enum_stub(2))
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == I.WERR_ACCESS_DENIED


def test_server_info_and_share_info_and_wksta_info():
    p = bound()
    data, _ = call(p, 21, K.server_info_stub(101))
    info = srvs.NetrServerGetInfoResponse(data[24:])["InfoStruct"]["ServerInfo101"]
    assert info["sv101_platform_id"] == 500 and info["sv101_name"][:-1] == "WIN-ABCDEF"
    assert (info["sv101_version_major"], info["sv101_version_minor"]) == (6, 1)
    assert info["sv101_type"] == 0x9003
    data, _ = call(p, 21, K.server_info_stub(102))
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == I.WERR_ACCESS_DENIED
    req = srvs.NetrShareGetInfo()
    req["ServerName"] = "x\0"
    req["NetName"] = "c$\0"
    req["Level"] = 1
    data, _ = call(p, 16, req.getData())
    info = srvs.NetrShareGetInfoResponse(data[24:])["InfoStruct"]["ShareInfo1"]
    assert info["shi1_netname"][:-1] == "C$" and info["shi1_remark"][:-1] == "Default share"
    req["NetName"] = "nope\0"
    data, _ = call(p, 16, req.getData())
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == I.WERR_NET_NAME_NOT_FOUND
    p.write(K.rpc_bind("6bffd098-a112-3610-9833-46c3f87e345a", (1, 0), ctx=1, call_id=3))
    p.read(4280)
    w = wkst.NetrWkstaGetInfo()
    w["ServerName"] = "x\0"
    w["Level"] = 100
    p.write(K.rpc_request(0, w.getData(), ctx=1))
    data, _ = p.read(4280)
    info = wkst.NetrWkstaGetInfoResponse(data[24:])["WkstaInfo"]["WkstaInfo100"]
    assert info["wki100_computername"][:-1] == "WIN-ABCDEF"
    assert info["wki100_langroup"][:-1] == "WORKGROUP"


def test_not_dce_rpc_stops_the_pipe():
    p = pipe()
    acts = p.write(b"GET / HTTP/1.1\r\n\r\n")
    assert emits(acts, "protocol.error") and p.broken and p.buffered() == 0
    assert p.write(K.rpc_bind(K.SRVSVC, (3, 0))) == [] and p.read(100) == (b"", False)


# ------------------------------------------------------------------ over SMB2


def ipc(tmp_path, **svc):
    m, _ctx = make(tmp_path, **svc)
    sid, _c, _t, _acts = smb2_login(m, user="", domain="")
    reply = messages(m.receive(K.nbss(K.smb2_tree_connect("\\\\srv\\IPC$", sid=sid)), NOW))[0]
    tid = struct.unpack_from("<I", reply, 36)[0]
    return m, sid, tid


def fid_of(reply: bytes) -> int:
    return struct.unpack_from("<Q", reply, 64 + 72)[0]


def test_smb2_pipe_create_write_read_transceive(tmp_path):
    m, sid, tid = ipc(tmp_path)
    reply = messages(m.receive(K.nbss(K.smb2_create("nope", sid=sid, tid=tid)), NOW))[0]
    assert status2(reply) == W.OBJECT_NAME_NOT_FOUND
    reply = messages(m.receive(K.nbss(K.smb2_create("srvsvc", sid=sid, tid=tid)), NOW))[0]
    assert status2(reply) == W.SUCCESS
    fid = fid_of(reply)
    assert struct.unpack_from("<I", reply, 64 + 56)[0] == 0x80  # FILE_ATTRIBUTE_NORMAL
    reply = messages(m.receive(K.nbss(K.smb2_write(fid, K.rpc_bind(K.SRVSVC, (3, 0)),
                                                   sid=sid, tid=tid)), NOW))[0]
    assert status2(reply) == W.SUCCESS
    reply = messages(m.receive(K.nbss(K.smb2_read(fid, 4280, sid=sid, tid=tid)), NOW))[0]
    assert status2(reply) == W.SUCCESS and reply[64 + 16 + 2] == R.BIND_ACK
    acts = m.receive(K.nbss(K.smb2_ioctl(fid, 0x0011C017, K.rpc_request(
        15, K.share_enum_stub(1)), max_out=100, sid=sid, tid=tid)), NOW)
    reply = messages(acts)[0]
    assert status2(reply) == W.BUFFER_OVERFLOW  # the rest waits for READ
    head = reply[64 + 48:]
    assert len(head) == 100 and head[2] == R.RESPONSE
    rest = messages(m.receive(K.nbss(K.smb2_read(fid, 65536, sid=sid, tid=tid)), NOW))[0]
    assert status2(rest) == W.SUCCESS
    stub = (head + rest[64 + 16:])[24:]
    items = srvs.NetrShareEnumResponse(stub)["InfoStruct"]["ShareInfo"]["Level1"]["Buffer"]
    assert [i["shi1_netname"][:-1] for i in items] == ["ADMIN$", "C$", "IPC$"]
    assert emits(acts, "smb.dcerpc.request")[0]["opnum"] == 15
    # nothing to read: the read waits, and CANCEL ends it
    reply = messages(m.receive(K.nbss(K.smb2_read(fid, 100, sid=sid, tid=tid, mid=40)),
                               NOW))[0]
    assert status2(reply) == W.PENDING and struct.unpack_from("<I", reply, 16)[0] & 2
    cancel = K.smb2(0x0C, struct.pack("<HH", 4, 0), mid=40, sid=sid, tid=tid)
    reply = messages(m.receive(K.nbss(cancel), NOW))[0]
    assert status2(reply) == W.CANCELLED and struct.unpack_from("<Q", reply, 24)[0] == 40
    reply = messages(m.receive(K.nbss(K.smb2_close(fid, sid=sid, tid=tid)), NOW))[0]
    assert status2(reply) == W.SUCCESS
    reply = messages(m.receive(K.nbss(K.smb2_read(fid, 100, sid=sid, tid=tid)), NOW))[0]
    assert status2(reply) == W.FILE_CLOSED


def test_smb2_open_files_bounded(tmp_path):
    m, sid, tid = ipc(tmp_path, max_open_files=3)
    got = [status2(messages(m.receive(K.nbss(K.smb2_create(name, sid=sid, tid=tid)),
                                      NOW))[0])
           for name in ("srvsvc", "wkssvc", "\\PIPE\\lsarpc", "samr")]
    assert got == [W.SUCCESS] * 3 + [W.TOO_MANY_OPENED_FILES]
    assert m.files.buffered() == 0
    # TREE_DISCONNECT closes them
    m.receive(K.nbss(K.smb2(4, struct.pack("<HH", 4, 0), sid=sid, tid=tid)), NOW)
    assert not m.files.opens


def test_smb1_pipe_transaction(tmp_path):
    m, _ = make(tmp_path)
    m.receive(K.nbss(K.smb1_negotiate()), NOW)
    leg = messages(m.receive(K.nbss(K.smb1_session_setup(K.spnego_init(K.ntlm_negotiate()))),
                             NOW))[0]
    uid = struct.unpack_from("<H", leg, 28)[0]
    auth = K.ntlm_authenticate("", "", "", b"", b"\0")
    m.receive(K.nbss(K.smb1_session_setup(K.spnego_resp(auth), uid=uid)), NOW)
    reply = messages(m.receive(K.nbss(K.smb1_tree_connect("\\\\SRV\\IPC$", uid=uid)), NOW))[0]
    tid = struct.unpack_from("<H", reply, 24)[0]
    words = struct.pack("<BBHBHIIIQIIIIIB", 0xFF, 0, 0, 0, 14, 0, 0, 0x2019F, 0, 0, 3, 1, 0,
                        2, 0)
    create = K.smb1(0xA2, words, b"\0" + "\\srvsvc".encode("utf-16-le") + b"\0\0",
                    uid=uid, tid=tid)
    reply = messages(m.receive(K.nbss(create), NOW))[0]
    assert struct.unpack_from("<I", reply, 5)[0] == W.SUCCESS
    fid = struct.unpack_from("<H", reply, 32 + 1 + 5)[0]
    assert struct.unpack_from("<HH", reply, 32 + 1 + 63)[0] == 2  # message-mode pipe
    bind = K.rpc_bind(K.SRVSVC, (3, 0))
    at = 32 + 1 + 32 + 2
    words = struct.pack("<HHHHBBHIHHHHHBBHH", 0, len(bind), 0, 4280, 0, 0, 0, 0, 0, 0, 0,
                        len(bind), at, 2, 0, 0x26, fid)
    reply = messages(m.receive(K.nbss(K.smb1(0x25, words, bind, uid=uid, tid=tid)), NOW))[0]
    assert struct.unpack_from("<I", reply, 5)[0] == W.SUCCESS
    off, = struct.unpack_from("<H", reply, 32 + 1 + 14)
    assert reply[off + 2] == R.BIND_ACK
    close = K.smb1(0x04, struct.pack("<HI", fid, 0), b"", uid=uid, tid=tid)
    reply = messages(m.receive(K.nbss(close), NOW))[0]
    assert struct.unpack_from("<I", reply, 5)[0] == W.SUCCESS
    reply = messages(m.receive(K.nbss(close), NOW))[0]
    assert struct.unpack_from("<I", reply, 5)[0] == W.INVALID_HANDLE


def test_requests_recorded_in_logsql_rows():
    from muscipula.sinks import logsql

    sql, fn = logsql.ROWS["smb.dcerpc.request"]
    assert "dcerpcrequests" in sql and fn({"uuid": K.SRVSVC, "opnum": 15}) == (K.SRVSVC, 15)
    sql, fn = logsql.ROWS["smb.dcerpc.bind"]
    assert "dcerpcbinds" in sql and fn({"uuid": K.SRVSVC, "transfersyntax": R.NDR}) == (
        K.SRVSVC, R.NDR)
