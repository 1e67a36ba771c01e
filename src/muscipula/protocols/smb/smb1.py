"""SMB1 requests: NEGOTIATE (NT LM 0.12, or the multi-protocol hand-over to SMB2),
SESSION_SETUP_ANDX (extended security and the older LM/NTLM form), TREE_CONNECT_ANDX,
TREE_DISCONNECT, LOGOFF_ANDX and ECHO; the rest answered as a server that offers nothing."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from muscipula.machine import Action, Emit
from muscipula.protocols.smb import auth as A
from muscipula.protocols.smb import smb2, spnego
from muscipula.protocols.smb import wire as W
from muscipula.protocols.smb.smb1_files import FILE_COMMANDS, FileOps1
from muscipula.protocols.smb.smb1_trans import COMMANDS as TRANS_COMMANDS
from muscipula.protocols.smb.smb1_trans import Transactions

if TYPE_CHECKING:
    from muscipula.protocols.smb.machine import SmbMachine

NEGOTIATE, SESSION_SETUP, TREE_CONNECT, TREE_DISCONNECT, LOGOFF, ECHO = (
    0x72, 0x73, 0x75, 0x71, 0x74, 0x2B)
NT_CREATE, TRANSACTION = 0xA2, 0x25
NT_LM = "NT LM 0.12"
INVALID_HANDLE = 0xC0000008
FLAGS2_UNICODE, FLAGS2_EXTSEC = 0x8000, 0x0800
DIALECT = "NT LM 0.12"
#: ECHO replies sent for one request, and their bytes
MAX_ECHOES, MAX_ECHO_BYTES = 64, 256 * 1024
#: commands that carry an AndX block, and how many a chain may hold
ANDX = frozenset((0x24, 0x2D, 0x2E, 0x2F, 0x73, 0x74, 0x75, 0xA2))
MAX_ANDX = 8


def dialects(data: bytes) -> list[str]:
    """The dialect strings of a NEGOTIATE request's data (each 0x02 + text + NUL)."""
    out: list[str] = []
    for part in data.split(b"\0")[:64]:
        if part[:1] == b"\x02":
            out.append(part[1:].decode("latin-1"))
    return out


def _words(raw: bytes) -> tuple[bytes, bytes, int]:
    """(parameter words, data, offset of data from the SMB header) of a request."""
    at = W.SMB1_HEADER
    if len(raw) <= at:
        return b"", b"", at
    count = raw[at]
    words = raw[at + 1:at + 1 + 2 * count]
    pos = at + 1 + 2 * count
    length = struct.unpack_from("<H", raw, pos)[0] if len(raw) >= pos + 2 else 0
    return words, raw[pos + 2:pos + 2 + length], pos + 2


def _text(data: bytes, pos: int, unicode: bool, base: int) -> tuple[str, int]:
    """A string at `pos` in the data: UTF-16 aligned to 2 from the header start, or OEM."""
    if unicode:
        if (base + pos) % 2:
            pos += 1
        return W.read_utf16z(data, pos)
    end = data.find(b"\0", pos)
    end = len(data) if end < 0 else end
    return data[pos:end].decode("latin-1"), end + 1


