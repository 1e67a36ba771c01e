"""Client messages as Windows, smbclient and impacket build them: for tests and fuzz seeds."""

from __future__ import annotations

import struct

from muscipula.protocols.smb import spnego
from muscipula.protocols.smb import wire as W


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
    nbss(smb2_negotiate((0x0202, 0x0210, 0x0300, 0x0302, 0x0311),
                        struct.pack("<HHI", 1, 38, 0) + struct.pack("<HHH", 1, 32, 1)
                        + bytes(32), 1)),
)
