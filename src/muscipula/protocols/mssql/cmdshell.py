"""Plausible xp_cmdshell output for the recon commands attackers run first.

Nothing is executed: a few commands get the lines the persona's host would print,
anything else what cmd.exe says of an unknown command (or nothing, for commands
that print nothing when they work, such as downloads to a file).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muscipula.protocols.mssql.product import Product

_SILENT = ("echo.", "del ", "copy ", "move ", "mkdir ", "md ", "cd ", "attrib ", "reg ",
           "taskkill", "net user ", "net localgroup ", "sc ", "schtasks", "certutil",
           "bitsadmin", "powershell", "cscript", "wscript", "start ", "regsvr32", "rundll32",
           "mshta", "ftp ", "tftp ", "cmd /c", "cmd.exe /c")


def run_command(command: str, p: Product, client_host: str) -> list[str]:
    cmd = " ".join(command.split())
    low = cmd.lower()
    host = p.server.upper()[:15]
    if p.linux:
        return _linux(low, p)
    if low in ("whoami", "whoami.exe"):
        return ["nt service\\mssqlserver"]
    if low == "hostname":
        return [host]
    if low == "ver":
        return ["", "Microsoft Windows [Version 6.1.7601]"]
    if low.startswith("echo "):
        return [cmd[5:]]
    if low in ("cd", "echo %cd%"):
        return ["C:\\Windows\\system32"]
    if low.startswith("set") and low.strip() == "set":
        return ["COMPUTERNAME=" + host, "ComSpec=C:\\Windows\\system32\\cmd.exe",
                "OS=Windows_NT", "PROCESSOR_ARCHITECTURE=AMD64",
                "SystemRoot=C:\\Windows", "USERNAME=" + host + "$"]
    if low.startswith("ipconfig"):
        ipv4, gateway, link = _addresses(host)
        return ["", "Windows IP Configuration", "", "",
                "Ethernet adapter Local Area Connection:", "",
                "   Connection-specific DNS Suffix  . : ",
                f"   Link-local IPv6 Address . . . . . : {link}%11",
                f"   IPv4 Address. . . . . . . . . . . : {ipv4}",
                "   Subnet Mask . . . . . . . . . . . : 255.255.255.0",
                f"   Default Gateway . . . . . . . . . : {gateway}"]
    if low.startswith(_SILENT):
        return []
    word = cmd.split(" ", 1)[0] if cmd else ""
    if not word:
        return []
    return [f"'{word}' is not recognized as an internal or external command,",
            "operable program or batch file."]


def _addresses(host: str) -> tuple[str, str, str]:
    """(IPv4, gateway, link-local IPv6) of this install: drawn from its host name, which
    is drawn once per install, so they stay the same for it and differ between installs."""
    h = hashlib.sha256(host.encode()).digest()
    net = f"10.{h[0]}.{h[1]}"
    groups = ":".join(f"{int.from_bytes(h[i:i + 2], 'big'):x}" for i in range(3, 11, 2))
    return f"{net}.{2 + h[2] % 250}", f"{net}.1", f"fe80::{groups}"


def _linux(low: str, p: Product) -> list[str]:
    if low == "whoami":
        return ["mssql"]
    if low == "hostname":
        return [p.server]
    if low == "id":
        return ["uid=10001(mssql) gid=10001(mssql) groups=10001(mssql)"]
    if low.startswith("uname"):
        return ["Linux"]
    if low.startswith("echo "):
        return [low[5:]]
    word = low.split(" ", 1)[0] if low else ""
    return [f"sh: 1: {word}: not found"] if word else []