class Smb1:
    """The SMB1 half of one connection."""

    def __init__(self, m: SmbMachine) -> None:
        self.m = m
        self.dialect = ""
        self.extended = True
        self.challenge = b""  # the negotiate's challenge (non-extended security)
        self.sessions: dict[int, A.Auth] = {}
        self.trees: dict[int, str] = {}
        self.next_uid = 0
        self.next_tid = 0
        self.fileops = FileOps1(self)
        self.trans = Transactions(self)

    def record(self, out: list[Action], command: int, status: int,
               detail: dict[str, Any] | None = None) -> None:
        out.append(Emit("smb.command", {"dialect": "SMB1", "command": W.smb1_name(command),
                                        "status": W.status_name(status),
                                        "detail": detail or {}}))

    def handle(self, raw: bytes, now: float) -> tuple[list[bytes], list[Action]]:
        """One message; an AndX chain's commands run in order, their answers chained in one
        reply. The chain stops at the first failure, at 0xFF, after MAX_ANDX commands, and
        at an offset that does not move forward within the message (no loops)."""
        replies, out = self.one(raw, now)
        if len(replies) != 1 or len(raw) < 37 or raw[4] not in ANDX or raw[32] < 2:
            return replies, out
        combined = bytearray(replies[0])
        block, seen = W.SMB1_HEADER, W.SMB1_HEADER
        command, offset = raw[33], struct.unpack_from("<H", raw, 35)[0]
        for _ in range(MAX_ANDX - 1):
            status = struct.unpack_from("<I", combined, 5)[0]
            if command == 0xFF or status != W.SUCCESS or combined[block] < 2 or \
                    offset <= seen or offset + 1 > len(raw) or (offset - W.SMB1_HEADER) % 2:
                break
            head = bytearray(raw[:W.SMB1_HEADER])
            head[4] = command
            head[24:26], head[28:30] = combined[24:26], combined[28:30]  # new TID and UID
            sub, actions = self.one(bytes(head) + raw[offset:], now)
            out += actions
            if len(sub) != 1:
                break
            combined[block + 1] = command
            struct.pack_into("<H", combined, block + 3, len(combined))
            combined[5:9], combined[24:26], combined[28:30] = sub[0][5:9], sub[0][24:26], \
                sub[0][28:30]
            block = len(combined)
            combined += sub[0][W.SMB1_HEADER:]
            if command not in ANDX or offset + 5 > len(raw) or raw[offset] < 2:
                break
            seen, command = offset, raw[offset + 1]
            offset = struct.unpack_from("<H", raw, offset + 3)[0]
        return [bytes(combined)], out

    def one(self, raw: bytes, now: float) -> tuple[list[bytes], list[Action]]:
        out: list[Action] = []
        req = W.parse_smb1(raw)
        if req is None:
            return [], [Emit("protocol.error", {"detail": "short SMB1 header",
                                                "data": raw[:512]})]
        if req.command == NEGOTIATE:
            return self.negotiate(req, raw, now, out), out
        if not self.dialect:
            self.m.errors += 1
            self.record(out, req.command, W.INVALID_PARAMETER, {"error": "before NEGOTIATE"})
            self.m.close_after = True
            return [], out
        if req.command == ECHO:
            words, data, _ = _words(raw)
            self.record(out, req.command, W.SUCCESS)
            count = struct.unpack_from("<H", words)[0] if len(words) >= 2 else 0
            # one reply per echo asked for, numbered from 1; bounded in count and bytes
            count = min(count, MAX_ECHOES, MAX_ECHO_BYTES // (len(data) + 40))
            head = W.smb1_header(req, W.SUCCESS)
            return [head + W.smb1_body(struct.pack("<H", n), data)
                    for n in range(1, count + 1)], out
        if req.command == SESSION_SETUP:
            return [self.session_setup(req, raw, now, out)], out
        auth = self.sessions.get(req.uid)
        if auth is None or not auth.done:
            self.record(out, req.command, W.SMB_BAD_UID)
            return [W.smb1_error(req, W.SMB_BAD_UID)], out
        if req.command == LOGOFF:
            del self.sessions[req.uid]
            out.extend(self.m.files.close_where(req.uid))
            self.record(out, req.command, W.SUCCESS)
            words = struct.pack("<BBH", 0xFF, 0, 0)
            return [W.smb1_header(req, W.SUCCESS) + W.smb1_body(words, b"")], out
        if req.command == TREE_CONNECT:
            return [self.tree_connect(req, raw, out)], out
        if req.tid not in self.trees:
            self.record(out, req.command, W.SMB_BAD_TID)
            return [W.smb1_error(req, W.SMB_BAD_TID)], out
        if req.command == TREE_DISCONNECT:
            share = self.trees.pop(req.tid)
            out.extend(self.m.files.close_where(req.uid, req.tid))
            self.record(out, req.command, W.SUCCESS, {"share": share})
            return [W.smb1_header(req, W.SUCCESS) + b"\0\0\0"], out
        if req.command in FILE_COMMANDS:
            reply = self.fileops.handle(req, raw, now, out)
            if reply is not None:
                return [reply], out
        if req.command in TRANS_COMMANDS:
            reply = self.trans.handle(req, raw, out)
            return ([reply] if reply is not None else []), out
        status = W.NOT_IMPLEMENTED
        self.record(out, req.command, status)
        out.append(Emit("smb.unsupported", {"dialect": "SMB1",
                                            "command": W.smb1_name(req.command),
                                            "size": len(raw)}))
        return [W.smb1_error(req, status)], out

    # ---------------------------------------------------------------- NEGOTIATE

    def negotiate(self, req: W.Smb1Header, raw: bytes, now: float,
                  out: list[Action]) -> list[bytes]:
        m, p = self.m, self.m.s.product
        data = _words(raw)[1]
        names = dialects(data)
        detail: dict[str, Any] = {"offered": names[:32]}
        if self.dialect or m.smb2.dialect:
            self.record(out, NEGOTIATE, W.INVALID_PARAMETER, {**detail, "error": "again"})
            m.close_after = True
            return []
        smb2_dialect = 0
        if "SMB 2.???" in names and 0x0210 in p.dialects:
            smb2_dialect = 0x02FF
        elif "SMB 2.002" in names or "SMB 2.???" in names:
            smb2_dialect = 0x0202
        if smb2_dialect:
            # multi-protocol negotiate: an SMB2 NEGOTIATE response, message id 0
            detail["dialect"] = "2.???" if smb2_dialect == 0x02FF else "2.0.2"
            self.record(out, NEGOTIATE, W.SUCCESS, detail)
            fake = W.Smb2Header(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            if smb2_dialect == 0x0202:
                m.smb2.dialect = 0x0202
            return [W.smb2_header(fake, W.SUCCESS, 1)
                    + smb2.negotiate_body(m, smb2_dialect, now)]
        if not p.smb1 or NT_LM not in names:
            self.record(out, NEGOTIATE, W.SUCCESS, {**detail, "dialect": None})
            if p.samba:
                m.close_after = True  # "No protocol supported !"
            return [W.smb1_header(req, W.SUCCESS) + W.smb1_body(b"\xff\xff", b"")]
        self.dialect = DIALECT
        self.extended = bool(req.flags2 & FLAGS2_EXTSEC)
        detail["dialect"] = DIALECT
        caps = p.smb1_capabilities
        if self.extended:
            data_out = m.s.server_guid + spnego.neg_token_init(p.mechs)
            challenge_len = 0
        else:
            caps &= ~0x80000000
            self.challenge = m.s.random(8)
            data_out = (self.challenge + W.utf16z(m.s.workgroup) + W.utf16z(m.s.server_name))
            challenge_len = 8
        words = struct.pack("<HBHHIIIIQhB", names.index(NT_LM), 0x03, p.smb1_max_mpx, 1,
                            p.smb1_max_buffer, p.smb1_max_raw, 0, caps, W.filetime(now),
                            p.timezone, challenge_len)
        self.record(out, NEGOTIATE, W.SUCCESS, detail)
        return [W.smb1_header(req, W.SUCCESS) + W.smb1_body(words, data_out)]

    # ------------------------------------------------------------ SESSION_SETUP

    def _new_uid(self) -> int | None:
        if len(self.sessions) >= self.m.s.cfg.max_sessions:
            return None
        self.next_uid += 1
        return (self.m.s.uid_base + self.next_uid * 0x800) & 0xFFFF or 0x800

    def _os_strings(self, unicode: bool, at: int) -> bytes:
        p = self.m.s.product
        texts = (p.native_os, p.native_lan_manager, self.m.s.workgroup)
        if unicode:
            pad = b"\0" if at % 2 else b""
            return pad + b"".join(W.utf16z(t) for t in texts)
        return b"".join(t.encode("latin-1", "replace") + b"\0" for t in texts)

    def session_setup(self, req: W.Smb1Header, raw: bytes, now: float,
                      out: list[Action]) -> bytes:
        words, data, base = _words(raw)
        unicode = bool(req.flags2 & FLAGS2_UNICODE)
        if len(words) == 24:
            return self._extended(req, words, data, now, out, unicode)
        if len(words) == 26:
            return self._basic(req, words, data, base, out, unicode)
        self.record(out, SESSION_SETUP, W.INVALID_PARAMETER, {"words": len(words) // 2})
        return W.smb1_error(req, W.INVALID_PARAMETER)

    def _extended(self, req: W.Smb1Header, words: bytes, data: bytes, now: float,
                  out: list[Action], unicode: bool) -> bytes:
        m = self.m
        blob = data[:struct.unpack_from("<H", words, 14)[0]]
        uid = req.uid
        auth = self.sessions.get(uid)
        if auth is None or auth.done:
            new = self._new_uid()
            if new is None:
                self.record(out, SESSION_SETUP, W.INSUFFICIENT_RESOURCES)
                return W.smb1_error(req, W.INSUFFICIENT_RESOURCES)
            uid = new
            auth = self.sessions[uid] = A.Auth()
        result = A.step(m.s, auth, blob, m.remote_host, now, "NT LM 0.12")
        out.extend(result.actions)
        self.record(out, SESSION_SETUP, result.status, result.detail)
        if result.status not in (W.SUCCESS, W.MORE_PROCESSING_REQUIRED):
            self.sessions.pop(uid, None)
            return W.smb1_error(req, result.status)
        head = W.smb1_header(req, result.status, uid=uid)
        at = W.SMB1_HEADER + 1 + 8 + 2 + len(result.blob)
        tail = result.blob + self._os_strings(unicode, at)
        action = 0
        words_out = struct.pack("<BBHHH", 0xFF, 0, at + len(tail) - len(result.blob), action,
                                len(result.blob))
        return head + W.smb1_body(words_out, tail)

    def _basic(self, req: W.Smb1Header, words: bytes, data: bytes, base: int,
               out: list[Action], unicode: bool) -> bytes:
        """The pre-SPNEGO form: LM/NTLM responses (or a plain password) in the request."""
        m = self.m
        oem_len, uni_len = struct.unpack_from("<HH", words, 14)
        oem, uni = data[:oem_len], data[oem_len:oem_len + uni_len]
        pos = oem_len + uni_len
        account, pos = _text(data, pos, unicode, base)
        domain, pos = _text(data, pos, unicode, base)
        native_os, pos = _text(data, pos, unicode, base)
        user = f"{domain}\\{account}" if domain else account
        password: str | None = None
        extra: dict[str, Any] = {"domain": domain, "user": account, "native_os": native_os,
                                 "dialect": "NT LM 0.12"}
        ch = self.challenge.hex()
        if len(uni) > 24:
            extra["hash"] = f"{account}::{domain}:{ch}:{uni[:16].hex()}:{uni[16:].hex()}"
        elif len(uni) == 24 or len(oem) == 24:
            extra["hash"] = f"{account}::{domain}:{oem.hex()}:{uni.hex()}:{ch}"
        elif oem_len and not uni_len:
            password = oem.rstrip(b"\0").decode("latin-1")
        anonymous = not account and oem_len <= 1 and not uni_len
        ok = anonymous or m.s.policy.decide(account, m.remote_host, password, lambda _: False)
        out.append(Emit("login", {"username": user, "password": password, "success": ok,
                                  "method": "ntlm" if password is None else "password",
                                  "extra": extra}))
        detail = {k: extra[k] for k in ("user", "domain", "hash") if extra.get(k)}
        status = W.SUCCESS if ok else W.LOGON_FAILURE
        self.record(out, SESSION_SETUP, status, detail)
        if not ok:
            return W.smb1_error(req, status)
        uid = self._new_uid()
        if uid is None:
            return W.smb1_error(req, W.INSUFFICIENT_RESOURCES)
        self.sessions[uid] = A.Auth(done=True, user=user[:A.NAME_CAP], anonymous=anonymous)
        at = W.SMB1_HEADER + 1 + 6 + 2
        tail = self._os_strings(unicode, at)
        words_out = struct.pack("<BBHH", 0xFF, 0, at + len(tail), 0)
        return W.smb1_header(req, status, uid=uid) + W.smb1_body(words_out, tail)

    # ------------------------------------------------------------- TREE_CONNECT

    def tree_connect(self, req: W.Smb1Header, raw: bytes, out: list[Action]) -> bytes:
        words, data, base = _words(raw)
        if len(words) < 8:
            self.record(out, TREE_CONNECT, W.INVALID_PARAMETER)
            return W.smb1_error(req, W.INVALID_PARAMETER)
        flags, pw_len = struct.unpack_from("<HH", words, 4)
        path, pos = _text(data, pw_len, bool(req.flags2 & FLAGS2_UNICODE), base)
        service = data[pos:data.find(b"\0", pos) if b"\0" in data[pos:] else len(data)]
        share = path.rsplit("\\", 1)[-1]
        status, kind = self.m.share_status(share)
        detail = {"path": path[:1024], "service": service.decode("latin-1")[:16]}
        if status == W.SUCCESS and len(self.trees) >= self.m.s.cfg.max_trees:
            status = W.INSUFFICIENT_RESOURCES
        self.record(out, TREE_CONNECT, status, detail)
        if status != W.SUCCESS:
            return W.smb1_error(req, status)
        self.next_tid += 1
        tid = self.next_tid & 0xFFFF or 1
        self.trees[tid] = share.upper()
        svc = b"IPC\0" if kind == "pipe" else b"A:\0"
        fs = b"" if kind == "pipe" else "NTFS".encode("utf-16-le")
        tail = svc + fs + b"\0\0"
        at = W.SMB1_HEADER + 1 + (14 if flags & 0x8 else 6) + 2
        if flags & 0x8:
            rights = 0x001F00A9 if kind == "pipe" else 0x001F01FF
            words_out = struct.pack("<BBHHII", 0xFF, 0, at + len(tail), 0x0001, rights, 0)
        else:
            words_out = struct.pack("<BBHH", 0xFF, 0, at + len(tail), 0x0001)
        return W.smb1_header(req, W.SUCCESS, tid=tid) + W.smb1_body(words_out, tail)
