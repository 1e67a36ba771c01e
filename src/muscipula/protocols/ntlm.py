"""NTLMSSP as the server side of Windows integrated login (MSSQL SSPI, SMB): the CHALLENGE
naming the host, and the client's NEGOTIATE and AUTHENTICATE read back for the record (a
crackable NetNTLMv1/v2 line in hashcat's format). Parsing is bounded and never raises."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

SIGNATURE = b"NTLMSSP\0"
#: UNICODE, REQUEST_TARGET, NTLM, ALWAYS_SIGN, TARGET_TYPE_SERVER, EXTENDED_SESSIONSECURITY,
#: TARGET_INFO, VERSION, 128, KEY_EXCH, 56
FLAGS = 0xE28A8215
UNICODE, OEM, REQUEST_TARGET = 0x1, 0x2, 0x4
SIGN, SEAL, NTLM = 0x10, 0x20, 0x200
ALWAYS_SIGN, TARGET_TYPE_DOMAIN, TARGET_TYPE_SERVER = 0x8000, 0x10000, 0x20000
EXTENDED_SESSIONSECURITY, TARGET_INFO, VERSION = 0x80000, 0x800000, 0x2000000
F128, KEY_EXCH, F56 = 0x20000000, 0x40000000, 0x80000000
#: what a Windows/Samba server echoes when the client asks for it
ECHOED = (UNICODE | SIGN | SEAL | ALWAYS_SIGN | EXTENDED_SESSIONSECURITY | VERSION | F128
          | KEY_EXCH | F56)


@dataclass(frozen=True, slots=True)
class Names:
    netbios_computer: str
    netbios_domain: str
    dns_computer: str
    dns_domain: str
    os_version: tuple[int, int, int]


def is_negotiate(token: bytes) -> bool:
    return token[:8] == SIGNATURE and token[8:12] == b"\x01\0\0\0"


def negotiate_flags(token: bytes) -> int | None:
    """The flags of a NEGOTIATE message; None if `token` is not one."""
    if not is_negotiate(token) or len(token) < 16:
        return None
    return int(struct.unpack_from("<I", token, 12)[0])


def answer_flags(client: int, target_type: int = TARGET_TYPE_SERVER) -> int:
    """The CHALLENGE flags for a client's NEGOTIATE flags, as Windows picks them (its version
    is sent whether asked for or not)."""
    flags = (client & ECHOED) | NTLM | REQUEST_TARGET | TARGET_INFO | VERSION | target_type
    if not flags & UNICODE:
        flags |= OEM
    return flags


def _av(kind: int, value: bytes) -> bytes:
    return struct.pack("<HH", kind, len(value)) + value


def challenge_message(names: Names, challenge: bytes, now: float, flags: int = FLAGS,
                      target: str | None = None) -> bytes:
    """A CHALLENGE message; `target` is TargetName (default: the NetBIOS domain)."""
    name = (names.netbios_domain if target is None else target).encode("utf-16-le")
    filetime = int((now + 11644473600) * 10_000_000)
    info = (_av(2, names.netbios_domain.encode("utf-16-le"))
            + _av(1, names.netbios_computer.encode("utf-16-le"))
            + _av(4, names.dns_domain.encode("utf-16-le"))
            + _av(3, names.dns_computer.encode("utf-16-le"))
            + _av(7, struct.pack("<Q", filetime)) + _av(0, b""))
    major, minor, build = names.os_version
    version = bytes([major, minor]) + struct.pack("<H", build) + b"\0\0\0\x0f"
    offset = 56
    head = (SIGNATURE + struct.pack("<I", 2)
            + struct.pack("<HHI", len(name), len(name), offset)
            + struct.pack("<I", flags) + challenge + b"\0" * 8
            + struct.pack("<HHI", len(info), len(info), offset + len(name)) + version)
    return head + name + info


def _field(data: bytes, at: int) -> bytes:
    length, _max, offset = struct.unpack_from("<HHI", data, at)
    return data[offset:offset + length]


def parse_authenticate(data: bytes, challenge: bytes = b"") -> dict[str, Any] | None:
    """domain, user, workstation, `anonymous` and a hashcat line (NetNTLMv2: mode 5600,
    NetNTLMv1: mode 5500); None if not an AUTHENTICATE."""
    if len(data) < 52 or data[:8] != SIGNATURE or data[8:12] != b"\x03\0\0\0":
        return None
    lm, nt = _field(data, 12), _field(data, 20)
    flags = struct.unpack_from("<I", data, 60)[0] if len(data) >= 64 else UNICODE
    codec = "utf-16-le" if flags & UNICODE else "latin-1"
    domain, user, host = (_field(data, at).decode(codec, "replace") for at in (28, 36, 44))
    out: dict[str, Any] = {"domain": domain, "user": user, "workstation": host,
                           "anonymous": not user and len(nt) == 0 and len(lm) <= 1,
                           "nt_size": len(nt)}
    if len(nt) > 24 and challenge:
        out["hash"] = f"{user}::{domain}:{challenge.hex()}:{nt[:16].hex()}:{nt[16:].hex()}"
        out["hash_type"] = "netntlmv2"
    elif len(nt) == 24 and challenge:
        out["hash"] = f"{user}::{domain}:{lm.hex()}:{nt.hex()}:{challenge.hex()}"
        out["hash_type"] = "netntlmv1"
    return out
