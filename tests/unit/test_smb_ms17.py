"""MS17-010 and DoublePulsar, fed as the public tools build their packets: nmap's PeekNmPipe
check, EternalBlue's oversized NT_TRANSACT finished by TRANSACTION2_SECONDARY and its pool
grooming buffers, DoublePulsar's ping and XOR-keyed exec upload."""

from __future__ import annotations

import struct

from muscipula.machine import CaptureData, CaptureEnd, Close
from muscipula.protocols.smb import client as K
from muscipula.protocols.smb import doublepulsar as D
from muscipula.protocols.smb import wire as W
from tests.unit.test_smb import NOW, emits, make, messages

INSUFF_SERVER_RESOURCES = 0xC0000205


def status1(msg: bytes) -> int:
    return struct.unpack_from("<I", msg, 5)[0]


def ipc(tmp_path, preset="windows-2008r2", **svc):
    """NEGOTIATE, an anonymous extended-security login and TREE_CONNECT to IPC$."""
    m, ctx = make(tmp_path, preset, **svc)
    m.receive(K.nbss(K.smb1_negotiate()), NOW)
    leg = messages(m.receive(K.nbss(K.smb1_session_setup(K.spnego_init(K.ntlm_negotiate()))),
                             NOW))[0]
    uid = struct.unpack_from("<H", leg, 28)[0]
    auth = K.ntlm_authenticate("", "", "", b"", b"\0")
    m.receive(K.nbss(K.smb1_session_setup(K.spnego_resp(auth), uid=uid)), NOW)
    reply = messages(m.receive(K.nbss(K.smb1_tree_connect("\\\\SRV\\IPC$", uid=uid)), NOW))[0]
    assert status1(reply) == W.SUCCESS
    tid = struct.unpack_from("<H", reply, 24)[0]
    return m, ctx, uid, tid


def peek_nm_pipe(uid: int, tid: int) -> bytes:
    """nmap smb-vuln-ms17-010: TRANSACTION, 16 words, PeekNmPipe (0x23) on FID 0."""
    words = struct.pack(
        "<HHHHBBHIHHHHHBBHH",
        0, 0,            # TotalParameterCount, TotalDataCount
        0xFFFF, 0xFFFF,  # MaxParameterCount, MaxDataCount
        0, 0,            # MaxSetupCount, Reserved
        0, 0, 0,         # Flags, Timeout, Reserved2
        0, 0x4A,         # ParameterCount, ParameterOffset
        0, 0x4A,         # DataCount, DataOffset
        2, 0,            # SetupCount, Reserved3
        0x23, 0)         # Setup: PeekNmPipe, FID 0
    return K.smb1(0x25, words, b"\\PIPE\\\0", uid=uid, tid=tid, mid=0x40)


def trans2(uid: int, tid: int, *, timeout: int, params: bytes, data: bytes = b"",
           setup: int = 0x0E, mid: int = 0x41) -> bytes:
    """TRANSACTION2 with one setup word, parameters then data right after the byte count
    (DoublePulsar's ping and exec are this, setup 0x0E SESSION_SETUP)."""
    param_at = 32 + 1 + 15 * 2 + 2 + 1   # header, WordCount, 15 words, ByteCount, one pad
    data_at = param_at + len(params)
    words = struct.pack(
        "<HHHHBBHIHHHHHBBH",
        len(params), len(data),   # TotalParameterCount, TotalDataCount
        1, 0,                     # MaxParameterCount, MaxDataCount
        0, 0, 0,                  # MaxSetupCount, Reserved, Flags
        timeout, 0,               # Timeout (the implant's opcode), Reserved2
        len(params), param_at,    # ParameterCount, ParameterOffset
        len(data), data_at,       # DataCount, DataOffset
        1, 0, setup)              # SetupCount, Reserved3, Setup[0]
    return K.smb1(0x32, words, b"\0" + params + data, uid=uid, tid=tid, mid=mid)


