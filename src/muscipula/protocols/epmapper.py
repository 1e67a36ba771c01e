"""The RPC endpoint mapper on 135 (ncacn_ip_tcp), as a Windows host answers it.

Port 135 is where DCOM exploits land (the RPC DCOM family, MS03-026 and its worms) and
where scanners ask a host for its interfaces and network addresses. DCE/RPC itself is the
SMB named pipes' machinery (smb/dcerpc.py) on a bare TCP stream; what differs is the
interfaces behind it: the endpoint mapper, the OXID resolver and DCOM's activators.
Requests are recorded as the reference system's dcerpcbinds/dcerpcrequests rows, and the
stream's bytes (shellcode) go to the emulator through the transcript.
"""

from __future__ import annotations

import struct

from muscipula.config import Port, PositiveInt, ServiceConfig
from muscipula.machine import Action, BaseMachine, Close, Emit, Peer, Send
from muscipula.protocols.smb.dcerpc import (
    BIND_NAK,
    FIRST,
    HEADER,
    LAST,
    NDR,
    Call,
    Interface,
    Limits,
    Pipe,
    header,
    iface,
    uuid_raw,
)
from muscipula.protocols.smb.ndr import Writer
from muscipula.services import ServiceContext, ServiceSpec

EPM = iface(0xE1AF8308, 0x5D1F, 0x11C9, 0x91A4, 0x08002B14A0FA)
OXID_RESOLVER = iface(0x99FCFEC4, 0x5260, 0x101B, 0xBBCB, 0x00AA0021347A)
SYSTEM_ACTIVATOR = iface(0x000001A0, 0x0000, 0x0000, 0xC000, 0x000000000046)
REMOTE_ACTIVATION = iface(0x4D9F4AB8, 0x7D1C, 0x11CF, 0x861E, 0x0020AF6E7C57)

EPT_S_NOT_REGISTERED = 0x16C9A0D6
E_ACCESSDENIED = 0x80070005
#: bind_nak reason: the PDU's protocol version is not one this server speaks
PROTOCOL_VERSION_NOT_SUPPORTED = 4
#: security bindings a 2008 R2 host lists in ServerAlive2 (SPNEGO, NTLM, Kerberos...)
AUTHN_SERVICES = (0x0009, 0x001E, 0x0010, 0x000A, 0x0016, 0x001F, 0x000E)
TOWER_TCP = 0x0007


class EpmapperConfig(ServiceConfig):
    tcp_ports: list[Port] = [135]
    #: one DCE/RPC request's stub, all fragments together (exploits send large ones)
    max_request: PositiveInt = 1024 * 1024
    #: answer bytes queued for a peer that does not read
    max_output: PositiveInt = 256 * 1024


def _context_handle() -> bytes:
    return bytes(20)


def _ept_lookup(stub: bytes) -> Call:
    """No entries: the answer of a host whose interfaces are not listed to strangers."""
    w = Writer()
    w.buf += _context_handle()
    w.u32(0)  # num_ents
    w.u32(0)  # entries: max_count, offset, actual_count
    w.u32(0)
    w.u32(0)
    w.u32(EPT_S_NOT_REGISTERED)
    return Call(w.bytes())


def _ept_map(stub: bytes) -> Call:
    max_towers = struct.unpack_from("<I", stub, len(stub) - 4)[0] if len(stub) >= 4 else 0
    w = Writer()
    w.buf += _context_handle()
    w.u32(0)  # num_towers
    w.u32(min(max_towers, 4096))
    w.u32(0)
    w.u32(0)
    w.u32(EPT_S_NOT_REGISTERED)
    return Call(w.bytes())


def _epm(opnum: int, stub: bytes) -> Call | None:
    if opnum == 2:
        return _ept_lookup(stub)
    if opnum == 3:
        return _ept_map(stub)
    if opnum == 4:  # ept_lookup_handle_free: the handle back, zeroed, and success
        return Call(_context_handle() + bytes(4))
    return None


def _string_bindings(names: list[str]) -> bytes:
    out = bytearray()
    for name in names:
        out += struct.pack("<H", TOWER_TCP) + name.encode("utf-16-le") + b"\0\0"
    out += b"\0\0"
    return bytes(out)


def _security_bindings() -> bytes:
    out = bytearray()
    for service in AUTHN_SERVICES:
        out += struct.pack("<HH", service, 0xFFFF) + b"\0\0"
    out += b"\0\0"
    return bytes(out)


