"""NTLM inside LOGIN7/SSPI: the server's CHALLENGE (names the host, as Windows does) and
the client's AUTHENTICATE read back for the record (a crackable NetNTLM line)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

SIGNATURE = b"NTLMSSP\0"
#: UNICODE, REQUEST_TARGET, NTLM, ALWAYS_SIGN, TARGET_TYPE_SERVER, EXTENDED_SESSIONSECURITY,
#: TARGET_INFO, VERSION, 128, KEY_EXCH, 56
FLAGS = 0xE28A8215


@dataclass(frozen=True, slots=True)
class Names:
    netbios_computer: str
    netbios_domain: str
    dns_computer: str
    dns_domain: str
    os_version: tuple[int, int, int]


def is_negotiate(token: bytes) -> bool:
    return token[:8] == SIGNATURE and token[8:12] == b"\x01\0\0\0"


def _av(kind: int, value: bytes) -> bytes:
    return struct.pack("<HH", kind, len(value)) + value


def challenge_message(names: Names, challenge: bytes, now: float) -> bytes:
    target = names.netbios_domain.encode("utf-16-le")
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
            + struct.pack("<HHI", len(target), len(target), offset)
            + struct.pack("<I", FLAGS) + challenge + b"\0" * 8
            + struct.pack("<HHI", len(info), len(info), offset + len(target)) + version)
    return head + target + info


def _field(data: bytes, at: int) -> bytes:
    length, _max, offset = struct.unpack_from("<HHI", data, at)
    return data[offset:offset + length]


def parse_authenticate(data: bytes, challenge: bytes = b"") -> dict[str, Any] | None:
    """domain, user, workstation and (NTLMv2) a hashcat line; None if not an AUTHENTICATE."""
    if len(data) < 52 or data[:8] != SIGNATURE or data[8:12] != b"\x03\0\0\0":
        return None
    nt = _field(data, 20)
    domain, user, host = (_field(data, at).decode("utf-16-le", "replace") for at in (28, 36, 44))
    out: dict[str, Any] = {"domain": domain, "user": user, "workstation": host}
    if len(nt) > 24 and challenge:
        out["hash"] = f"{user}::{domain}:{challenge.hex()}:{nt[:16].hex()}:{nt[16:].hex()}"
    return out
