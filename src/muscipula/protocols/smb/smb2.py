"""SMB2/3 requests: NEGOTIATE, SESSION_SETUP, TREE_CONNECT/DISCONNECT, LOGOFF, ECHO; every
other command answered with the status the server gives when it has nothing to offer."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from muscipula.machine import Action, Emit
from muscipula.protocols.smb import auth as A
from muscipula.protocols.smb import spnego
from muscipula.protocols.smb import wire as W
from muscipula.protocols.smb.product import DIALECT_NAMES
from muscipula.protocols.smb.smb2_files import FILE_COMMANDS, FileOps

if TYPE_CHECKING:
    from muscipula.protocols.smb.machine import SmbMachine

NEGOTIATE, SESSION_SETUP, LOGOFF, TREE_CONNECT, TREE_DISCONNECT, CREATE = range(6)
CANCEL, ECHO = 0x0C, 0x0D
PREAUTH, ENCRYPTION, SIGNING = 0x0001, 0x0002, 0x0008
#: Samba 4.17's orders of preference
CIPHERS = (0x0002, 0x0001, 0x0004, 0x0003)
SIGNINGS = (0x0002, 0x0001, 0x0000)
#: SessionFlags
IS_GUEST, IS_NULL = 0x1, 0x2


def _pad8(n: int) -> int:
    return (8 - n % 8) % 8


def _contexts(data: bytes, offset: int, count: int) -> dict[int, bytes]:
    """The client's negotiate contexts (3.1.1), bounded by the message."""
    out: dict[int, bytes] = {}
    pos = offset
    for _ in range(min(count, 16)):
        if pos + 8 > len(data):
            break
        kind, length = struct.unpack_from("<HH", data, pos)
        out.setdefault(kind, data[pos + 8:pos + 8 + length])
        pos += 8 + length
        pos += _pad8(pos)
    return out


def _ids(raw: bytes, at: int) -> list[int]:
    if len(raw) < at + 2:
        return []
    count = struct.unpack_from("<H", raw, at)[0]
    return _words(raw[at + 2:at + 2 + 2 * min(count, 32)])


def negotiate_body(m: SmbMachine, dialect: int, now: float,
                   contexts: dict[int, bytes] | None = None) -> bytes:
    """NEGOTIATE response body (after the header)."""
    s, p = m.s, m.s.product
    buf = spnego.neg_token_init(p.mechs)
    room = W.message_room(s.cfg.max_message)
    transact, read, write = (min(n, room) for n in
                             p.sizes(dialect if dialect != 0x02FF else 0x0210))
    start = W.filetime(s.boot_time) if p.start_time else 0
    sec_off = W.SMB2_HEADER + 64
    ctx_blob = b""
    ctx_count = 0
    if dialect == 0x0311 and contexts is not None:
        items = []
        items.append((PREAUTH, struct.pack("<HHH", 1, 32, 0x0001) + s.random(32)))
        ciphers = _ids(contexts.get(ENCRYPTION, b""), 0)
        chosen = next((c for c in CIPHERS if c in ciphers), 0)
        if ENCRYPTION in contexts:
            items.append((ENCRYPTION, struct.pack("<HH", 1, chosen)))
        signings = _ids(contexts.get(SIGNING, b""), 0)
        if SIGNING in contexts:
            algo = next((a for a in SIGNINGS if a in signings), 0x0001)
            items.append((SIGNING, struct.pack("<HH", 1, algo)))
        for i, (kind, data) in enumerate(items):
            ctx_blob += struct.pack("<HHI", kind, len(data), 0) + data
            if i < len(items) - 1:
                ctx_blob += bytes(_pad8(len(data)))
        ctx_count = len(items)
    ctx_off = 0
    pad = b""
    if ctx_count:
        end = sec_off + len(buf)
        pad = bytes(_pad8(end))
        ctx_off = end + len(pad)
    body = struct.pack("<HHHH16sIIIIQQHHI", 65, p.security_mode, dialect, ctx_count,
                       s.server_guid, p.capabilities(dialect), transact, read, write,
                       W.filetime(now), start, sec_off, len(buf), ctx_off)
    return body + buf + pad + ctx_blob


