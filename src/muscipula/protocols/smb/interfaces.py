"""The RPC interfaces behind the IPC$ pipes: srvsvc (share list, server info) and wkssvc
(workstation info) answer from the persona; samr, lsarpc, spoolss and netlogon bind and refuse
their calls as to an anonymous user. Opnums past an interface's last are the pipe's
nca_s_op_rng_error."""

from __future__ import annotations

from dataclasses import dataclass

from muscipula.protocols.smb.dcerpc import Call, Interface, iface
from muscipula.protocols.smb.ndr import Reader, Writer

STYPE_DISKTREE, STYPE_IPC, STYPE_SPECIAL = 0, 3, 0x80000000
WERR_ACCESS_DENIED, WERR_INVALID_LEVEL, WERR_NET_NAME_NOT_FOUND = 5, 124, 0x906
PLATFORM_NT = 500
SRVSVC = iface(0x4b324fc8, 0x1670, 0x01d3, 0x1278, 0x5a47bf6ee188)
WKSSVC = iface(0x6bffd098, 0xa112, 0x3610, 0x9833, 0x46c3f87e345a)


@dataclass(frozen=True, slots=True)
class Share:
    name: str
    type: int
    comment: str


@dataclass(frozen=True, slots=True)
class Host:
    """What the RPC services tell about the server."""

    name: str
    domain: str
    version: tuple[int, int]
    server_type: int
    comment: str
    shares: tuple[Share, ...]


def _shares_stub(w: Writer, level: int, shares: tuple[Share, ...]) -> None:
    """A SHARE_INFO_0/1 container body: count, array pointer, array, deferred strings."""
    w.u32(len(shares))
    w.ref(bool(shares))
    if not shares:
        return
    w.u32(len(shares))
    for share in shares:
        w.ref()
        if level == 1:
            w.u32(share.type)
            w.ref()
    for share in shares:
        w.string(share.name)
        if level == 1:
            w.string(share.comment)


def srvsvc(host: Host):
    def handle(opnum: int, stub: bytes) -> Call | None:
        r, w = Reader(stub), Writer()
        if opnum == 15:  # NetrShareEnum (NetShareEnumAll)
            r.unique_string()
            level = r.u32()
            r.u32()  # union switch
            if r.u32():
                r.u32()
                r.u32()
            r.u32()  # PreferedMaximumLength
            resume = r.u32()
            w.u32(level)
            w.u32(level)
            w.ref()
            status = 0
            if level in (0, 1):
                _shares_stub(w, level, host.shares)
            else:
                w.u32(0)
                w.ref(False)
                status = WERR_ACCESS_DENIED if level in (2, 502, 503) else WERR_INVALID_LEVEL
            w.u32(len(host.shares) if not status else 0)
            if resume:
                w.ref()
                w.u32(0)
            else:
                w.ref(False)
            w.u32(status)
            return Call(w.bytes())
        if opnum == 16:  # NetrShareGetInfo
            r.unique_string()
            name = r.string()
            level = r.u32()
            share = next((s for s in host.shares if s.name.upper() == name.upper()), None)
            w.u32(level)
            if share is None or level not in (0, 1):
                w.ref(False)
                w.u32(WERR_NET_NAME_NOT_FOUND if share is None else
                      WERR_ACCESS_DENIED if level in (2, 502, 503) else WERR_INVALID_LEVEL)
                return Call(w.bytes())
            w.ref()
            w.ref()
            if level == 1:
                w.u32(share.type)
                w.ref()
            w.string(share.name)
            if level == 1:
                w.string(share.comment)
            w.u32(0)
            return Call(w.bytes())
        if opnum == 21:  # NetrServerGetInfo
            r.unique_string()
            level = r.u32()
            w.u32(level)
            if level not in (100, 101):
                w.ref(False)
                w.u32(WERR_ACCESS_DENIED if level in (102, 502, 503) else WERR_INVALID_LEVEL)
                return Call(w.bytes())
            w.ref()
            w.u32(PLATFORM_NT)
            w.ref()
            if level == 101:
                w.u32(host.version[0])
                w.u32(host.version[1])
                w.u32(host.server_type)
                w.ref()
            w.string(host.name)
            if level == 101:
                w.string(host.comment)
            w.u32(0)
            return Call(w.bytes())
        return None

    return Interface("srvsvc", SRVSVC, (3, 0), 54, {
        14: "NetShareAdd", 15: "NetShareEnum", 16: "NetrShareGetInfo", 21: "NetServerGetInfo",
        28: "NetrRemoteTOD", 31: "NetPathCanonicalize", 32: "NetPathCompare",
        34: "NetNameCanonicalize"}, handle, "srvsvc")


def wkssvc(host: Host):
    def handle(opnum: int, stub: bytes) -> Call | None:
        if opnum != 0:  # NetrWkstaGetInfo
            return None
        r, w = Reader(stub), Writer()
        r.unique_string()
        level = r.u32()
        w.u32(level)
        if level != 100:
            w.ref(False)
            w.u32(WERR_ACCESS_DENIED if level in (101, 102, 502) else WERR_INVALID_LEVEL)
            return Call(w.bytes())
        w.ref()
        w.u32(PLATFORM_NT)
        w.ref()
        w.ref()
        w.u32(host.version[0])
        w.u32(host.version[1])
        w.string(host.name)
        w.string(host.domain)
        w.u32(0)
        return Call(w.bytes())

    return Interface("wkssvc", WKSSVC, (1, 0), 31,
                     {0: "NetrWkstaGetInfo", 27: "NetAddAlternateComputerName"}, handle,
                     "wkssvc")


def _refuse(opnum: int, stub: bytes) -> Call | None:
    return None


#: interfaces bound but refused to an anonymous caller: name, uuid, version, opnums, endpoint
REFUSED = (
    ("samr", iface(0x12345778, 0x1234, 0xabcd, 0xef00, 0x0123456789ac), (1, 0), 68, "lsass",
     {62: "Connect4", 64: "Connect5"}),
    ("lsarpc", iface(0x12345778, 0x1234, 0xabcd, 0xef00, 0x0123456789ab), (0, 0), 82, "lsass",
     {44: "OpenPolicy2", 57: "LookupSids2", 58: "LookupNames2"}),
    ("spoolss", iface(0x12345678, 0x1234, 0xabcd, 0xef00, 0x0123456789ab), (1, 0), 97, "spoolss",
     {0: "EnumPrinters", 69: "OpenPrinterEx"}),
    ("netlogon", iface(0x12345678, 0x1234, 0xabcd, 0xef00, 0x01234567cffb), (1, 0), 49, "lsass",
     {}),
)

#: the pipes IPC$ serves (any other name is STATUS_OBJECT_NAME_NOT_FOUND)
PIPES = ("srvsvc", "wkssvc", "samr", "lsarpc", "spoolss", "netlogon")


def interfaces(host: Host) -> dict[str, Interface]:
    out = {i.uuid: i for i in (srvsvc(host), wkssvc(host))}
    for name, uuid, version, ops, endpoint, names in REFUSED:
        out[uuid] = Interface(name, uuid, version, ops, names, _refuse, endpoint)
    return out
