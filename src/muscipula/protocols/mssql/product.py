"""What the persona's SQL Server says about itself: versions, @@VERSION, SERVERPROPERTY."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Product:
    name: str  # "Microsoft SQL Server 2008 R2"
    version: tuple[int, int, int]  # major, minor, build
    revision: int
    level: str  # SP3, RTM
    edition: str
    version_string: str  # @@VERSION
    server: str  # @@SERVERNAME, the name in error messages
    instance: str
    linux: bool
    #: the host's Windows build as cmd.exe's `ver` prints it
    windows_version: str = "6.1.7601"

    @property
    def max_tds(self) -> int:
        """The newest TDS the server speaks: 7.3 up to 2008 R2, 7.4 from 2012."""
        return 0x74 if self.version[0] >= 11 else 0x73

    @property
    def full_version(self) -> str:
        major, minor, build = self.version
        return f"{major}.{minor}.{build}.{self.revision}"

    def tds_version(self, client: int) -> tuple[int, bytes]:
        """LOGINACK's TDS version for a client speaking `client`."""
        tds = min(client, self.max_tds)
        return tds, {0x71: b"\x71\x00\x00\x01", 0x72: b"\x72\x09\x00\x02",
                     0x73: b"\x73\x0b\x00\x03"}.get(tds, b"\x74\x00\x00\x04")

    def property(self, name: str) -> Any:
        key = name.lower()
        major = self.version[0]
        return {
            "productversion": self.full_version, "productlevel": self.level,
            "edition": self.edition, "engineedition": 2 if "Standard" in self.edition else 3,
            "machinename": self.server, "servername": self.server, "instancename": None,
            "isclustered": 0, "isintegratedsecurityonly": 0, "isfulltextinstalled": 0,
            "collation": "SQL_Latin1_General_CP1_CI_AS", "lcid": 1033,
            "productmajorversion": str(major) if major >= 11 else None,
            "productminorversion": str(self.version[1]) if major >= 11 else None,
            "productbuild": str(self.version[2]) if major >= 11 else None,
            "buildclrversion": "v4.0.30319" if major >= 11 else "v2.0.50727",
            "processid": None, "issingleuser": 0, "ishadrenabled": 0,
            "computernamephysicalnetbios": self.server.upper()[:15],
        }.get(key)


def make_product(facts: dict[str, Any], hostname: str, linux: bool,
                 windows_version: str = "6.1.7601") -> Product:
    parts = [int(p) for p in str(facts.get("version", "10.50.6000")).split(".")]
    while len(parts) < 3:
        parts.append(0)
    version = (parts[0], parts[1], parts[2])
    revision = int(facts.get("revision", parts[3] if len(parts) > 3 else 0))
    name = str(facts.get("product", "Microsoft SQL Server"))
    level = str(facts.get("level", "RTM"))
    edition = str(facts.get("edition", "Standard Edition (64-bit)"))
    full = f"{version[0]}.{version[1]}.{version[2]}.{revision}"
    template = str(facts.get("version_string", "{product} ({level}) - {full} (X64)"))
    text = template.format(product=name, level=level, full=full, edition=edition)
    server = hostname if linux else hostname.upper()
    return Product(name, version, revision, level, edition, text, server,
                   str(facts.get("instance", "MSSQLSERVER")), linux, windows_version)