def nt_trans(uid: int, tid: int, params: bytes, data: bytes, first: int,
             mid: int = 0x50) -> bytes:
    """EternalBlue's opener: NT_TRANSACT, setup word 0 (TRANS2_OPEN2 once confused), the
    whole parameter block and only `first` bytes of a data block over 64 KiB."""
    param_at = 32 + 1 + 20 * 2 + 2 + 1   # 19 words + one setup word, ByteCount, pad
    data_at = param_at + len(params) + 2
    words = struct.pack(
        "<BHIIIIIIIIBHH",
        1, 0,                     # MaxSetupCount, Reserved
        len(params), len(data),   # TotalParameterCount, TotalDataCount (> 0xFFFF)
        len(params), 0,           # MaxParameterCount, MaxDataCount
        len(params), param_at,    # ParameterCount, ParameterOffset
        first, data_at,           # DataCount, DataOffset
        1, 0, 0)                  # SetupCount, Function, Setup[0]
    return K.smb1(0xA0, words, b"\0" + params + b"\0\0" + data[:first], uid=uid, tid=tid,
                  mid=mid)


def trans2_secondary(uid: int, tid: int, chunk: bytes, displacement: int, total: int,
                     total_params: int) -> bytes:
    """TRANSACTION2_SECONDARY: 9 words; EternalBlue sends the rest of the data in these. Its
    counts are 16 bits: past 64 KiB the total and the displacement wrap."""
    data_at = 32 + 1 + 9 * 2 + 2
    words = struct.pack("<HHHHHHHHH", total_params, total & 0xFFFF, 0, 0, 0, len(chunk),
                        data_at, displacement & 0xFFFF, 0xFFFF)
    return K.smb1(0x33, words, chunk, uid=uid, tid=tid, mid=0x50)


