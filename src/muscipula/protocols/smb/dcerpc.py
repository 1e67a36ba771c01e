"""Connection-oriented DCE/RPC (MS-RPCE) over one named pipe: bind / alter_context answered
per presentation context, requests reassembled from fragments (bounded) and answered with a
response or a fault, never with silence. Sans-IO: bytes written to the pipe go in, bytes the
client may read come out."""

from __future__ import annotations

import struct
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field

from muscipula.machine import Action, Emit

REQUEST, RESPONSE, FAULT, BIND, BIND_ACK, BIND_NAK = 0, 2, 3, 11, 12, 13
ALTER, ALTER_RESP, AUTH3, SHUTDOWN, CO_CANCEL, ORPHANED = 14, 15, 16, 17, 18, 19
FIRST, LAST, DID_NOT_EXECUTE, OBJECT_UUID = 0x01, 0x02, 0x20, 0x80
HEADER = 16


def iface(a: int, b: int, c: int, d: int, e: int) -> str:
    """A UUID the protocol fixes (an interface or transfer syntax every host uses), written
    as its fields."""
    return f"{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}"


NDR = iface(0x8a885d04, 0x1ceb, 0x11c9, 0x9fe8, 0x08002b104860)
NDR64 = iface(0x71710533, 0xbeba, 0x4937, 0x8319, 0xb5dbef9ccc36)
#: bind time feature negotiation: 6cb71c2c-9812-4540-xxxx (features in the version field)
BTFN_PREFIX = "6cb71c2c-9812-4540-"

#: fault statuses
OP_RNG_ERROR = 0x1C010002
UNKNOWN_IF = 0x1C010003
PROTO_ERROR = 0x1C01000B
ACCESS_DENIED = 0x00000005
REMOTE_NO_MEMORY = 0x1C010009  # nca_s_fault_remote_no_memory

#: ack results and provider reasons
ACCEPTANCE, PROVIDER_REJECTION, NEGOTIATE_ACK = 0, 2, 3
ABSTRACT_NOT_SUPPORTED, TRANSFER_NOT_SUPPORTED = 1, 2

MAX_FRAG = 4280  # what Windows and Samba answer in bind_ack


@dataclass(frozen=True, slots=True)
class Call:
    """What an interface handler answers: a stub, or a fault status."""

    stub: bytes = b""
    fault: int = 0


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    uuid: str
    version: tuple[int, int]
    #: opnums beyond this are nca_s_op_rng_error
    ops: int
    op_names: dict[int, str]
    #: opnum, stub -> Call; None for an operation this server refuses (access denied)
    handler: Callable[[int, bytes], Call | None]
    #: the endpoint named in bind_ack's secondary address
    endpoint: str


@dataclass(slots=True)
class Limits:
    max_request: int
    max_output: int


def uuid_str(raw: bytes) -> str:
    return str(uuidlib.UUID(bytes_le=raw[:16]))


def uuid_raw(text: str) -> bytes:
    return uuidlib.UUID(text).bytes_le


def header(ptype: int, flags: int, call_id: int, body_len: int) -> bytes:
    return struct.pack("<BBBB4sHHI", 5, 0, ptype, flags, b"\x10\0\0\0", HEADER + body_len,
                       0, call_id)


def fault(call_id: int, status: int, context: int = 0) -> bytes:
    flags = FIRST | LAST | (DID_NOT_EXECUTE if status in (OP_RNG_ERROR, UNKNOWN_IF) else 0)
    body = struct.pack("<IHBBII", 32, context, 0, 0, status, 0)
    return header(FAULT, flags, call_id, len(body)) + body


@dataclass(slots=True)
class _Partial:
    call_id: int
    context: int
    opnum: int
    stub: bytearray = field(default_factory=bytearray)


