"""Plausible xp_cmdshell output for the commands attackers run first.

Nothing is executed. On Windows, the command line goes to cmd.exe's emulation
(capture/cmdexe.py) as the SQL Server service account; on Linux, sh's few answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from muscipula.capture.cmdexe import Cmd, Host

if TYPE_CHECKING:
    from muscipula.protocols.mssql.product import Product


def run_command(command: str, p: Product, client_host: str) -> list[str]:
    if p.linux:
        return _linux(" ".join(command.split()).lower(), p)
    host = Host(p.server.upper()[:15], "nt service\\mssqlserver", p.windows_version)
    return Cmd(host).run(command)


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
