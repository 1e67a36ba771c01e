"""SMB2 requests on open files and pipes: CREATE, CLOSE, READ, WRITE, IOCTL (pipe transceive),
QUERY_INFO, SET_INFO, QUERY_DIRECTORY, FLUSH and LOCK, answered as Windows and Samba do for
an empty volume that takes writes and for the IPC$ pipes."""

from __future__ import annotations

import fnmatch
import struct
from typing import TYPE_CHECKING

from muscipula.machine import Action
from muscipula.protocols.smb import wire as W
from muscipula.protocols.smb.files import Open

if TYPE_CHECKING:
    from muscipula.protocols.smb.smb2 import Smb2

CREATE, CLOSE, FLUSH, READ, WRITE, LOCK, IOCTL = 5, 6, 7, 8, 9, 10, 11
QUERY_DIRECTORY, CHANGE_NOTIFY, QUERY_INFO, SET_INFO = 14, 15, 16, 17
FILE_COMMANDS = (CREATE, CLOSE, FLUSH, READ, WRITE, LOCK, IOCTL, QUERY_DIRECTORY,
                 CHANGE_NOTIFY, QUERY_INFO, SET_INFO)
PIPE_TRANSCEIVE, VALIDATE_NEGOTIATE = 0x0011C017, 0x00140204
DFS_REFERRALS = (0x00060194, 0x000601B0)
ATTR_DIRECTORY, ATTR_ARCHIVE, ATTR_NORMAL = 0x10, 0x20, 0x80
NTFS_ATTRIBUTES = 0x00E700FF  # what 2008 R2's NTFS and Samba's ext4 both announce


def async_header(req: W.Smb2Header, status: int, credits: int, async_id: int) -> bytes:
    """A response header of the async form: AsyncId where ProcessId and TreeId were."""
    flags = W.FLAG_RESPONSE | W.FLAG_ASYNC
    return struct.pack("<4sHHIHHIIQQQ16s", W.SMB2_MAGIC, 64, req.credit_charge, status,
                       req.command, credits, flags, 0, req.message_id, async_id,
                       req.session_id, bytes(16))


def _fid(body: bytes, at: int) -> int:
    return struct.unpack_from("<Q", body, at + 8)[0] if len(body) >= at + 16 else -1


def _file_id(o: Open) -> bytes:
    return struct.pack("<QQ", o.handle, o.handle)


