"""Client messages as Windows, smbclient and impacket build them: for tests and fuzz seeds."""

from __future__ import annotations

import struct

from muscipula.protocols.smb import dcerpc, interfaces, spnego
from muscipula.protocols.smb import wire as W
from muscipula.protocols.smb.ndr import Writer


def nbss(message: bytes, kind: int = 0) -> bytes:
    return bytes([kind]) + len(message).to_bytes(3, "big") + message


def smb1(command: int, words: bytes, data: bytes, *, flags2: int = 0xC843, uid: int = 0,
         tid: int = 0, mid: int = 1) -> bytes:
    head = struct.pack("<4sBIBHH8sHHHHH", W.SMB1_MAGIC, command, 0, 0x18, flags2, 0, bytes(8),
                       0, tid, 0xFEFF, uid, mid)
    return head + W.smb1_body(words, data)


def smb1_negotiate(names: tuple[str, ...] = ("PC NETWORK PROGRAM 1.0", "LANMAN1.0",
                                             "NT LM 0.12"), flags2: int = 0xC843) -> bytes:
    data = b"".join(b"\x02" + n.encode("latin-1") + b"\0" for n in names)
    return smb1(0x72, b"", data, flags2=flags2)


def smb2(command: int, body: bytes, *, mid: int = 0, sid: int = 0, tid: int = 0,
         credits: int = 1) -> bytes:
    head = struct.pack("<4sHHIHHIIQIIQ16s", W.SMB2_MAGIC, 64, 1, 0, command, credits, 0, 0,
                       mid, 0xFEFF, tid, sid, bytes(16))
    return head + body


def smb2_negotiate(dialects: tuple[int, ...] = (0x0202, 0x0210), contexts: bytes = b"",
                   count: int = 0) -> bytes:
    ids = b"".join(struct.pack("<H", d) for d in dialects)
    fixed = 36 + len(ids)
    pad = bytes((8 - (64 + fixed) % 8) % 8) if contexts else b""
    offset = 64 + fixed + len(pad) if contexts else 0
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), 1, 0, 0x7F, bytes(range(16)),
                       offset, count, 0) + ids + pad + contexts
    return smb2(0, body)


def ntlm_negotiate(flags: int = 0xE2088297) -> bytes:
    return b"NTLMSSP\0" + struct.pack("<II", 1, flags) + bytes(16)


def ntlm_authenticate(user: str, domain: str, host: str, nt: bytes, lm: bytes = bytes(24),
                      flags: int = 0xE2088215) -> bytes:
    fields = [lm, nt, domain.encode("utf-16-le"), user.encode("utf-16-le"),
              host.encode("utf-16-le"), b""]
    pos = 64 + 8 + 16
    table = bytearray()
    data = bytearray()
    for raw in fields:
        table += struct.pack("<HHI", len(raw), len(raw), pos + len(data))
        data += raw
    head = b"NTLMSSP\0" + struct.pack("<I", 3) + bytes(table) + struct.pack("<I", flags)
    return head + bytes(8) + bytes(16) + bytes(data)


def spnego_init(token: bytes) -> bytes:
    """The client's NegTokenInit carrying its NTLM NEGOTIATE."""
    body = (spnego.tlv(0xA0, spnego.tlv(0x30, spnego.oid(spnego.NTLMSSP_OID)))
            + spnego.tlv(0xA2, spnego.tlv(0x04, token)))
    return spnego.tlv(0x60, spnego.oid(spnego.SPNEGO_OID)
                      + spnego.tlv(0xA0, spnego.tlv(0x30, body)))


def spnego_resp(token: bytes) -> bytes:
    return spnego.tlv(0xA1, spnego.tlv(0x30, spnego.tlv(0xA2, spnego.tlv(0x04, token))))


def smb2_session_setup(blob: bytes, *, mid: int = 1, sid: int = 0) -> bytes:
    body = struct.pack("<HBBIIHHQ", 25, 0, 1, 1, 0, 64 + 24, len(blob), 0) + blob
    return smb2(1, body, mid=mid, sid=sid)


def smb2_tree_connect(path: str, *, mid: int = 3, sid: int = 0) -> bytes:
    raw = path.encode("utf-16-le")
    return smb2(3, struct.pack("<HHHH", 9, 0, 64 + 8, len(raw)) + raw, mid=mid, sid=sid)


def smb1_session_setup(blob: bytes, *, uid: int = 0) -> bytes:
    words = struct.pack("<BBHHHHIHII", 0xFF, 0, 0, 4356, 10, 0, 0, len(blob), 0, 0x800000D4)
    tail = blob + (b"\0" if (32 + 1 + 24 + 2 + len(blob)) % 2 else b"")
    tail += W.utf16z("Windows 2000 2195") + W.utf16z("Windows 2000 5.0")
    return smb1(0x73, words, tail, uid=uid)


