"""SMB1 requests on open files and pipes: NT_CREATE_ANDX, TRANSACTION's TransactNmPipe,
WRITE_ANDX, READ_ANDX and CLOSE; nmap's SMB scripts and old tools reach the IPC$ pipes and the
disk shares this way."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from muscipula.machine import Action
from muscipula.protocols.smb import wire as W
from muscipula.protocols.smb.files import Open

if TYPE_CHECKING:
    from muscipula.protocols.smb.smb1 import Smb1

CLOSE, DELETE, READ_ANDX, WRITE_ANDX, NT_CREATE = 0x04, 0x06, 0x2E, 0x2F, 0xA2
FILE_COMMANDS = (CLOSE, DELETE, READ_ANDX, WRITE_ANDX, NT_CREATE)
TRANSACT_NM_PIPE = 0x26
#: message-mode pipe, reads in message mode, unlimited instances
PIPE_STATE = 0x05FF


def _words(raw: bytes) -> tuple[bytes, int]:
    """The parameter words of a request and the offset of its data (from the header)."""
    at = W.SMB1_HEADER
    count = raw[at] if len(raw) > at else 0
    words = raw[at + 1:at + 1 + 2 * count]
    return words, at + 1 + 2 * count + 2


class FileOps1:
    def __init__(self, smb1: Smb1) -> None:
        self.smb1 = smb1
        self.m = smb1.m
        self.files = smb1.m.files
        #: SMB1's 16-bit FID -> the connection's handle
        self.fids: dict[int, int] = {}

    def reply(self, req: W.Smb1Header, status: int, words: bytes, data: bytes,
              out: list[Action], detail: dict[str, Any] | None = None) -> bytes:
        self.smb1.record(out, req.command, status, detail)
        return W.smb1_header(req, status) + W.smb1_body(words, data)

    def error(self, req: W.Smb1Header, status: int, out: list[Action],
              detail: dict[str, Any] | None = None) -> bytes:
        self.smb1.record(out, req.command, status, detail)
        return W.smb1_error(req, status)

    def open_of(self, req: W.Smb1Header, fid: int) -> Open | None:
        handle = self.fids.get(fid)
        return self.files.get(handle, req.uid) if handle is not None else None

    def handle(self, req: W.Smb1Header, raw: bytes, now: float,
               out: list[Action]) -> bytes | None:
        words, data_at = _words(raw)
        if req.command == NT_CREATE:
            return self.create(req, raw, words, data_at, now, out)
        if req.command == DELETE:
            name = self.name(req, raw, data_at + 1)
            share = self.smb1.trees[req.tid]
            status = self.files.delete(share, name) if self.m.share_status(share)[1] == "disk" \
                else W.ACCESS_DENIED
            detail = {"share": share, "name": name}
            if status != W.SUCCESS:
                return self.error(req, status, out, detail)
            return self.reply(req, status, b"", b"", out, detail)
        fid = struct.unpack_from("<H", words, 4 if req.command != CLOSE else 0)[0] \
            if len(words) >= 6 else -1
        o = self.open_of(req, fid)
        if o is None:
            return self.error(req, W.INVALID_HANDLE, out)
        if req.command == CLOSE:
            detail = {"share": o.share, "name": o.path, "size": o.size}
            self.fids.pop(fid, None)
            out += self.files.close(o.handle)
            return self.reply(req, W.SUCCESS, b"", b"", out, detail)
        if req.command == WRITE_ANDX:
            return self.write(req, raw, words, o, out)
        return self.read(req, words, o, out)

    def create(self, req: W.Smb1Header, raw: bytes, words: bytes, data_at: int, now: float,
               out: list[Action]) -> bytes:
        if len(words) < 48:
            return self.error(req, W.INVALID_PARAMETER, out)
        access = struct.unpack_from("<I", words, 15)[0]
        disposition, options = struct.unpack_from("<II", words, 35)
        name = self.name(req, raw, data_at)
        share = self.smb1.trees[req.tid]
        kind = self.m.share_status(share)[1]
        detail = {"share": share, "name": name, "disposition": disposition,
                  "access": f"0x{access:08x}"}
        status, o, action = self.files.create(req.uid, req.tid, share, kind, name, disposition,
                                              options)
        if o is None:
            return self.error(req, status, out, detail)
        fid = o.handle & 0xFFFF or 1
        self.fids[fid] = o.handle
        t = 0 if o.kind == "pipe" else W.filetime(now if o.kind == "file"
                                                   else self.m.s.boot_time)
        attrs = {"pipe": 0x80, "dir": 0x10}.get(o.kind, 0x20)
        alloc = 4096 if o.kind == "pipe" else 0
        rtype, state = (2, PIPE_STATE) if o.kind == "pipe" else (0, 0)
        fields = struct.pack("<BBHBHIQQQQIQQHHB", 0xFF, 0, 0, 0, fid, action, t, t, t, t,
                             attrs, alloc, o.size, rtype, state, o.kind == "dir")
        return self.reply(req, W.SUCCESS, fields, b"", out, detail)

    @staticmethod
    def name(req: W.Smb1Header, raw: bytes, at: int) -> str:
        """A path in the data at `at`: UTF-16 aligned to 2 from the header, or OEM."""
        if req.flags2 & 0x8000:
            return W.read_utf16z(raw, at + at % 2, 1024)[0]
        return raw[at:].split(b"\0", 1)[0][:1024].decode("latin-1")

    def pipe_transaction(self, req: W.Smb1Header, sub: int, fid: int, data: bytes,
                         max_data: int, out: list[Action]) -> bytes:
        """A named pipe TRANSACTION (its parameters and data reassembled by smb1_trans)."""
        o = self.open_of(req, fid)
        if o is None or o.pipe is None:
            return self.error(req, W.INVALID_HANDLE, out, {"subcommand": sub})
        if sub != TRANSACT_NM_PIPE:
            return self.error(req, W.NOT_SUPPORTED, out, {"subcommand": sub})
        out += o.pipe.write(data)
        answer, more = o.pipe.read(max_data)
        status = W.BUFFER_OVERFLOW if more else W.SUCCESS
        at = W.SMB1_HEADER + 1 + 20 + 2 + 1  # the data after one pad byte
        fields = struct.pack("<HHHHHHHHHBB", 0, len(answer), 0, 0, at, 0, len(answer), at, 0,
                             0, 0)
        return self.reply(req, status, fields, b"\0" + answer, out, {"subcommand": sub})

    def write(self, req: W.Smb1Header, raw: bytes, words: bytes, o: Open,
              out: list[Action]) -> bytes:
        if len(words) < 24:
            return self.error(req, W.INVALID_PARAMETER, out)
        offset = struct.unpack_from("<I", words, 6)[0]
        high, length, data_off = struct.unpack_from("<HHH", words, 18)
        if len(words) >= 28:
            offset |= struct.unpack_from("<I", words, 24)[0] << 32
        length |= high << 16
        data = raw[data_off:data_off + length]
        detail: dict[str, Any] = {}
        if o.pipe is not None:
            out += o.pipe.write(data)
        elif o.kind == "dir":
            return self.error(req, W.INVALID_DEVICE_REQUEST, out)
        else:
            detail = {"name": o.path, "offset": offset, "length": len(data)}
            status, actions = self.files.write(o, offset, data)
            out += actions
            if status != W.SUCCESS:
                return self.error(req, status, out, detail)
        fields = struct.pack("<BBHHHHH", 0xFF, 0, 0, len(data) & 0xFFFF,
                             0xFFFF if o.pipe is not None else 0, len(data) >> 16, 0)
        return self.reply(req, W.SUCCESS, fields, b"", out, detail)

    def read(self, req: W.Smb1Header, words: bytes, o: Open, out: list[Action]) -> bytes:
        if len(words) < 20:
            return self.error(req, W.INVALID_PARAMETER, out)
        offset, max_count = struct.unpack_from("<IH", words, 6)
        more = False
        status = W.SUCCESS
        if o.pipe is not None:
            data, more = o.pipe.read(max_count)
            status = W.BUFFER_OVERFLOW if more else W.SUCCESS
        elif o.kind == "dir":
            return self.error(req, W.INVALID_DEVICE_REQUEST, out)
        elif offset >= o.size:
            return self.error(req, W.END_OF_FILE, out)
        else:
            data = bytes(min(max_count, o.size - offset))  # captured, not kept: zeros
        at = W.SMB1_HEADER + 1 + 24 + 2 + 1
        fields = struct.pack("<BBHHHHHHH8s", 0xFF, 0, 0, 0xFFFF if o.pipe else 0, 0, 0,
                             len(data), at, 0, bytes(8))
        return self.reply(req, status, fields, b"\0" + data, out)
