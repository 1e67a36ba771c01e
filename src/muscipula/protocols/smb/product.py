"""What the persona's file server says about itself: dialects, capabilities, sizes, names.

windows-2008r2 is srv.sys/srv2.sys of Windows Server 2008 R2 SP1 (SMB1 "NT LM 0.12", SMB 2.002
and 2.1); debian-12 is Samba 4.17 (SMB1 off by default since 4.11, SMB2 up to 3.1.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from muscipula.protocols.smb import spnego

DIALECT_NAMES = {0x0202: "2.0.2", 0x0210: "2.1", 0x0300: "3.0", 0x0302: "3.0.2",
                 0x0311: "3.1.1", 0x02FF: "2.???"}

#: SMB2 capabilities: DFS, LEASING, LARGE_MTU, MULTI_CHANNEL
DFS, LEASING, LARGE_MTU, MULTI_CHANNEL = 0x1, 0x2, 0x4, 0x8


@dataclass(frozen=True, slots=True)
class Product:
    samba: bool
    smb1: bool
    dialects: tuple[int, ...]
    security_mode: int
    native_os: str
    native_lan_manager: str
    mechs: tuple[str, ...]
    #: SMB1 negotiate: MaxMpxCount, MaxBufferSize, MaxRawSize, Capabilities
    smb1_max_mpx: int = 50
    smb1_max_buffer: int = 16644
    smb1_max_raw: int = 65536
    #: Windows Server 2008 R2's (no CAP_DFS on a member server: nmap's fingerprint of it)
    smb1_capabilities: int = 0x8001E3FD
    #: minutes west of UTC, as SMB1 NEGOTIATE carries it
    timezone: int = 0
    #: ServerStartTime in SMB2 NEGOTIATE (Samba sends 0)
    start_time: bool = True

    def capabilities(self, dialect: int) -> int:
        if self.samba:
            return DFS | LEASING | LARGE_MTU | (MULTI_CHANNEL if dialect >= 0x0300 else 0)
        return DFS if dialect == 0x0202 else DFS | LEASING | LARGE_MTU

    def sizes(self, dialect: int) -> tuple[int, int, int]:
        """MaxTransactSize, MaxReadSize, MaxWriteSize."""
        if self.samba:
            big = 8 * 1024 * 1024 if dialect != 0x0202 else 65536
            return big, big, big
        big = 1024 * 1024 if dialect != 0x0202 else 65536
        return big, big, big

    def pick(self, offered: list[int]) -> int | None:
        """The highest dialect both sides speak."""
        common = [d for d in offered if d in self.dialects]
        return max(common) if common else None


def make_product(facts: dict[str, Any], linux: bool) -> Product:
    if linux:
        return Product(
            samba=True, smb1=bool(facts.get("smb1", False)),
            dialects=(0x0202, 0x0210, 0x0300, 0x0302, 0x0311), security_mode=1,
            native_os=str(facts.get("native_os", "Windows 6.1")),
            native_lan_manager=str(facts.get("native_lan_manager", "Samba")),
            mechs=(spnego.NTLMSSP_OID,), smb1_max_mpx=50, smb1_max_buffer=65535,
            smb1_max_raw=65536, smb1_capabilities=0x8080F3FD, start_time=False)
    return Product(
        samba=False, smb1=bool(facts.get("smb1", True)), dialects=(0x0202, 0x0210),
        security_mode=1, native_os=str(facts.get("native_os", "")),
        native_lan_manager=str(facts.get("native_lan_manager", "")),
        mechs=(spnego.MS_KRB5_OID, spnego.KRB5_OID, spnego.KRB5_U2U_OID, spnego.NTLMSSP_OID))