def smb1_tree_connect(path: str, *, uid: int) -> bytes:
    words = struct.pack("<BBHHH", 0xFF, 0, 0, 0x8, 1)
    data = b"\0" + W.utf16z(path) + b"?????\0"  # 1-byte password puts the path on an even offset
    return smb1(0x75, words, data, uid=uid)


def smb2_create(name: str, *, sid: int = 0, tid: int = 0, mid: int = 4, disposition: int = 1,
                options: int = 0, access: int = 0x0012019F) -> bytes:
    raw = name.encode("utf-16-le")
    body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, access, 0x80, 7, disposition,
                       options, 64 + 56, len(raw), 0, 0) + (raw or b"\0")
    return smb2(5, body, mid=mid, sid=sid, tid=tid)


def smb2_file(command: int, fid: int, fields: bytes, *, sid: int, tid: int, mid: int) -> bytes:
    return smb2(command, fields, mid=mid, sid=sid, tid=tid)


def fid16(fid: int) -> bytes:
    return struct.pack("<QQ", fid, fid)


def smb2_close(fid: int, *, sid: int = 0, tid: int = 0, mid: int = 5, flags: int = 1) -> bytes:
    return smb2(6, struct.pack("<HHI", 24, flags, 0) + fid16(fid), mid=mid, sid=sid, tid=tid)


def smb2_write(fid: int, data: bytes, offset: int = 0, *, sid: int = 0, tid: int = 0,
               mid: int = 6) -> bytes:
    body = struct.pack("<HHIQ16sIIHHI", 49, 64 + 48, len(data), offset, fid16(fid), 0, 0, 0,
                       0, 0) + data
    return smb2(9, body, mid=mid, sid=sid, tid=tid)


def smb2_read(fid: int, length: int, offset: int = 0, *, sid: int = 0, tid: int = 0,
              mid: int = 7) -> bytes:
    body = struct.pack("<HBBIQ16sIIIHH", 49, 0, 0, length, offset, fid16(fid), 0, 0, 0, 0,
                       0) + b"\0"
    return smb2(8, body, mid=mid, sid=sid, tid=tid)


def smb2_ioctl(fid: int, ctl: int, data: bytes, max_out: int = 4280, *, sid: int = 0,
               tid: int = 0, mid: int = 8) -> bytes:
    body = struct.pack("<HHI16sIIIIIIII", 57, 0, ctl, fid16(fid), 64 + 56, len(data), 0,
                       0, 0, max_out, 1, 0) + data
    return smb2(11, body, mid=mid, sid=sid, tid=tid)


def rpc_bind(uuid: str, version: tuple[int, int], syntaxes: tuple[tuple[str, int], ...] = (
        (dcerpc.NDR, 2),), *, call_id: int = 1, ctx: int = 0, more: bytes = b"",
        count: int = 1, ptype: int = dcerpc.BIND) -> bytes:
    item = struct.pack("<HBB", ctx, len(syntaxes), 0) + dcerpc.uuid_raw(uuid) + \
        struct.pack("<HH", *version)
    item += b"".join(dcerpc.uuid_raw(s) + struct.pack("<I", v) for s, v in syntaxes)
    body = struct.pack("<HHIBBH", 4280, 4280, 0, count, 0, 0) + item + more
    return dcerpc.header(ptype, 3, call_id, len(body)) + body


def rpc_request(opnum: int, stub: bytes, *, ctx: int = 0, call_id: int = 2,
                flags: int = 3) -> bytes:
    body = struct.pack("<IHH", len(stub), ctx, opnum) + stub
    return dcerpc.header(dcerpc.REQUEST, flags, call_id, len(body)) + body


def share_enum_stub(level: int = 1, server: str = "\\\\127.0.0.2") -> bytes:
    """NetrShareEnum as rpcclient and nmap send it: a resume handle, no buffer."""
    w = Writer()
    w.ref()
    w.string(server)
    w.u32(level)
    w.u32(level)
    w.ref()
    w.u32(0)
    w.u32(0)
    w.u32(0xFFFFFFFF)
    w.ref()
    w.u32(0)
    return w.bytes()


def server_info_stub(level: int = 101, server: str = "127.0.0.2") -> bytes:
    w = Writer()
    w.ref()
    w.string(server)
    w.u32(level)
    return w.bytes()


SRVSVC = interfaces.SRVSVC