def oxid_resolver(hostname: str, address: str):
    """IObjectExporter: ServerAlive2 tells a scanner the host's name and addresses."""

    def handle(opnum: int, stub: bytes) -> Call | None:
        if opnum == 3:  # ServerAlive
            return Call(struct.pack("<I", 0))
        if opnum != 5:  # ServerAlive2
            return None
        strings = _string_bindings([hostname, address]) + _security_bindings()
        security_offset = len(_string_bindings([hostname, address])) // 2
        w = Writer()
        w.buf += struct.pack("<HH", 5, 7)  # COMVERSION
        w.ref()  # ppdsaOrBindings
        w.u32(len(strings) // 2)  # conformance of aStringArray
        w.buf += struct.pack("<HH", len(strings) // 2, security_offset)
        w.buf += strings
        w.align(4)
        w.u32(0)  # pReserved
        w.u32(0)  # S_OK
        return Call(w.bytes())

    return handle


def _activator(opnum: int, stub: bytes) -> Call | None:
    """Activation needs credentials this host never grants: what an unauthenticated
    caller gets (the request, exploit bytes and all, is recorded before this answer)."""
    return Call(fault=E_ACCESSDENIED)


def interfaces(hostname: str, address: str) -> dict[str, Interface]:
    table = [
        Interface("epmapper", EPM, (3, 0), 8,
                  {0: "ept_insert", 1: "ept_delete", 2: "ept_lookup", 3: "ept_map",
                   4: "ept_lookup_handle_free", 5: "ept_inq_object", 6: "ept_mgmt_delete",
                   7: "ept_map_auth"}, _epm, "135"),
        Interface("IOXIDResolver", OXID_RESOLVER, (0, 0), 6,
                  {0: "ResolveOxid", 1: "SimplePing", 2: "ComplexPing", 3: "ServerAlive",
                   4: "ResolveOxid2", 5: "ServerAlive2"},
                  oxid_resolver(hostname, address), "135"),
        Interface("ISystemActivator", SYSTEM_ACTIVATOR, (0, 0), 6,
                  {3: "RemoteGetClassObject", 4: "RemoteCreateInstance"}, _activator, "135"),
        Interface("IRemoteActivation", REMOTE_ACTIVATION, (0, 0), 1,
                  {0: "RemoteActivation"}, _activator, "135"),
    ]
    return {i.uuid: i for i in table}


class EpmapperMachine(BaseMachine):
    protocol = "epmapper"
    __slots__ = ("pipe",)

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def receive(self, data: bytes, now: float) -> list[Action]:
        pipe = self.pipe
        if pipe.broken:
            return []
        if not pipe.inbuf and len(data) >= 1 and data[0] != 5:
            return self._not_rpc(data)
        out = pipe.write(data)
        if pipe.out:
            out.append(Send(bytes(pipe.out)))
            pipe.out.clear()
        if pipe.broken:
            out.append(Close("not dce/rpc"))
        return out

    def _not_rpc(self, data: bytes) -> list[Action]:
        """What Windows answers a PDU of another protocol version (nmap's probes): a
        bind_nak naming version 5.0, then it hangs up."""
        self.pipe.broken = True
        call_id = struct.unpack_from("<I", data, 12)[0] if len(data) >= HEADER else 0
        body = struct.pack("<HBBB", PROTOCOL_VERSION_NOT_SUPPORTED, 1, 5, 0) + bytes(3)
        return [Emit("protocol.error", {"detail": "not a DCE/RPC PDU", "data": data[:512]}),
                Send(header(BIND_NAK, FIRST | LAST, call_id, len(body)) + body),
                Close("not dce/rpc")]

    def buffered(self) -> int:
        return self.pipe.buffered()


def build(ctx: ServiceContext):
    cfg: EpmapperConfig = ctx.config
    persona = ctx.persona
    limits = Limits(cfg.max_request, cfg.max_output)
    group_base = persona.secrets.number("epmapper.assoc_group", 0x1000, 0xF000)
    counter = [group_base]
    #: local address -> its interfaces (ServerAlive2 names the address a peer reached)
    tables: dict[str, dict[str, Interface]] = {}

    def make(peer: Peer) -> EpmapperMachine:
        counter[0] = (counter[0] + 1) & 0xFFFF or 1
        table = tables.get(peer.local_host)
        if table is None:
            table = interfaces(persona.netbios_name, peer.local_host)
            if len(tables) < 64:
                tables[peer.local_host] = table
        pipe = Pipe("epmapper", table, limits, counter[0])
        pipe.secondary = str(peer.local_port)
        return EpmapperMachine(pipe)

    return make


SERVICE = ServiceSpec(
    "epmapper", "epmapper", EpmapperConfig, build,
    "the Windows RPC endpoint mapper (DCE/RPC over TCP 135): DCOM exploits and scanners",
    os_families=("windows",),
    max_buffer=lambda cfg: cfg.max_request + cfg.max_output + 65536 * 2,
    fuzz_seeds=(
        header(11, 3, 1, 56) + struct.pack("<HHIBBH", 5840, 5840, 0, 1, 0, 0)
        + struct.pack("<HBB", 0, 1, 0) + uuid_raw(EPM) + struct.pack("<HH", 3, 0)
        + uuid_raw(NDR) + struct.pack("<I", 2),
    ),
)