class FileOps:
    """The file half of the SMB2 server: one per connection."""

    def __init__(self, smb2: Smb2) -> None:
        self.smb2 = smb2
        self.m = smb2.m
        self.files = smb2.m.files
        #: directory handles already listed (QUERY_DIRECTORY answers NO_MORE_FILES next)
        self.listed: set[int] = set()
        #: requests answered STATUS_PENDING: message id -> (request, async id)
        self.waiting: dict[int, tuple[W.Smb2Header, int]] = {}
        self.count = 0
        #: the handle a CREATE in this compound made, for related requests' FileId -1
        self.related: int | None = None

    def times(self, o: Open, now: float) -> tuple[int, int, int, int]:
        t = W.filetime(self.m.s.boot_time if o.kind != "file" else now)
        return (0, 0, 0, 0) if o.kind == "pipe" else (t, t, t, t)

    def attrs(self, o: Open) -> int:
        return {"pipe": ATTR_NORMAL, "dir": ATTR_DIRECTORY}.get(o.kind, ATTR_ARCHIVE)

    def sizes(self, o: Open) -> tuple[int, int]:
        if o.kind == "pipe":
            return 4096, 0
        return (o.size + 4095) // 4096 * 4096, o.size

    def handle(self, req: W.Smb2Header, raw: bytes, now: float,
               out: list[Action]) -> bytes | None:
        body = raw[W.SMB2_HEADER:]
        share = self.smb2.trees[req.tree_id]
        if req.command == CREATE:
            return self.create(req, raw, body, share, now, out)
        fid = _fid(body, {CLOSE: 8, FLUSH: 8, READ: 16, WRITE: 16, LOCK: 8, IOCTL: 8,
                          QUERY_DIRECTORY: 8, CHANGE_NOTIFY: 8, QUERY_INFO: 24,
                          SET_INFO: 16}[req.command])
        if fid == 0xFFFFFFFFFFFFFFFF and req.flags & W.FLAG_RELATED and self.related:
            fid = self.related
        o = self.files.get(fid, req.session_id)
        if req.command == IOCTL and o is None:
            return self.ioctl(req, raw, body, None, out)
        if o is None:
            return self.error(req, W.FILE_CLOSED, out)
        method = {CLOSE: self.close, FLUSH: self.flush, READ: self.read, WRITE: self.write,
                  LOCK: self.flush, IOCTL: self.ioctl, QUERY_DIRECTORY: self.query_directory,
                  CHANGE_NOTIFY: self.notify, QUERY_INFO: self.query_info,
                  SET_INFO: self.set_info}[req.command]
        if method in (self.close, self.query_info, self.query_directory):
            return method(req, raw, body, o, out, now)
        return method(req, raw, body, o, out)

    def error(self, req: W.Smb2Header, status: int, out: list[Action],
              detail: dict | None = None) -> bytes:
        self.smb2.record(out, req, status, detail)
        return W.smb2_error(req, status, self.smb2.credits(req))

    def ok(self, req: W.Smb2Header, out: list[Action], fields: bytes,
           detail: dict | None = None, status: int = W.SUCCESS) -> bytes:
        self.smb2.record(out, req, status, detail)
        return W.smb2_header(req, status, self.smb2.credits(req)) + fields

    # ---------------------------------------------------------------- CREATE / CLOSE

    def create(self, req: W.Smb2Header, raw: bytes, body: bytes, share: str, now: float,
               out: list[Action]) -> bytes:
        if len(body) < 56:
            return self.error(req, W.INVALID_PARAMETER, out)
        access, _attrs, _sharing, disposition, options, off, length = struct.unpack_from(
            "<IIIIIHH", body, 24)
        name = raw[off:off + min(length, 2048)].decode("utf-16-le", "replace") if off else ""
        kind = self.m.share_status(share)[1]
        detail = {"share": share, "name": name, "disposition": disposition,
                  "access": f"0x{access:08x}"}
        status, o, action = self.files.create(req.session_id, req.tree_id, share, kind, name,
                                              disposition, options)
        if o is None:
            return self.error(req, status, out, detail)
        self.related = o.handle
        ctime = self.times(o, now)
        alloc, eof = self.sizes(o)
        fields = struct.pack("<HBBIQQQQQQII", 89, 0, 0, action, *ctime, alloc, eof,
                             self.attrs(o), 0) + _file_id(o) + struct.pack("<II", 0, 0)
        return self.ok(req, out, fields + b"\0" * 8, detail)

    def close(self, req: W.Smb2Header, raw: bytes, body: bytes, o: Open, out: list[Action],
              now: float) -> bytes:
        flags = struct.unpack_from("<H", body, 2)[0]
        alloc, eof = self.sizes(o)
        info = (struct.pack("<QQQQQQI", *self.times(o, now), alloc, eof, self.attrs(o))
                if flags & 1 else bytes(52))
        self.listed.discard(o.handle)
        detail = {"share": o.share, "name": o.path, "size": o.size}
        out += self.files.close(o.handle)
        return self.ok(req, out, struct.pack("<HHI", 60, flags & 1, 0) + info, detail)

    def flush(self, req: W.Smb2Header, raw: bytes, body: bytes, o: Open,
              out: list[Action]) -> bytes:
        if o.kind == "dir":
            return self.error(req, W.INVALID_DEVICE_REQUEST, out)
        return self.ok(req, out, struct.pack("<HH", 4, 0))

    def notify(self, req: W.Smb2Header, raw: bytes, body: bytes, o: Open,
               out: list[Action]) -> bytes:
        return self.error(req, W.NOT_SUPPORTED if o.kind != "dir" else W.NOT_IMPLEMENTED, out)

    # ---------------------------------------------------------------- READ / WRITE

    def read(self, req: W.Smb2Header, raw: bytes, body: bytes, o: Open,
             out: list[Action]) -> bytes:
        length, offset = struct.unpack_from("<IQ", body, 4)
        length = min(length, W.message_room(self.m.s.cfg.max_message))
        if o.pipe is not None:
            data, more = o.pipe.read(length)
            if not data:
                # a blocking pipe read with nothing to read waits (until CANCEL)
                return self.wait(req, out)
            status = W.BUFFER_OVERFLOW if more else W.SUCCESS
            return self.ok(req, out, struct.pack("<HBBIII", 17, 80, 0, len(data), 0, 0) + data,
                           status=status)
        if o.kind == "dir":
            return self.error(req, W.INVALID_DEVICE_REQUEST, out)
        if offset >= o.size:
            return self.error(req, W.END_OF_FILE, out)
        # what was written is in the capture, not here: the bytes read back are zeros
        data = bytes(min(length, o.size - offset))
        return self.ok(req, out, struct.pack("<HBBIII", 17, 80, 0, len(data), 0, 0) + data)

    def write(self, req: W.Smb2Header, raw: bytes, body: bytes, o: Open,
              out: list[Action]) -> bytes:
        data_off, length, offset = struct.unpack_from("<HIQ", body, 2)
        data = raw[data_off:data_off + length] if data_off >= W.SMB2_HEADER else b""
        if o.pipe is not None:
            out += o.pipe.write(data)
            status = W.SUCCESS
        elif o.kind == "dir":
            return self.error(req, W.INVALID_DEVICE_REQUEST, out)
        else:
            status, actions = self.files.write(o, offset, data)
            out += actions
            if status != W.SUCCESS:
                return self.error(req, status, out, {"name": o.path, "offset": offset})
        detail = {"name": o.path, "offset": offset, "length": len(data)} \
            if o.pipe is None else {}
        return self.ok(req, out, struct.pack("<HHIIHH", 17, 0, len(data), 0, 0, 0), detail)

    def wait(self, req: W.Smb2Header, out: list[Action]) -> bytes:
        """The interim STATUS_PENDING answer of a request that waits."""
        self.smb2.record(out, req, W.PENDING)
        if len(self.waiting) >= 64:
            self.waiting.pop(next(iter(self.waiting)))
        self.count += 1
        async_id = self.count
        self.waiting[req.message_id] = (req, async_id)
        return async_header(req, W.PENDING, self.smb2.credits(req), async_id) + \
            struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"

    def cancel(self, req: W.Smb2Header, out: list[Action]) -> bytes | None:
        """CANCEL of a waiting request: that request ends STATUS_CANCELLED."""
        if req.flags & W.FLAG_ASYNC:
            async_id = req.process_id | req.tree_id << 32
            mid = next((k for k, v in self.waiting.items() if v[1] == async_id), None)
        else:
            mid = req.message_id if req.message_id in self.waiting else None
        if mid is None:
            return None
        waiting, async_id = self.waiting.pop(mid)
        self.smb2.record(out, waiting, W.CANCELLED)
        return async_header(waiting, W.CANCELLED, 0, async_id) + \
            struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"

    # ---------------------------------------------------------------- IOCTL

    def ioctl(self, req: W.Smb2Header, raw: bytes, body: bytes, o: Open | None,
              out: list[Action]) -> bytes:
        if len(body) < 56:
            return self.error(req, W.INVALID_PARAMETER, out)
        ctl = struct.unpack_from("<I", body, 4)[0]
        file_id = body[8:24]
        in_off, in_count = struct.unpack_from("<II", body, 24)
        max_out = struct.unpack_from("<I", body, 44)[0]
        detail = {"ctl": f"0x{ctl:08x}"}
        data = raw[in_off:in_off + in_count] if in_off >= W.SMB2_HEADER else b""
        output = b""
        status = W.SUCCESS
        if ctl == VALIDATE_NEGOTIATE and self.smb2.dialect >= 0x0300:
            p, s = self.m.s.product, self.m.s
            output = struct.pack("<I16sHH", p.capabilities(self.smb2.dialect), s.server_guid,
                                 p.security_mode, self.smb2.dialect)
        elif ctl in DFS_REFERRALS:
            return self.error(req, W.NOT_FOUND, out, detail)
        elif o is None:
            return self.error(req, W.FILE_CLOSED, out, detail)
        elif ctl == PIPE_TRANSCEIVE and o.pipe is not None:
            out += o.pipe.write(data)
            output, more = o.pipe.read(max_out)
            status = W.BUFFER_OVERFLOW if more else W.SUCCESS
        else:
            return self.error(req, W.INVALID_DEVICE_REQUEST if o.kind != "pipe"
                              else W.NOT_SUPPORTED, out, detail)
        fields = struct.pack("<HHI16sIIIIII", 49, 0, ctl, file_id, 112, 0, 112, len(output),
                             0, 0)
        return self.ok(req, out, fields + output, detail, status)

    # ---------------------------------------------------------------- QUERY / SET INFO

    def query_info(self, req: W.Smb2Header, raw: bytes, body: bytes, o: Open,
                   out: list[Action], now: float) -> bytes:
        kind, cls, out_len = struct.unpack_from("<BBI", body, 2)
        data = self.file_info(o, cls, now) if kind == 1 else \
            self.fs_info(o, cls) if kind == 2 else None
        detail = {"type": kind, "class": cls}
        if data is None:
            return self.error(req, W.INVALID_INFO_CLASS if kind in (1, 2) else
                              W.ACCESS_DENIED, out, detail)
        status = W.SUCCESS
        if len(data) > out_len:
            # names make a reply longer than asked: cut; a fixed size that does not fit: no
            if (kind, cls) not in ((1, 18), (1, 22), (2, 1), (2, 5)):
                return self.error(req, W.INFO_LENGTH_MISMATCH, out, detail)
            data, status = data[:out_len], W.BUFFER_OVERFLOW
        return self.ok(req, out, struct.pack("<HHI", 9, 72, len(data)) + data, detail, status)

    def file_info(self, o: Open, cls: int, now: float) -> bytes | None:
        times = self.times(o, now)
        alloc, eof = self.sizes(o)
        attrs = self.attrs(o)
        basic = struct.pack("<QQQQII", *times, attrs, 0)
        standard = struct.pack("<QQIBBH", alloc, eof, 1, 0, o.kind == "dir", 0)
        name = ("\\" + o.path).encode("utf-16-le")
        if cls == 4:
            return basic
        if cls == 5:
            return standard
        if cls == 6:
            return struct.pack("<Q", o.handle)
        if cls in (7, 16, 17):
            return bytes(4)
        if cls == 8:
            return struct.pack("<I", 0x001F01FF)
        if cls == 14:
            return bytes(8)
        if cls == 18:
            return (basic + standard + struct.pack("<QIIQIII", o.handle, 0, 0x001F01FF, 0, 0,
                                                   0, len(name)) + name)
        if cls == 22 and o.kind == "file":
            stream = "::$DATA".encode("utf-16-le")
            return struct.pack("<IIQQ", 0, len(stream), eof, alloc) + stream
        if cls == 34:
            return struct.pack("<QQQQQQII", *times, alloc, eof, attrs, 0)
        if cls == 35:
            return struct.pack("<II", attrs, 0)
        return None

    def fs_info(self, o: Open, cls: int) -> bytes | None:
        s = self.m.s
        serial = (s.file_base * 2654435761 >> 12) & 0xFFFFFFFF
        total = 26_214_143 + (s.file_base & 0xFFFF) * 16  # about 100 GiB in 4 KiB units
        free = total * 3 // 5
        if cls == 1:
            return struct.pack("<QIIBB", W.filetime(s.boot_time), serial, 0, 0, 0)
        if cls == 3:
            return struct.pack("<QQII", total, free, 8, 512)
        if cls == 4:
            return struct.pack("<II", 0x07 if o.kind != "pipe" else 0x11, 0x20)
        if cls == 5:
            fs = "NTFS".encode("utf-16-le")
            return struct.pack("<III", NTFS_ATTRIBUTES, 255, len(fs)) + fs
        if cls == 7:
            return struct.pack("<QQQII", total, free, free, 8, 512)
        return None

    def set_info(self, req: W.Smb2Header, raw: bytes, body: bytes, o: Open,
                 out: list[Action]) -> bytes:
        kind, cls, length, off = struct.unpack_from("<BBIH", body, 2)
        data = raw[off:off + min(length, 4096)] if off >= W.SMB2_HEADER else b""
        detail = {"type": kind, "class": cls, "name": o.path}
        if o.kind == "pipe" and (kind, cls) != (1, 23):
            return self.error(req, W.INVALID_PARAMETER, out, detail)
        if kind == 1 and cls == 20 and o.kind == "file" and len(data) >= 8:
            size = struct.unpack_from("<Q", data)[0]
            if size > self.m.s.cfg.max_file_size:
                return self.error(req, W.DISK_FULL, out, detail)
            o.size = max(size, o.next)
        return self.ok(req, out, struct.pack("<H", 2), detail)

    # ---------------------------------------------------------------- QUERY_DIRECTORY

    def query_directory(self, req: W.Smb2Header, raw: bytes, body: bytes, o: Open,
                        out: list[Action], now: float) -> bytes:
        if len(body) < 32:
            return self.error(req, W.INVALID_PARAMETER, out)
        cls, flags = body[2], body[3]
        off, length, out_len = struct.unpack_from("<HHI", body, 24)
        pattern = raw[off:off + min(length, 1024)].decode("utf-16-le", "replace") \
            if off >= W.SMB2_HEADER else "*"
        detail = {"name": o.path, "pattern": pattern}
        if o.kind != "dir":
            return self.error(req, W.INVALID_PARAMETER, out, detail)
        if cls not in (1, 2, 3, 12, 37, 38):
            return self.error(req, W.INVALID_INFO_CLASS, out, detail)
        first = o.handle not in self.listed or flags & 0x11
        if not first:
            return self.error(req, W.NO_MORE_FILES, out, detail)
        self.listed.add(o.handle)
        prefix = (o.path.lower() + "\\") if o.path else ""
        names: list[tuple[str, str, int]] = [(".", "dir", 0), ("..", "dir", 0)]
        for (share, path), kind in self.files.names.items():
            if share == o.share and path.startswith(prefix) and "\\" not in path[len(prefix):]:
                size = next((x.size for x in self.files.opens.values()
                             if x.share == share and x.path.lower() == path),
                            self.files.sizes.get((share, path), 0))
                names.append((path[len(prefix):], kind, size))
        names = [n for n in names if fnmatch.fnmatch(n[0].lower(), (pattern or "*").lower())]
        if not names:
            return self.error(req, W.NO_SUCH_FILE, out, detail)
        t = W.filetime(now)
        entries = []
        for i, (name, kind, size) in enumerate(names):
            raw_name = name.encode("utf-16-le")
            attrs = ATTR_DIRECTORY if kind == "dir" else ATTR_ARCHIVE
            alloc = (size + 4095) // 4096 * 4096
            if cls == 12:
                entry = struct.pack("<III", 0, i, len(raw_name)) + raw_name
            else:
                entry = struct.pack("<IIQQQQQQII", 0, 0, t, t, t, t, size, alloc, attrs,
                                    len(raw_name))
                if cls == 2:
                    entry += bytes(4)
                elif cls == 3:
                    entry += bytes(4 + 2 + 24)
                elif cls == 37:
                    entry += bytes(4 + 2 + 24 + 2) + struct.pack("<Q", 0x10000 + i)
                elif cls == 38:
                    entry += bytes(8) + struct.pack("<Q", 0x10000 + i)
                entry += raw_name
            entries.append(entry)
        blob = bytearray()
        for i, entry in enumerate(entries):
            e = bytearray(entry)
            if i < len(entries) - 1:
                e += bytes((8 - len(e) % 8) % 8)
                e[0:4] = struct.pack("<I", len(e))
            if len(blob) + len(e) > out_len:
                break
            blob += e
        if not blob:
            return self.error(req, W.INFO_LENGTH_MISMATCH, out, detail)
        return self.ok(req, out, struct.pack("<HHI", 9, 72, len(blob)) + bytes(blob), detail)