def smb1_trans2(setup: int, timeout: int, params: bytes, data: bytes, *, uid: int, tid: int,
                mid: int = 0x41) -> bytes:
    """TRANSACTION2 whole in one message (DoublePulsar's ping and exec, setup 0x0E)."""
    at = 32 + 1 + 30 + 2 + 1
    words = struct.pack("<HHHHBBHIHHHHHBBH", len(params), len(data), 1, 0, 0, 0, 0, timeout,
                        0, len(params), at, len(data), at + len(params), 1, 0, setup)
    return smb1(0x32, words, b"\0" + params + data, uid=uid, tid=tid, mid=mid)


def smb1_nt_trans(params: bytes, data: bytes, first: int, *, uid: int, tid: int) -> bytes:
    """NT_TRANSACT carrying `first` bytes of its data (EternalBlue's opener)."""
    at = 32 + 1 + 40 + 2 + 1
    words = struct.pack("<BHIIIIIIIIBHH", 1, 0, len(params), len(data), len(params), 0,
                        len(params), at, first, at + len(params), 1, 0, 0)
    return smb1(0xA0, words, b"\0" + params + data[:first], uid=uid, tid=tid, mid=0x50)


def smb1_trans2_secondary(chunk: bytes, displacement: int, total: int, *, uid: int,
                          tid: int) -> bytes:
    words = struct.pack("<HHHHHHHHH", 0, total & 0xFFFF, 0, 0, 0, len(chunk), 32 + 1 + 18 + 2,
                        displacement & 0xFFFF, 0xFFFF)
    return smb1(0x33, words, chunk, uid=uid, tid=tid, mid=0x50)


NT_V2 = bytes(range(16)) + b"\x01\x01\0\0" + bytes(4) + bytes(8) + bytes(range(8)) + bytes(8)

FUZZ_SEEDS = (
    nbss(smb1_negotiate(("NT LM 0.12", "SMB 2.002", "SMB 2.???")))
    + nbss(smb2_negotiate()) + nbss(smb2_session_setup(spnego_init(ntlm_negotiate())))
    + nbss(smb2_session_setup(spnego_resp(ntlm_authenticate("admin", "WS", "WS", NT_V2)),
                              mid=2))
    + nbss(smb2_tree_connect("\\\\srv\\IPC$")),
    nbss(b"\x20" * 68, 0x81) + nbss(smb1_negotiate())
    + nbss(smb1_session_setup(spnego_init(ntlm_negotiate())))
    + nbss(smb1_session_setup(spnego_resp(ntlm_authenticate("", "", "", b"", b"\0")),
                              uid=0x800))
    + nbss(smb1_tree_connect("\\\\SRV\\IPC$", uid=0x800)),
    nbss(smb2_negotiate()) + nbss(smb2_session_setup(spnego_init(ntlm_negotiate())))
    + nbss(smb2_session_setup(spnego_resp(ntlm_authenticate("", "", "", b"", b"\0")), mid=2))
    + nbss(smb2_tree_connect("\\\\srv\\IPC$")) + nbss(smb2_create("srvsvc"))
    + nbss(smb2_write(0, rpc_bind(SRVSVC, (3, 0)))) + nbss(smb2_read(0, 4280))
    + nbss(smb2_ioctl(0, 0x0011C017, rpc_request(15, share_enum_stub())))
    + nbss(smb2_tree_connect("\\\\srv\\C$")) + nbss(smb2_create("a.exe", disposition=5))
    + nbss(smb2_write(0, b"MZ" * 64, 4)) + nbss(smb2_write(0, b"MZ\x90\0")) + nbss(smb2_close(0)),
    nbss(smb1_negotiate()) + nbss(smb1_session_setup(spnego_init(ntlm_negotiate())))
    + nbss(smb1_session_setup(spnego_resp(ntlm_authenticate("", "", "", b"", b"\0")),
                              uid=0x800))
    + nbss(smb1_tree_connect("\\\\SRV\\IPC$", uid=0x800))
    + nbss(smb1_trans2(0x0E, 0x00A4D9A6, bytes(12), b"", uid=0x800, tid=1))
    + nbss(smb1_trans2(0x0E, 0xC8, bytes(12), b"MZ" * 32, uid=0x800, tid=1))
    + nbss(smb1_nt_trans(bytes(30), bytes(3000), 1000, uid=0x800, tid=1))
    + nbss(smb1_trans2_secondary(bytes(2000), 1000, 3000, uid=0x800, tid=1)),
    nbss(smb2_negotiate((0x0202, 0x0210, 0x0300, 0x0302, 0x0311),
                        struct.pack("<HHI", 1, 38, 0) + struct.pack("<HHH", 1, 32, 1)
                        + bytes(32), 1)),
)
