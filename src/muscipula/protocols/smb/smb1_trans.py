"""SMB1 TRANSACTION, TRANSACTION2 and NT_TRANSACT with their secondaries, as srv.sys of an
unpatched Windows Server 2008 R2 takes them.

A primary whose parameters or data do not all fit gets an interim response (success, no
words) and waits for secondaries, matched by (UID, TID, PID, MID); secondaries are not
answered until the transaction is whole (as srv.sys counts: the counts sent add up to the
totals). Up to MaxMpxCount (what NEGOTIATE announced) wait at once; only the bytes that came
are held, all pending transactions together bounded by `max_pending_transactions`. Every
offset, count and displacement is checked against the message and the announced totals. A
transaction over `max_transaction` bytes is refused with STATUS_INSUFF_SERVER_RESOURCES as
srv.sys does when it cannot allocate it.

MS17-010: the unpatched server lets any secondary finish any transaction and runs it as the
secondary's kind, so EternalBlue opens an NT_TRANSACT (its data may exceed 64 KiB) and ends it
with TRANSACTION2_SECONDARY, running a TRANS2_OPEN2 whose FEA list overflows. The vulnerable
server answers STATUS_INVALID_PARAMETER; the transaction's bytes are captured. Its MS17-010
check, PeekNmPipe on FID 0, gets STATUS_INSUFF_SERVER_RESOURCES. TRANSACTION2 SESSION_SETUP
is DoublePulsar's (doublepulsar.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from muscipula.machine import Action, CaptureData, CaptureEnd, Emit
from muscipula.protocols.smb import doublepulsar as D
from muscipula.protocols.smb import wire as W
from muscipula.protocols.smb.sparse import Sparse

if TYPE_CHECKING:
    from muscipula.protocols.smb.smb1 import Smb1

TRANSACTION, TRANSACTION_SECONDARY, TRANSACTION2, TRANSACTION2_SECONDARY = 0x25, 0x26, 0x32, 0x33
NT_TRANSACT, NT_TRANSACT_SECONDARY = 0xA0, 0xA1
PRIMARIES = (TRANSACTION, TRANSACTION2, NT_TRANSACT)
SECONDARIES = {TRANSACTION_SECONDARY: TRANSACTION, TRANSACTION2_SECONDARY: TRANSACTION2,
               NT_TRANSACT_SECONDARY: NT_TRANSACT}
COMMANDS = (*PRIMARIES, *SECONDARIES)
PEEK_NM_PIPE = 0x23
TRANS2_OPEN2, TRANS2_SESSION_SETUP = 0x00, 0x0E
INSUFF_SERVER_RESOURCES = 0xC0000205
#: how much of the exploit bytes an incident carries (the file has them all)
HEAD = 512


@dataclass(slots=True)
class Trans:
    command: int
    header: W.Smb1Header
    setup: bytes
    function: int
    timeout: int
    max_data: int
    params: Sparse
    data: Sparse
    got_params: int = 0
    got_data: int = 0

    def whole(self) -> bool:
        return self.got_params >= self.params.total and self.got_data >= self.data.total

    def size(self) -> int:
        """What the primary announced."""
        return self.params.total + self.data.total

    def held(self) -> int:
        return self.params.held() + self.data.held()


def _words(raw: bytes) -> bytes:
    at = W.SMB1_HEADER
    count = raw[at] if len(raw) > at else 0
    return raw[at + 1:at + 1 + 2 * count]


def _fits(raw: bytes, offset: int, count: int) -> bool:
    return count == 0 or (offset >= W.SMB1_HEADER and offset + count <= len(raw))


def _widen(displacement: int, received: int) -> int:
    """A 16-bit displacement into an NT_TRANSACT's data past 64 KiB (EternalBlue finishes one
    with TRANSACTION2_SECONDARY): the offset with those low bits nearest to what came."""
    base = received & ~0xFFFF
    candidates = (base - 0x10000 + displacement, base + displacement, base + 0x10000 + displacement)
    return min((c for c in candidates if c >= 0), key=lambda c: abs(c - received))


class Transactions:
    """The transactions of one SMB1 connection."""

    def __init__(self, smb1: Smb1) -> None:
        self.smb1 = smb1
        self.m = smb1.m
        self.pending: dict[tuple[int, int, int, int], Trans] = {}
        cfg = self.m.s.cfg
        self.implant = D.Implant(D.xor_key(self.m.s.implant_seed), cfg.max_implant_upload)
        self.captures = 0

    def buffered(self) -> int:
        return self.held() + self.implant.buffered()

    def held(self) -> int:
        """The bytes of the transactions waiting for secondaries."""
        return sum(t.held() for t in self.pending.values())

    @property
    def vulnerable(self) -> bool:
        return not self.m.s.product.samba and self.m.s.cfg.ms17_010

    def error(self, req: W.Smb1Header, status: int, out: list[Action],
              detail: dict[str, Any] | None = None) -> bytes:
        self.smb1.record(out, req.command, status, detail)
        return W.smb1_error(req, status)

    def handle(self, req: W.Smb1Header, raw: bytes, out: list[Action]) -> bytes | None:
        words = _words(raw)
        if req.command in PRIMARIES:
            return self.primary(req, raw, words, out)
        return self.secondary(req, raw, words, out)

    # --------------------------------------------------------------- parsing

    def primary(self, req: W.Smb1Header, raw: bytes, words: bytes,
                out: list[Action]) -> bytes | None:
        if req.command == NT_TRANSACT:
            if len(words) < 38:
                return self.error(req, W.INVALID_PARAMETER, out, {"words": len(words) // 2})
            (_ms, _r, tp, td, _mp, md, pc, po, dc, do, sc, function) = struct.unpack_from(
                "<BHIIIIIIIIBH", words)
            timeout, at = 0, 38
        else:
            if len(words) < 28:
                return self.error(req, W.INVALID_PARAMETER, out, {"words": len(words) // 2})
            (tp, td, _mp, md, _ms, _r, _flags, timeout, _r2, pc, po, dc, do,
             sc) = struct.unpack_from("<HHHHBBHIHHHHHB", words)
            function, at = 0, 28
        setup = words[at:at + 2 * sc]
        detail: dict[str, Any] = {"total_params": tp, "total_data": td}
        if len(setup) < 2 * sc or pc > tp or dc > td or not _fits(raw, po, pc) or \
                not _fits(raw, do, dc):
            return self.error(req, W.INVALID_PARAMETER, out, {**detail, "error": "bounds"})
        cfg = self.m.s.cfg
        if tp + td > cfg.max_transaction or \
                len(self.pending) >= self.m.s.product.smb1_max_mpx or \
                self.held() + pc + dc > cfg.max_pending_transactions:
            return self.error(req, INSUFF_SERVER_RESOURCES, out, detail)
        t = Trans(req.command, req, bytes(setup), function, timeout, md,
                  Sparse(tp), Sparse(td), pc, dc)
        t.params.write(0, raw[po:po + pc])
        t.data.write(0, raw[do:do + dc])
        if t.whole():
            return self.execute(t, req.command, out)
        self.pending[(req.uid, req.tid, req.pid, req.mid)] = t
        self.smb1.record(out, req.command, W.SUCCESS, {**detail, "interim": True})
        return W.smb1_header(req, W.SUCCESS) + b"\0\0\0"

    def secondary(self, req: W.Smb1Header, raw: bytes, words: bytes,
                  out: list[Action]) -> bytes | None:
        if req.command == NT_TRANSACT_SECONDARY:
            if len(words) < 36:
                return self.error(req, W.INVALID_PARAMETER, out, {"words": len(words) // 2})
            (_r, _tp, _td, pc, po, pd, dc, do, dd) = struct.unpack_from("<3sIIIIIIII", words)
        else:
            if len(words) < 16:
                return self.error(req, W.INVALID_PARAMETER, out, {"words": len(words) // 2})
            _tp, _td, pc, po, pd, dc, do, dd = struct.unpack_from("<HHHHHHHH", words)
        key = (req.uid, req.tid, req.pid, req.mid)
        t = self.pending.get(key)
        if t is None and len(self.pending) == 1:
            # tools that renumber their secondaries still reach the one open transaction
            key, t = next(iter(self.pending.items()))
        if t is None:
            # nothing to continue: srv.sys drops such a secondary without an answer
            self.smb1.record(out, req.command, W.INVALID_PARAMETER, {"error": "no transaction"})
            return None
        if req.command != NT_TRANSACT_SECONDARY and t.data.total > 0xFFFF:
            dd = _widen(dd, t.got_data)
        if pd + pc > t.params.total or dd + dc > t.data.total or not _fits(raw, po, pc) or \
                not _fits(raw, do, dc):
            del self.pending[key]
            return self.error(req, W.INVALID_PARAMETER, out, {"error": "bounds"})
        if self.held() + pc + dc > self.m.s.cfg.max_pending_transactions:
            # srv.sys would have failed to allocate it: the transaction is gone
            del self.pending[key]
            return self.error(req, INSUFF_SERVER_RESOURCES, out, {"error": "pending bytes"})
        if not (t.params.write(pd, raw[po:po + pc]) and t.data.write(dd, raw[do:do + dc])):
            del self.pending[key]
            return self.error(req, W.INVALID_PARAMETER, out, {"error": "scattered"})
        t.got_params += pc
        t.got_data += dc
        if not t.whole():
            return None
        del self.pending[key]
        # the unpatched server runs it as the kind of the secondary that finished it
        return self.execute(t, SECONDARIES[req.command], out, req)

    # ------------------------------------------------------------- execution

    def execute(self, t: Trans, kind: int, out: list[Action],
                last: W.Smb1Header | None = None) -> bytes | None:
        req = t.header
        if last is not None:
            req = W.Smb1Header(kind, last.flags, last.flags2, last.pid_high, last.tid,
                               last.pid, last.uid, last.mid)
        sub = struct.unpack_from("<H", t.setup)[0] if len(t.setup) >= 2 else -1
        confused = kind != t.command
        if kind == TRANSACTION2 and (confused or t.data.total > 0xFFFF) and \
                sub == TRANS2_OPEN2 and self.vulnerable:
            return self.eternalblue(req, t, out)
        if confused:
            out += self.exploit_bytes("confused", t.command, t.params.whole(), t.data.whole())
        if kind == TRANSACTION and len(t.setup) >= 4:
            fid = struct.unpack_from("<H", t.setup, 2)[0]
            if sub == PEEK_NM_PIPE and self.vulnerable and \
                    self.smb1.fileops.open_of(req, fid) is None:
                out.append(Emit("smb.ms17_010", {"stage": "check", "size": t.size(),
                                                 "data": b""}))
                return self.error(req, INSUFF_SERVER_RESOURCES, out, {"subcommand": sub,
                                                                      "fid": fid})
            return self.smb1.fileops.pipe_transaction(req, sub, fid, t.data.whole(),
                                                      t.max_data, out)
        if kind == TRANSACTION2 and sub == TRANS2_SESSION_SETUP and self.vulnerable and \
                self.m.s.cfg.doublepulsar and not self.implant.killed:
            return self.doublepulsar(req, t, out)
        status = W.NOT_IMPLEMENTED
        self.smb1.record(out, kind, status, {"subcommand": sub} if sub >= 0 else None)
        out.append(Emit("smb.unsupported", {"dialect": "SMB1", "command": W.smb1_name(kind),
                                            "size": t.size()}))
        return W.smb1_error(req, status)

    def _capture(self, name: str, data: bytes, complete: bool = True) -> list[Action]:
        self.captures += 1
        stream = f"smb-{name}-{self.captures}"
        out: list[Action] = [CaptureData(stream, data[i:i + 65536])
                             for i in range(0, len(data), 65536)]
        out.append(CaptureEnd(stream, f"smb://{self.m.remote_host}/{name}", complete))
        return out

    def exploit_bytes(self, stage: str, command: int, params: bytes, data: bytes,
                      complete: bool = True) -> list[Action]:
        """The incident and the capture of a transaction's parameters and data."""
        both = params + data
        out: list[Action] = [Emit("smb.ms17_010", {
            "stage": stage, "size": len(both), "data": data[:HEAD],
            "command": W.smb1_name(command)})]
        if both:
            out += self._capture("ms17-010", both, complete)
        return out

    def eternalblue(self, req: W.Smb1Header, t: Trans, out: list[Action]) -> bytes:
        """The FEA list overflows in SrvOs2FeaListToNt; the request fails with
        STATUS_INVALID_PARAMETER, which the exploit takes as the sign it worked."""
        out += self.exploit_bytes("trigger", t.command, t.params.whole(), t.data.whole())
        return self.error(req, W.INVALID_PARAMETER, out,
                          {"subcommand": TRANS2_OPEN2, "size": t.size(),
                           "started_as": W.smb1_name(t.command)})

    def doublepulsar(self, req: W.Smb1Header, t: Trans, out: list[Action]) -> bytes:
        op = D.opcode(t.timeout)
        name = D.OPS.get(op, f"0x{op:02x}")
        delta, detail = D.OK, {}
        payload = None
        if op == D.EXEC:
            step = self.implant.exec(t.params.whole(), t.data.whole())
            delta, detail, payload = step.delta, step.detail, step.payload
        elif op == D.KILL:
            self.implant.killed = True
        elif op != D.PING:
            delta = D.BAD_PARAMS
        fields: dict[str, Any] = {"op": name, "size": t.data.total,
                                  "key": f"{self.implant.key:08x}", "detail": detail}
        if payload is not None:
            at, pe = D.cut_pe(payload)
            fields["detail"] = {**detail, "payload": len(payload), "pe": pe, "pe_offset": at}
            out.append(Emit("smb.doublepulsar", fields))
            out += self._capture("doublepulsar", payload[at:] if pe else payload)
        else:
            out.append(Emit("smb.doublepulsar", fields))
        self.smb1.record(out, TRANSACTION2, W.NOT_IMPLEMENTED,
                         {"subcommand": TRANS2_SESSION_SETUP, "implant": name})
        head = bytearray(W.smb1_header(req, W.NOT_IMPLEMENTED))
        head[14:22] = self.m.s.implant_seed
        head[30:32] = struct.pack("<H", (req.mid + delta) & 0xFFFF)
        return bytes(head) + b"\0\0\0"

    def closed(self) -> list[Action]:
        """The connection went with an oversized transaction open: the bytes that came are
        kept, in offset order (never the zeros of what was only announced)."""
        out: list[Action] = []
        for t in self.pending.values():
            if t.data.total > 0xFFFF and t.got_data:
                out += self.exploit_bytes("incomplete", t.command, t.params.received(),
                                          t.data.received(), complete=False)
        self.pending.clear()
        return out