class Smb2:
    """The SMB2 half of one connection."""

    def __init__(self, m: SmbMachine) -> None:
        self.m = m
        self.dialect = 0
        self.sessions: dict[int, A.Auth] = {}
        self.trees: dict[int, str] = {}
        self.next_session = 0
        self.next_tree = 1
        self.fileops = FileOps(self)

    def credits(self, req: W.Smb2Header) -> int:
        if req.command == NEGOTIATE:
            return 1
        return max(1, min(req.credits, 512 if self.m.s.product.samba else 256))

    def handle(self, raw: bytes, now: float) -> tuple[list[bytes], list[Action]]:
        """Every request of a (compounded) message; the responses, one per request."""
        replies: list[bytes] = []
        out: list[Action] = []
        pos = 0
        prev: W.Smb2Header | None = None
        self.fileops.related = None
        # every request of the compound is answered, however many: each takes 64 bytes at least
        for _ in range(len(raw) // W.SMB2_HEADER + 1):
            req = W.parse_smb2(raw[pos:])
            if req is None:
                out.append(Emit("protocol.error", {"detail": "short SMB2 header",
                                                   "data": raw[pos:pos + 512]}))
                break
            if req.flags & W.FLAG_RELATED and prev is not None:
                # a related request works on its predecessor's session, tree and file
                if req.session_id == 0xFFFFFFFFFFFFFFFF:
                    req.session_id = prev.session_id
                if req.tree_id == 0xFFFFFFFF:
                    req.tree_id = prev.tree_id
            else:
                self.fileops.related = None
            prev = req
            end = pos + req.next_command if req.next_command else len(raw)
            if end <= pos or end > len(raw):
                end = len(raw)
            reply = self.one(req, raw[pos:end], now, out)
            if reply is not None:
                replies.append(reply)
            if not req.next_command or end >= len(raw):
                break
            pos = end
        return replies, out

    def record(self, out: list[Action], req: W.Smb2Header, status: int,
               detail: dict[str, Any] | None = None) -> None:
        name = W.smb2_name(req.command)
        out.append(Emit("smb.command", {
            "dialect": DIALECT_NAMES.get(self.dialect, "2"), "command": name,
            "status": W.status_name(status), "detail": detail or {}}))

    def one(self, req: W.Smb2Header, raw: bytes, now: float, out: list[Action]) -> bytes | None:
        body = raw[W.SMB2_HEADER:]
        credits = self.credits(req)
        if req.command == NEGOTIATE:
            return self.negotiate(req, raw, body, now, out)
        if req.command == CANCEL:
            self.record(out, req, W.SUCCESS)
            return self.fileops.cancel(req, out)  # answered by the cancelled request
        if req.command == ECHO:
            self.record(out, req, W.SUCCESS)
            return W.smb2_header(req, W.SUCCESS, credits) + struct.pack("<HH", 4, 0)
        if not self.dialect:
            self.record(out, req, W.INVALID_PARAMETER, {"error": "before NEGOTIATE"})
            self.m.errors += 1
            return W.smb2_error(req, W.INVALID_PARAMETER, credits)
        if req.command == SESSION_SETUP:
            return self.session_setup(req, body, now, out)
        auth = self.sessions.get(req.session_id)
        if auth is None or not auth.done:
            self.record(out, req, W.USER_SESSION_DELETED)
            return W.smb2_error(req, W.USER_SESSION_DELETED, credits)
        if req.command == LOGOFF:
            del self.sessions[req.session_id]
            out.extend(self.m.files.close_where(req.session_id))
            self.record(out, req, W.SUCCESS)
            return W.smb2_header(req, W.SUCCESS, credits) + struct.pack("<HH", 4, 0)
        if req.command == TREE_CONNECT:
            return self.tree_connect(req, body, out)
        if req.tree_id not in self.trees:
            self.record(out, req, W.NETWORK_NAME_DELETED)
            return W.smb2_error(req, W.NETWORK_NAME_DELETED, credits)
        if req.command == TREE_DISCONNECT:
            share = self.trees.pop(req.tree_id)
            out.extend(self.m.files.close_where(req.session_id, req.tree_id))
            self.record(out, req, W.SUCCESS, {"share": share})
            return W.smb2_header(req, W.SUCCESS, credits) + struct.pack("<HH", 4, 0)
        if req.command in FILE_COMMANDS:
            return self.fileops.handle(req, raw, now, out)
        status = W.FILE_CLOSED if req.command in (6, 7, 8, 9, 10, 14, 15, 16, 17) \
            else W.NOT_SUPPORTED
        self.record(out, req, status)
        out.append(Emit("smb.unsupported", {"dialect": DIALECT_NAMES.get(self.dialect, "2"),
                                            "command": W.smb2_name(req.command),
                                            "size": len(raw)}))
        return W.smb2_error(req, status, credits)

    def negotiate(self, req: W.Smb2Header, raw: bytes, body: bytes, now: float,
                  out: list[Action]) -> bytes | None:
        offered: list[int] = []
        if len(body) >= 36:
            count = struct.unpack_from("<H", body, 2)[0]
            if len(body) >= 36 + 2 * min(count, 64):  # a short list: INVALID_PARAMETER
                offered = _words(body[36:36 + 2 * min(count, 64)])
        dialect = self.m.s.product.pick(offered) if not self.dialect else None
        detail = {"offered": [DIALECT_NAMES.get(d, f"0x{d:04X}") for d in offered]}
        if dialect is None:
            status = W.NOT_SUPPORTED if offered and not self.dialect else W.INVALID_PARAMETER
            self.record(out, req, status, detail)
            self.m.close_after = True
            return W.smb2_error(req, status, 1)
        contexts = None
        if dialect == 0x0311 and len(body) >= 36:
            off, count = struct.unpack_from("<IH", body, 28)
            contexts = _contexts(raw, off, count)
            if PREAUTH not in contexts:
                # 3.1.1 without its PREAUTH_INTEGRITY_CAPABILITIES context is refused
                self.record(out, req, W.INVALID_PARAMETER, {**detail, "error": "no preauth"})
                self.m.close_after = True
                return W.smb2_error(req, W.INVALID_PARAMETER, 1)
        self.dialect = dialect
        detail["dialect"] = DIALECT_NAMES[dialect]
        self.record(out, req, W.SUCCESS, detail)
        return W.smb2_header(req, W.SUCCESS, 1) + negotiate_body(self.m, dialect, now, contexts)

    def session_setup(self, req: W.Smb2Header, body: bytes, now: float,
                      out: list[Action]) -> bytes:
        m, credits = self.m, self.credits(req)
        blob = b""
        if len(body) >= 24:
            off, length = struct.unpack_from("<HH", body, 12)
            start = off - W.SMB2_HEADER
            blob = body[start:start + length] if start >= 0 else b""
        sid = req.session_id
        auth = self.sessions.get(sid)
        if auth is None or auth.done:
            if sid and auth is None:
                self.record(out, req, W.USER_SESSION_DELETED)
                return W.smb2_error(req, W.USER_SESSION_DELETED, credits)
            if len(self.sessions) >= m.s.cfg.max_sessions:
                self.record(out, req, W.INSUFFICIENT_RESOURCES)
                return W.smb2_error(req, W.INSUFFICIENT_RESOURCES, credits)
            self.next_session += 1
            sid = m.s.session_base + self.next_session
            auth = self.sessions[sid] = A.Auth()
        result = A.step(m.s, auth, blob, m.remote_host, now, DIALECT_NAMES[self.dialect])
        out.extend(result.actions)
        self.record(out, req, result.status, result.detail)
        if result.status not in (W.SUCCESS, W.MORE_PROCESSING_REQUIRED):
            self.sessions.pop(sid, None)
            return W.smb2_error(req, result.status, credits, session_id=sid)
        flags = 0
        if result.status == W.SUCCESS:
            flags = IS_NULL if auth.anonymous else IS_GUEST if auth.guest else 0
        head = W.smb2_header(req, result.status, credits, session_id=sid)
        return head + struct.pack("<HHHH", 9, flags, W.SMB2_HEADER + 8,
                                  len(result.blob)) + result.blob

    def tree_connect(self, req: W.Smb2Header, body: bytes, out: list[Action]) -> bytes:
        credits = self.credits(req)
        path = ""
        if len(body) >= 8:
            off, length = struct.unpack_from("<HH", body, 4)
            start = off - W.SMB2_HEADER
            if start >= 0:
                path = body[start:start + min(length, 1024)].decode("utf-16-le", "replace")
        share = path.rsplit("\\", 1)[-1]
        status, kind = self.m.share_status(share)
        detail = {"path": path}
        if status != W.SUCCESS:
            self.record(out, req, status, detail)
            return W.smb2_error(req, status, credits)
        if len(self.trees) >= self.m.s.cfg.max_trees:
            self.record(out, req, W.INSUFFICIENT_RESOURCES, detail)
            return W.smb2_error(req, W.INSUFFICIENT_RESOURCES, credits)
        tid = self.next_tree
        self.next_tree += 1
        self.trees[tid] = share.upper()
        self.record(out, req, W.SUCCESS, detail)
        if kind == "pipe":
            fields = struct.pack("<HBBIII", 16, 2, 0, 0x30, 0, 0x001F00A9)
        else:
            fields = struct.pack("<HBBIII", 16, 1, 0, 0x00, 0, 0x001F01FF)
        return W.smb2_header(req, W.SUCCESS, credits, tree_id=tid) + fields


def _words(raw: bytes) -> list[int]:
    """Little-endian 16-bit values; a list cut short loses its odd last byte, never raises."""
    return [x[0] for x in struct.iter_unpack("<H", raw[:len(raw) // 2 * 2])]