class Pipe:
    """The RPC server end of one open named pipe."""

    def __init__(self, pipe: str, interfaces: dict[str, Interface], limits: Limits,
                 assoc_group: int) -> None:
        self.pipe = pipe
        self.interfaces = interfaces
        self.limits = limits
        self.assoc_group = assoc_group
        self.inbuf = bytearray()
        self.out = bytearray()
        #: presentation context id -> interface
        self.contexts: dict[int, Interface] = {}
        self.partial: _Partial | None = None
        self.max_xmit = MAX_FRAG
        self.broken = False
        #: bind_ack's secondary address when not a named pipe (ncacn_ip_tcp: the port)
        self.secondary: str | None = None

    def buffered(self) -> int:
        return len(self.inbuf) + len(self.out) + (len(self.partial.stub) if self.partial else 0)

    def read(self, size: int) -> tuple[bytes, bool]:
        """Up to `size` queued bytes, and whether more of the message remains."""
        chunk = bytes(self.out[:size])
        del self.out[:size]
        return chunk, bool(self.out)

    def write(self, data: bytes) -> list[Action]:
        """Bytes the client wrote: complete PDUs are handled, a partial one waits (bounded
        by the 16-bit fragment length)."""
        out: list[Action] = []
        if self.broken:
            return out
        self.inbuf += data
        while len(self.inbuf) >= HEADER:
            version, minor, ptype, flags = self.inbuf[:4]
            frag_len = struct.unpack_from("<H", self.inbuf, 8)[0]
            if version != 5 or minor > 1 or frag_len < HEADER:
                # a stream that is not DCE/RPC: the server stops answering on it
                out.append(Emit("protocol.error", {"detail": "not a DCE/RPC PDU",
                                                   "data": bytes(self.inbuf[:512])}))
                self.inbuf.clear()
                self.broken = True
                break
            if len(self.inbuf) < frag_len:
                break
            pdu = bytes(self.inbuf[:frag_len])
            del self.inbuf[:frag_len]
            out += self._pdu(ptype, flags, pdu)
        return out

    def _queue(self, data: bytes, out: list[Action]) -> None:
        if len(self.out) + len(data) > self.limits.max_output:
            out.append(Emit("protocol.error", {"detail": "pipe output not read",
                                               "data": b""}))
            return
        self.out += data

    def _pdu(self, ptype: int, flags: int, pdu: bytes) -> list[Action]:
        out: list[Action] = []
        call_id = struct.unpack_from("<I", pdu, 12)[0]
        auth_len = struct.unpack_from("<H", pdu, 10)[0]
        if ptype in (BIND, ALTER):
            self._bind(ptype, call_id, pdu, out)
        elif ptype == REQUEST:
            end = len(pdu) - (auth_len + 8 if auth_len else 0)
            self._request(flags, call_id, pdu[HEADER:max(end, HEADER)], out)
        elif ptype in (AUTH3, CO_CANCEL, ORPHANED, SHUTDOWN):
            pass  # no answer is due
        else:
            out.append(Emit("protocol.error", {"detail": f"DCE/RPC PDU type {ptype}",
                                               "data": pdu[:512]}))
            self._queue(fault(call_id, PROTO_ERROR), out)
        return out

    def _bind(self, ptype: int, call_id: int, pdu: bytes, out: list[Action]) -> None:
        if len(pdu) < HEADER + 12:
            self._queue(header(BIND_NAK, FIRST | LAST, call_id, 2) + b"\0\0", out)
            return
        max_xmit, max_recv, group = struct.unpack_from("<HHI", pdu, HEADER)
        self.max_xmit = max(HEADER + 32, min(MAX_FRAG, max_recv or MAX_FRAG))
        count = pdu[HEADER + 8]
        pos = HEADER + 12
        results = bytearray()
        n = 0
        for _ in range(count):
            if pos + 24 > len(pdu):
                break
            ctx_id, n_syntax = struct.unpack_from("<HB", pdu, pos)
            abstract = uuid_str(pdu[pos + 4:pos + 20])
            major, minor = struct.unpack_from("<HH", pdu, pos + 20)
            pos += 24
            syntaxes = []
            for _ in range(n_syntax):
                if pos + 20 > len(pdu):
                    break
                syntaxes.append((uuid_str(pdu[pos:pos + 16]),
                                 struct.unpack_from("<I", pdu, pos + 16)[0]))
                pos += 20
            results += self._context(ctx_id, abstract, (major, minor), syntaxes, out)
            n += 1
        if ptype == BIND:
            self.assoc_group = group or self.assoc_group
            port = (self.secondary or f"\\PIPE\\{self._endpoint()}").encode() + b"\0"
        else:
            port = b""
        body = struct.pack("<HHI", max(HEADER + 32, min(MAX_FRAG, max_xmit or MAX_FRAG)),
                           self.max_xmit, self.assoc_group)
        body += struct.pack("<H", len(port)) + port
        body += bytes((4 - (HEADER + len(body)) % 4) % 4)
        body += struct.pack("<BBH", n, 0, 0) + bytes(results)
        kind = BIND_ACK if ptype == BIND else ALTER_RESP
        self._queue(header(kind, FIRST | LAST, call_id, len(body)) + body, out)

    def _endpoint(self) -> str:
        for iface in self.contexts.values():
            return iface.endpoint
        return self.pipe

    def _context(self, ctx_id: int, abstract: str, version: tuple[int, int],
                 syntaxes: list[tuple[str, int]], out: list[Action]) -> bytes:
        # one record per context: the syntax taken if offered, else the first
        syntax = NDR if any(s == NDR for s, _ in syntaxes) else \
            (syntaxes[0][0] if syntaxes else "")
        out.append(Emit("smb.dcerpc.bind", {"uuid": abstract, "transfersyntax": syntax,
                                            "version": f"{version[0]}.{version[1]}",
                                            "context": ctx_id}))
        if syntaxes and syntaxes[0][0].startswith(BTFN_PREFIX):
            # bind time features: security context multiplexing and keep-on-orphan granted
            return struct.pack("<HH", NEGOTIATE_ACK, syntaxes[0][1] & 0x3) + bytes(20)
        iface = self.interfaces.get(abstract)
        if iface is None or iface.version[0] != version[0]:
            return struct.pack("<HH", PROVIDER_REJECTION, ABSTRACT_NOT_SUPPORTED) + bytes(20)
        if not any(s == NDR and v == 2 for s, v in syntaxes):
            return struct.pack("<HH", PROVIDER_REJECTION, TRANSFER_NOT_SUPPORTED) + bytes(20)
        if len(self.contexts) < 64 or ctx_id in self.contexts:
            self.contexts[ctx_id] = iface
        return struct.pack("<HH", ACCEPTANCE, 0) + uuid_raw(NDR) + struct.pack("<I", 2)

    def _request(self, flags: int, call_id: int, body: bytes, out: list[Action]) -> None:
        if len(body) < 8:
            self._queue(fault(call_id, PROTO_ERROR), out)
            return
        _hint, ctx_id, opnum = struct.unpack_from("<IHH", body)
        stub = body[8 + (16 if flags & OBJECT_UUID else 0):]
        if flags & FIRST or self.partial is None or self.partial.call_id != call_id:
            self.partial = _Partial(call_id, ctx_id, opnum)
        part = self.partial
        if len(part.stub) + len(stub) > self.limits.max_request:
            self.partial = None
            out.append(Emit("protocol.error", {"detail": "DCE/RPC request too large",
                                               "data": stub[:512]}))
            self._queue(fault(call_id, REMOTE_NO_MEMORY, ctx_id), out)
            return
        part.stub += stub
        if not flags & LAST:
            return
        self.partial = None
        iface = self.contexts.get(part.context)
        uuid = iface.uuid if iface else ""
        out.append(Emit("smb.dcerpc.request", {
            "uuid": uuid, "opnum": part.opnum, "interface": iface.name if iface else "",
            "operation": iface.op_names.get(part.opnum, "") if iface else "",
            "size": len(part.stub), "pipe": self.pipe}))
        if iface is None:
            self._queue(fault(call_id, UNKNOWN_IF, part.context), out)
            return
        if part.opnum >= iface.ops:
            self._queue(fault(call_id, OP_RNG_ERROR, part.context), out)
            return
        try:
            call = iface.handler(part.opnum, bytes(part.stub))
        except (ValueError, struct.error, IndexError):
            out.append(Emit("protocol.error", {"detail": "undecodable DCE/RPC stub",
                                               "data": bytes(part.stub[:512])}))
            call = Call(fault=0x000006F7)  # RPC_X_BAD_STUB_DATA, as Windows answers
        if call is None:
            call = Call(fault=ACCESS_DENIED)
        if call.fault:
            self._queue(fault(call_id, call.fault, part.context), out)
            return
        self._respond(call_id, part.context, call.stub, out)

    def _respond(self, call_id: int, context: int, stub: bytes, out: list[Action]) -> None:
        room = max(8, self.max_xmit - HEADER - 8)
        pos = 0
        pdus = bytearray()
        while True:
            chunk = stub[pos:pos + room]
            flags = (FIRST if pos == 0 else 0) | (LAST if pos + room >= len(stub) else 0)
            body = struct.pack("<IHBB", len(stub) - pos, context, 0, 0) + chunk
            pdus += header(RESPONSE, flags, call_id, len(body)) + body
            pos += room
            if pos >= len(stub):
                break
        self._queue(bytes(pdus), out)