def test_peek_nm_pipe_check_vulnerable_on_windows(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    acts = m.receive(K.nbss(peek_nm_pipe(uid, tid)), NOW)
    reply = messages(acts)[0]
    assert reply[4] == 0x25 and status1(reply) == INSUFF_SERVER_RESOURCES
    assert emits(acts, "smb.ms17_010")[0]["stage"] == "check"


def test_peek_nm_pipe_check_patched_when_switched_off(tmp_path):
    m, _, uid, tid = ipc(tmp_path, ms17_010=False)
    acts = m.receive(K.nbss(peek_nm_pipe(uid, tid)), NOW)
    assert status1(messages(acts)[0]) == W.INVALID_HANDLE  # what a patched host says
    assert not emits(acts, "smb.ms17_010")


def test_samba_persona_never_reaches_the_check(tmp_path):
    # Samba 4.17 has SMB1 off: "NT LM 0.12" alone is refused and the connection closed, so
    # the check and EternalBlue find nothing (nmap reports the host as not vulnerable)
    m, _ = make(tmp_path, "debian-12")
    acts = m.receive(K.nbss(K.smb1_negotiate(("NT LM 0.12",))), NOW)
    reply = messages(acts)[0]
    assert reply[4] == 0x72 and reply[33:35] == b"\xff\xff"
    assert [a for a in acts if isinstance(a, Close)]
    assert not m.smb1.trans.vulnerable


def test_eternalblue_nt_transact_finished_by_trans2_secondary(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    params = bytes(30)
    # the FEA list: a SizeOfListInBytes the server miscalculates, then entries
    data = struct.pack("<I", 0x10000) + bytes(range(256)) * 0x10F
    first = 1000
    acts = m.receive(K.nbss(nt_trans(uid, tid, params, data, first)), NOW)
    interim = messages(acts)[0]
    assert interim[4] == 0xA0 and status1(interim) == W.SUCCESS and interim[32:35] == bytes(3)
    # the transaction is held until whole, but only the bytes that came are kept
    assert first <= m.buffered() < 2 * len(interim) + 2 * first + len(params) + 64
    pos, replies = first, []
    while pos < len(data):
        chunk = data[pos:pos + 4096]
        acts = m.receive(K.nbss(trans2_secondary(uid, tid, chunk, pos, len(data), 30)), NOW)
        replies += messages(acts)
        pos += len(chunk)
        if pos < len(data):
            assert not messages(acts)  # no answer to a secondary until the last
    assert len(replies) == 1
    assert replies[0][4] == 0x32 and status1(replies[0]) == W.INVALID_PARAMETER
    inc = emits(acts, "smb.ms17_010")[0]
    assert inc["stage"] == "trigger" and inc["size"] == len(params) + len(data)
    captured = b"".join(a.data for a in acts if isinstance(a, CaptureData))
    assert captured == params + data
    end = next(a for a in acts if isinstance(a, CaptureEnd))
    assert end.url == "smb://10.1.2.3/ms17-010" and end.complete


def test_transaction_bounds(tmp_path):
    m, _, uid, tid = ipc(tmp_path, max_transaction=4096)
    data = bytes(70000)
    reply = messages(m.receive(K.nbss(nt_trans(uid, tid, bytes(30), data, 100)), NOW))[0]
    assert status1(reply) == INSUFF_SERVER_RESOURCES and m.buffered() < 4096
    # a ParameterOffset past the message
    bad = bytearray(trans2(uid, tid, timeout=0, params=bytes(12)))
    struct.pack_into("<H", bad, 32 + 1 + 20, 0x4000)
    reply = messages(m.receive(K.nbss(bytes(bad)), NOW))[0]
    assert status1(reply) == W.INVALID_PARAMETER
    # a secondary writing past the announced total drops the transaction
    m2, _, uid, tid = ipc(tmp_path)
    m2.receive(K.nbss(nt_trans(uid, tid, bytes(30), bytes(2000), 100)), NOW)
    acts = m2.receive(K.nbss(trans2_secondary(uid, tid, bytes(100), 1950, 2000, 30)), NOW)
    assert status1(messages(acts)[0]) == W.INVALID_PARAMETER
    assert m2.smb1.trans.pending == {}


def test_connection_lost_mid_exploit_keeps_what_came(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    data = bytes(range(256)) * 300
    m.receive(K.nbss(nt_trans(uid, tid, bytes(30), data, 2000)), NOW)
    acts = m.closed(NOW)
    assert emits(acts, "smb.ms17_010")[0]["stage"] == "incomplete"
    end = next(a for a in acts if isinstance(a, CaptureEnd))
    assert not end.complete and m.buffered() == 0


def test_grooming_buffer_captured_as_it_comes(tmp_path):
    m, _ = make(tmp_path)
    # EternalBlue's groom connection: a NetBIOS length of 0x8100, 'BAAD' and zeros first...
    first = b"\0\0\x81\x00" + b"BAAD" + bytes(0x7C)
    acts = m.receive(first, NOW)
    assert not [a for a in acts if isinstance(a, Close)] and m.buffered() == 0
    # ...then the fake srvnet buffer and the kernel shellcode, later
    shellcode = b"\x90" * 64 + b"\xcc" * (0x8100 - 0x80 - 64)
    acts += m.receive(shellcode + b"trailing", NOW)
    data = b"".join(a.data for a in acts if isinstance(a, CaptureData))
    assert data == first[4:] + shellcode
    assert [a for a in acts if isinstance(a, Close)]
    assert emits(acts, "smb.ms17_010")[0]["stage"] == "groom"
    assert next(a for a in acts if isinstance(a, CaptureEnd)).url.endswith("/ms17-010")


def _ping(m, uid, tid):
    # Timeout bytes a6 d9 a4 00 sum to 0x223: opcode 0x23, ping
    acts = m.receive(K.nbss(trans2(uid, tid, timeout=0x00A4D9A6, params=bytes(12))), NOW)
    return messages(acts)[0], acts


def test_doublepulsar_ping_key_and_exec_upload(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    reply, acts = _ping(m, uid, tid)
    assert status1(reply) == W.NOT_IMPLEMENTED
    assert struct.unpack_from("<H", reply, 30)[0] == 0x41 + 0x10  # MID + 16: implanted
    signature = reply[14:22]
    assert signature[4:] != bytes(4)  # the x64 marker
    assert signature == m.s.implant_seed
    key = D.xor_key(signature)
    inc = emits(acts, "smb.doublepulsar")[0]
    assert inc["op"] == "ping" and inc["key"] == f"{key:08x}"
    # another install draws another seed
    other, _ = make(tmp_path / "other")
    assert other.s.implant_seed != m.s.implant_seed

    shellcode = b"\x31\xc0\x40\x90" * 64
    dll = bytearray(b"MZ\x90\0" + bytes(0x3C))
    struct.pack_into("<I", dll, 0x3C, 0x80)
    dll += bytes(0x80 - len(dll)) + b"PE\0\0" + bytes(range(256)) * 40
    payload = shellcode + bytes(dll)
    keyb = key.to_bytes(4, "little")

    def enc(b: bytes) -> bytes:
        return bytes(x ^ keyb[i % 4] for i, x in enumerate(b))

    # exec: Timeout bytes summing to 0xC8; parameters = total, chunk, offset, XORed
    timeout = 0x00000C8
    acts, pos, mid = [], 0, 0x42
    while pos < len(payload):
        chunk = payload[pos:pos + 4096]
        params = enc(struct.pack("<III", len(payload), len(chunk), pos))
        acts = m.receive(K.nbss(trans2(uid, tid, timeout=timeout, params=params,
                                       data=enc(chunk), mid=mid)), NOW)
        reply = messages(acts)[0]
        assert struct.unpack_from("<H", reply, 30)[0] == mid + 0x10
        pos += len(chunk)
        mid += 1
    captured = b"".join(a.data for a in acts if isinstance(a, CaptureData))
    assert captured == bytes(dll)  # cut at the PE header
    end = next(a for a in acts if isinstance(a, CaptureEnd))
    assert end.url == "smb://10.1.2.3/doublepulsar"
    inc = emits(acts, "smb.doublepulsar")[-1]
    assert inc["op"] == "exec" and inc["detail"]["pe_offset"] == len(shellcode)
    assert m.buffered() == 0


def test_doublepulsar_shellcode_kept_whole_and_bounds(tmp_path):
    m, _, uid, tid = ipc(tmp_path, max_implant_upload=8192)
    reply, _ = _ping(m, uid, tid)
    key = D.xor_key(reply[14:22])
    blob = b"\xfc\xe8" + bytes(range(200))
    params = D.unxor(struct.pack("<III", len(blob), len(blob), 0), key)
    acts = m.receive(K.nbss(trans2(uid, tid, timeout=0xC8, params=params,
                                   data=D.unxor(blob, key))), NOW)
    assert b"".join(a.data for a in acts if isinstance(a, CaptureData)) == blob
    # over the bound: the implant's out-of-memory answer, nothing held
    params = D.unxor(struct.pack("<III", 1 << 20, 4096, 0), key)
    reply = messages(m.receive(K.nbss(trans2(uid, tid, timeout=0xC8, params=params,
                                             data=bytes(4096), mid=0x50)), NOW))[0]
    assert struct.unpack_from("<H", reply, 30)[0] == 0x50 + 0x30 and m.buffered() == 0
    # a chunk past its announced total: bad parameters
    params = D.unxor(struct.pack("<III", 100, 200, 0), key)
    reply = messages(m.receive(K.nbss(trans2(uid, tid, timeout=0xC8, params=params,
                                             data=bytes(200), mid=0x60)), NOW))[0]
    assert struct.unpack_from("<H", reply, 30)[0] == 0x60 + 0x20
    # kill: answered, then the implant is gone from this connection
    reply = messages(m.receive(K.nbss(trans2(uid, tid, timeout=0x77, params=bytes(12),
                                             mid=0x70)), NOW))[0]
    assert struct.unpack_from("<H", reply, 30)[0] == 0x70 + 0x10
    reply, _ = _ping(m, uid, tid)
    assert struct.unpack_from("<H", reply, 30)[0] == 0x41 and reply[14:22] == bytes(8)


def test_doublepulsar_off_answers_as_clean_host(tmp_path):
    m, _, uid, tid = ipc(tmp_path, doublepulsar=False)
    reply, acts = _ping(m, uid, tid)
    assert status1(reply) == W.NOT_IMPLEMENTED
    assert struct.unpack_from("<H", reply, 30)[0] == 0x41 and not emits(acts,
                                                                         "smb.doublepulsar")


def test_key_derivation_matches_published_example():
    # the public checkers print the key derived from a ping's signature this way
    assert D.opcode(0x00A4D9A6) == D.PING and D.opcode(0xC8) == D.EXEC
    sig = bytes.fromhex("79e7df9000000000")
    s = 0x90DFE779
    manual = (2 * s ^ ((((s & 0xFF00) | (s << 16)) << 8) | (((s >> 16) | (s & 0xFF0000)) >> 8)))
    assert D.xor_key(sig) == manual & 0xFFFFFFFF
    assert D.unxor(D.unxor(b"hello world", 0x12345678), 0x12345678) == b"hello world"


def test_exploit_rows_and_json():
    from muscipula.sinks import jsonlog, logsql

    sql, fn = logsql.ROWS["smb.ms17_010"]
    assert "smb_exploits" in sql
    assert fn({"stage": "trigger", "size": 5, "data": b"abc", "command": "NT_TRANSACT"}) == (
        "ms17-010", "trigger", 5, '{"command":"NT_TRANSACT"}', b"abc")
    sql, fn = logsql.ROWS["smb.doublepulsar"]
    row = fn({"op": "exec", "size": 4096, "key": "0badf00d", "detail": {"total": 9}})
    assert row[:3] == ("doublepulsar", "exec", 4096) and '"key":"0badf00d"' in row[3]
    assert jsonlog.COLLECTORS["smb.doublepulsar"][0] == ("smb", "exploits")


def _exec(m, uid, tid, key, *, total, offset, chunk, mid=0x42):
    """One DoublePulsar exec: the wire bytes and the actions they caused."""
    params = D.unxor(struct.pack("<III", total, len(chunk), offset), key)
    wire = K.nbss(trans2(uid, tid, timeout=0xC8, params=params, data=D.unxor(chunk, key),
                         mid=mid))
    return wire, m.receive(wire, NOW)


def test_doublepulsar_exec_holds_only_what_came(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    key = D.xor_key(_ping(m, uid, tid)[0][14:22])
    # the last chunk of an 8 MiB upload alone is not the upload: nothing captured
    wire, acts = _exec(m, uid, tid, key, total=8 << 20, offset=(8 << 20) - 4, chunk=b"abcd")
    captured = b"".join(a.data for a in acts if isinstance(a, CaptureData))
    assert len(captured) <= 4 * len(wire) and not [a for a in acts if isinstance(a, CaptureEnd)]
    assert m.buffered() < 64 * len(wire)
    # a first chunk of 8 MiB holds four bytes, not eight megabytes
    wire, acts = _exec(m, uid, tid, key, total=8 << 20, offset=0, chunk=b"efgh", mid=0x43)
    assert struct.unpack_from("<H", messages(acts)[0], 30)[0] == 0x43 + 0x10
    assert m.buffered() < 64 * len(wire)


def test_doublepulsar_upload_complete_only_when_every_byte_came(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    key = D.xor_key(_ping(m, uid, tid)[0][14:22])
    blob = bytes(range(256)) * 12
    total = len(blob)
    # out of order; the last chunk twice: a repeated chunk does not fill the gap
    order = [2048, 1024, 2048]
    for i, at in enumerate(order):
        _, acts = _exec(m, uid, tid, key, total=total, offset=at, chunk=blob[at:at + 1024],
                        mid=0x50 + i)
        assert not [a for a in acts if isinstance(a, CaptureEnd)]
    assert 2048 <= m.buffered() < 2 * 2048 + 256
    # the offset-0 chunk restarts the upload, as the tools begin every upload with it
    for i, at in enumerate([0, 2048, 1024]):
        _, acts = _exec(m, uid, tid, key, total=total, offset=at, chunk=blob[at:at + 1024],
                        mid=0x60 + i)
    captured = b"".join(a.data for a in acts if isinstance(a, CaptureData))
    assert captured == blob and m.buffered() == 0


def test_doublepulsar_upload_pieces_bounded(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    key = D.xor_key(_ping(m, uid, tid)[0][14:22])
    replies = []
    # one byte every other offset: no more than so many separate pieces are held
    for i in range(70):
        _, acts = _exec(m, uid, tid, key, total=1 << 20, offset=1 + 2 * i, chunk=b"x",
                        mid=0x100 + i)
        replies.append(struct.unpack_from("<H", messages(acts)[0], 30)[0] - (0x100 + i))
    assert replies[0] == D.OK and D.BAD_PARAMS in replies
    assert m.buffered() <= 70


def _primaries(m, uid, tid, count, total=256 * 1024 - 30, mid=0x200):
    """`count` NT_TRANSACT primaries announcing `total` data bytes, one byte sent each."""
    wires, replies = [], []
    for i in range(count):
        wire = K.nbss(nt_trans(uid, tid, bytes(30), b"\x41" * total, 1, mid=mid + i))
        wires.append(wire)
        replies += messages(m.receive(wire, NOW))
    return wires, replies


def test_transaction_primaries_hold_what_came(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    wires, replies = _primaries(m, uid, tid, 4)
    assert all(status1(r) == W.SUCCESS for r in replies) and len(m.smb1.trans.pending) == 4
    sent = sum(len(w) for w in wires)
    assert m.buffered() < sent
    # the connection goes: what was received is captured, not the announced totals
    acts = m.closed(NOW)
    assert len(emits(acts, "smb.ms17_010")) == 4
    captured = b"".join(a.data for a in acts if isinstance(a, CaptureData))
    assert 0 < len(captured) <= sent
    assert all(not a.complete for a in acts if isinstance(a, CaptureEnd))
    assert m.buffered() == 0


def test_incomplete_capture_is_what_was_received(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    data = bytes(range(256)) * 300
    m.receive(K.nbss(nt_trans(uid, tid, bytes(30), data, 2000)), NOW)
    m.receive(K.nbss(trans2_secondary(uid, tid, data[2000:6000], 2000, len(data), 30)), NOW)
    # a lone byte far out: kept, but the gap before it is not written out as zeros
    wire = K.nbss(trans2_secondary(uid, tid, data[40000:40001], 40000, len(data), 30))
    m.receive(wire, NOW)
    acts = m.closed(NOW)
    captured = b"".join(a.data for a in acts if isinstance(a, CaptureData))
    assert captured == bytes(30) + data[:6000] + data[40000:40001]


def test_pending_transactions_up_to_announced_max_mpx(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    mpx = m.s.product.smb1_max_mpx
    assert mpx == 50
    _, replies = _primaries(m, uid, tid, mpx, total=1000)
    assert all(status1(r) == W.SUCCESS for r in replies)
    assert len(m.smb1.trans.pending) == mpx
    _, replies = _primaries(m, uid, tid, 1, total=1000, mid=0x300)
    assert status1(replies[0]) == INSUFF_SERVER_RESOURCES
    assert len(m.smb1.trans.pending) == mpx


def test_pending_transaction_bytes_bounded(tmp_path):
    m, _, uid, tid = ipc(tmp_path, max_pending_transactions=8192)
    data = bytes(range(256)) * 300
    m.receive(K.nbss(nt_trans(uid, tid, bytes(30), data, 4000)), NOW)
    # growing past the bound: the transaction is dropped, as if it could not be allocated
    acts = m.receive(K.nbss(trans2_secondary(uid, tid, data[4000:9000], 4000, len(data), 30)),
                     NOW)
    assert status1(messages(acts)[0]) == INSUFF_SERVER_RESOURCES
    assert m.smb1.trans.pending == {} and m.buffered() == 0
    # a primary carrying more than the bound is refused outright
    reply = messages(m.receive(K.nbss(nt_trans(uid, tid, bytes(30), data, 9000)), NOW))[0]
    assert status1(reply) == INSUFF_SERVER_RESOURCES and m.buffered() == 0


def test_transaction_out_of_order_secondaries_complete(tmp_path):
    m, _, uid, tid = ipc(tmp_path)
    # (under 64 KiB: past it a 16-bit displacement only makes sense in order)
    data = struct.pack("<I", 0x10000) + bytes(range(256)) * 0x9F
    m.receive(K.nbss(nt_trans(uid, tid, bytes(30), data, 1000)), NOW)
    spans = [(pos, min(pos + 4096, len(data))) for pos in range(1000, len(data), 4096)]
    acts = []
    for lo, hi in reversed(spans):
        acts = m.receive(K.nbss(trans2_secondary(uid, tid, data[lo:hi], lo, len(data), 30)), NOW)
    assert status1(messages(acts)[0]) == W.INVALID_PARAMETER
    captured = b"".join(a.data for a in acts if isinstance(a, CaptureData))
    assert captured == bytes(30) + data and m.buffered() == 0


def test_sparse_buffer_merges_and_bounds():
    from muscipula.protocols.smb.sparse import Sparse

    b = Sparse(20, max_pieces=3)
    assert b.write(10, b"KLM") and b.write(0, b"AB") and b.held() == 5 and b.pieces() == 2
    assert b.write(2, b"CDEFGHIJ") and b.pieces() == 1 and not b.complete()  # joins both
    assert b.write(5, b"fg") and b.held() == 13  # a rewrite: later bytes win, none counted twice
    assert b.write(15, b"P") and b.write(19, b"T")
    assert not b.write(17, b"R")  # a fourth piece: refused, nothing kept
    assert not b.write(19, b"TU")  # past the total
    assert b.received() == b"ABCDEfgHIJKLMPT" and b.held() == 15
    assert b.whole() == b"ABCDEfgHIJKLM\0\0P\0\0\0T"
    assert b.write(13, b"NOPQRS") and b.complete() and b.whole() == b"ABCDEfgHIJKLMNOPQRST"
    assert Sparse(0).complete() and Sparse(0).whole() == b""
