"""What a host carrying the DoublePulsar implant answers on TRANSACTION2 SESSION_SETUP.

The implant hooks that (otherwise unimplemented) subcommand. The operation is the byte sum of
the request's Timeout field: 0x23 ping, 0xC8 exec (an upload), 0x77 kill. It answers with the
usual STATUS_NOT_IMPLEMENTED but raises the MultiplexId by 0x10 (0x20: bad parameters, 0x30:
no memory) and puts a seed in the header's signature field. Clients derive the 32-bit XOR key
from that seed (all 8 bytes, as the public tools do); exec parameters (total size, chunk size,
offset, each a dword) and every data chunk come XORed with that key. Only the chunks that came
are held; the upload is finished once every byte up to its total came. It is the
kernel shellcode, usually with a DLL behind it: the DLL is cut at its MZ header and kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from muscipula.protocols.smb.sparse import Sparse

PING, EXEC, KILL = 0x23, 0xC8, 0x77
OPS = {PING: "ping", EXEC: "exec", KILL: "kill"}
#: MultiplexId deltas of the implant's answer
OK, BAD_PARAMS, NO_MEMORY = 0x10, 0x20, 0x30


def opcode(timeout: int) -> int:
    """The operation the Timeout field carries: the sum of its four bytes."""
    return sum(timeout.to_bytes(4, "little")) & 0xFF


def xor_key(signature: bytes) -> int:
    """The key a client derives from the signature field of a ping answer."""
    s = int.from_bytes(signature[:8], "little")
    return (2 * s ^ ((((s & 0xFF00) | (s << 16)) << 8) | (((s >> 16) | (s & 0xFF0000)) >> 8))) \
        & 0xFFFFFFFF


def unxor(data: bytes, key: int) -> bytes:
    """XOR with the key's four little-endian bytes, repeated from the chunk's start."""
    if not data:
        return b""
    pad = key.to_bytes(4, "little") * (len(data) // 4 + 1)
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad[:len(data)], "little")) \
        .to_bytes(len(data), "little")


def cut_pe(payload: bytes) -> tuple[int, bool]:
    """Where a PE image starts in an upload (an MZ whose e_lfanew points at PE\\0\\0) and
    whether one was found; without one the whole upload is kept as shellcode."""
    at = payload.find(b"MZ")
    while at >= 0:
        if len(payload) >= at + 0x40:
            lfanew = struct.unpack_from("<I", payload, at + 0x3C)[0]
            if payload[at + lfanew:at + lfanew + 4] == b"PE\0\0":
                return at, True
        at = payload.find(b"MZ", at + 2)
    at = payload.find(b"MZ\x90")
    return (at, True) if at >= 0 else (0, False)


@dataclass(slots=True)
class Upload:
    """One exec upload in progress: the decoded bytes that came, at their offsets."""

    total: int
    parts: Sparse


@dataclass(slots=True)
class Step:
    delta: int
    detail: dict[str, int | str]
    #: the decoded upload once its last chunk is in
    payload: bytes | None = None


class Implant:
    """The implant's state on one connection."""

    def __init__(self, key: int, limit: int) -> None:
        self.key = key
        self.limit = limit
        self.upload: Upload | None = None
        self.killed = False

    def buffered(self) -> int:
        return self.upload.parts.held() if self.upload else 0

    def exec(self, params: bytes, data: bytes) -> Step:
        if len(params) < 12:
            return Step(BAD_PARAMS, {"error": "short parameters"})
        total, chunk, offset = struct.unpack("<III", unxor(params[:12], self.key))
        detail: dict[str, int | str] = {"total": total, "chunk": chunk, "offset": offset}
        if total > self.limit:
            self.upload = None
            return Step(NO_MEMORY, {**detail, "error": "too large"})
        if self.upload is None or self.upload.total != total or offset == 0:
            self.upload = Upload(total, Sparse(total))
        up = self.upload
        if chunk != len(data) or offset + chunk > total:
            return Step(BAD_PARAMS, {**detail, "error": "chunk outside the upload"})
        if not up.parts.write(offset, unxor(data, self.key)):
            self.upload = None
            return Step(BAD_PARAMS, {**detail, "error": "scattered chunks"})
        if not up.parts.complete():
            return Step(OK, detail)
        # complete only once every byte up to the total came, whatever the order
        payload = up.parts.whole()
        self.upload = None
        return Step(OK, detail, payload)
