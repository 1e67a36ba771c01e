"""What cmd.exe prints for the command lines attackers give it.

Used for xp_cmdshell and for the shells emulated shellcode opens on a socket. Nothing
runs. A line is split at &, &&, || and | outside quotes, as cmd splits it; each command
gets the lines the persona's host would print. `echo ... > f` and `>> f` write into a
small in-memory file that `type` shows, so the `ftp -s:` scripts droppers build hang
together; `cd` moves a working directory the prompt shows. Commands that print nothing
when they work (downloads, deletes, starts) print nothing; unknown ones get cmd's own
complaint.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

#: a command's parts: quoted runs kept whole, then the separators cmd splits a line at
_PARTS = re.compile(r'"[^"]*"?|&&|\|\||[&|]|[^"&|]+')
#: an output redirection: its stream, > or >>, and its target
_REDIRECT = re.compile(r'(?:(?<!\S)([12]))?(>>?)\s*("[^"]*"|[^\s>]+)')
_VARIABLE = re.compile(r"%(\w+)%")
#: commands that print nothing when they work
_SILENT = frozenset({
    "del", "erase", "copy", "move", "mkdir", "md", "rd", "rmdir", "attrib", "reg",
    "taskkill", "net", "net1", "sc", "schtasks", "certutil", "bitsadmin", "powershell",
    "pwsh", "cscript", "wscript", "start", "regsvr32", "rundll32", "mshta", "ftp", "tftp",
    "wmic", "netsh", "icacls", "cacls", "takeown", "title", "color", "cls", "rem", "pause",
    "setlocal", "endlocal", "shift", "goto", "call", "timeout", "ping", "dir", "at",
    "expand", "xcopy", "ren", "rename", "msiexec", "vssadmin", "bcdedit", "wevtutil"})
#: what a program run by its path ends with
_PROGRAM = (".exe", ".com", ".bat", ".cmd", ".vbs", ".js", ".ps1", ".scr", ".pif")
#: nested `cmd /c` levels followed
_MAX_DEPTH = 4


@dataclass(frozen=True)
class Host:
    """The machine cmd.exe runs on, as the persona has it."""

    #: NetBIOS name, COMPUTERNAME
    name: str
    #: what whoami prints: the account the exploited service runs as
    user: str
    #: `ver`'s build, e.g. 6.1.7601
    version: str = "6.1.7601"


class Cmd:
    """One cmd.exe: its working directory and the files `echo` wrote, bounded."""

    def __init__(self, host: Host, cwd: str = "C:\\Windows\\system32",
                 max_file_chars: int = 64 * 1024) -> None:
        self.host, self.cwd = host, cwd
        self.files: dict[str, list[str]] = {}
        self.room = max_file_chars
        self.exited = False

    @property
    def banner(self) -> list[str]:
        return [f"Microsoft Windows [Version {self.host.version}]",
                "Copyright (c) 2009 Microsoft Corporation.  All rights reserved.", ""]

    @property
    def prompt(self) -> str:
        return self.cwd + ">"

    def run(self, line: str, depth: int = 0) -> list[str]:
        """The lines `line` prints; `exited` says whether it ended the shell."""
        out: list[str] = []
        command = ""
        for part in [*_PARTS.findall(self._expand(line)), "&"]:
            if part in ("&", "&&", "||", "|"):
                if command.strip():
                    out += self._one(command.strip(), depth)
                command = ""
                if self.exited:
                    break
            else:
                command += part
        return out

    def _expand(self, line: str) -> str:
        values = {"cd": self.cwd, "computername": self.host.name,
                  "username": self.host.user.rsplit("\\", 1)[-1],
                  "systemroot": "C:\\Windows", "windir": "C:\\Windows",
                  "temp": "C:\\Windows\\TEMP", "tmp": "C:\\Windows\\TEMP",
                  "comspec": "C:\\Windows\\system32\\cmd.exe"}
        return _VARIABLE.sub(lambda m: values.get(m.group(1).lower(), m.group(0)), line)

    def _one(self, command: str, depth: int) -> list[str]:
        targets = [(m.group(1) or "1", m.group(2), m.group(3).strip('"'))
                   for m in _REDIRECT.finditer(command)]
        text = _REDIRECT.sub("", command).strip().lstrip("@")
        lines = self._output(text, depth)
        for stream, mode, target in targets:
            if stream == "1":
                if target.lower() != "nul":
                    self._write(target, lines, append=mode == ">>")
                lines = []
        return lines

    def _output(self, text: str, depth: int) -> list[str]:
        word, _, rest = text.partition(" ")
        name = word.strip('"').rsplit("\\", 1)[-1].lower()
        base = name[:-4] if name.endswith(".exe") else name
        if base.startswith("echo") and (base == "echo" or base[4:5] in ".:("):
            return self._echo(text[4:])
        if base in ("cd", "chdir") or base.startswith("cd\\") or base.startswith("cd.."):
            return self._cd((text[2:] if base.startswith("cd") else text[5:]).strip())
        if len(base) == 2 and base[1] == ":" and not rest:
            self.cwd = base.upper() + "\\"
            return []
        if base == "exit":
            self.exited = True
            return []
        if base == "cmd":
            inner = re.match(r'(?i)\s*(?:/[a-bd-jl-z]\S*\s+)*/[ck]\s*(.*)$', rest)
            if inner and depth < _MAX_DEPTH:
                body = inner.group(1).strip()
                if len(body) > 1 and body[0] == '"' and body[-1] == '"':
                    body = body[1:-1]
                return self.run(body, depth + 1)
            return []
        return self._builtin(base, rest, word)

    def _builtin(self, base: str, rest: str, word: str) -> list[str]:
        host = self.host
        if base == "whoami":
            return [host.user]
        if base == "hostname":
            return [host.name]
        if base == "ver":
            return ["", f"Microsoft Windows [Version {host.version}]"]
        if base == "type":
            content = self.files.get(self.path(rest.strip().strip('"')).lower())
            return list(content) if content is not None else [
                "The system cannot find the file specified."]
        if base == "set":
            return [] if rest.strip() else [
                "COMPUTERNAME=" + host.name, "ComSpec=C:\\Windows\\system32\\cmd.exe",
                "OS=Windows_NT", "PROCESSOR_ARCHITECTURE=AMD64", "SystemRoot=C:\\Windows",
                "USERNAME=" + host.user.rsplit("\\", 1)[-1]]
        if base == "ipconfig":
            ipv4, gateway, link = addresses(host.name)
            return ["", "Windows IP Configuration", "", "",
                    "Ethernet adapter Local Area Connection:", "",
                    "   Connection-specific DNS Suffix  . : ",
                    f"   Link-local IPv6 Address . . . . . : {link}%11",
                    f"   IPv4 Address. . . . . . . . . . . : {ipv4}",
                    "   Subnet Mask . . . . . . . . . . . : 255.255.255.0",
                    f"   Default Gateway . . . . . . . . . : {gateway}"]
        program = word.strip('"').lower()
        if base in _SILENT or program.endswith(_PROGRAM) or "\\" in program or "/" in program:
            return []
        return [f"'{word.strip(chr(34))}' is not recognized as an internal or external "
                "command,", "operable program or batch file."]

    def _echo(self, rest: str) -> list[str]:
        """`echo X` prints X (one separator after echo dropped, the rest kept)."""
        if rest in ("", " ") or rest.strip() == "":
            return ["ECHO is on."]
        if rest.strip().lower() in ("on", "off"):
            return []
        return [rest[1:]]

    def _cd(self, arg: str) -> list[str]:
        arg = arg.strip('"')
        if arg.lower().startswith("/d"):
            arg = arg[2:].strip().strip('"')
        if not arg:
            return [self.cwd]
        path = self.path(arg)
        self.cwd = path if len(path) > 3 else path[:2] + "\\"
        return []

    def path(self, name: str) -> str:
        """`name` made absolute against the working directory, `.` and `..` resolved."""
        if len(name) > 1 and name[1] == ":":
            drive, rest = name[:2].upper(), name[2:]
        elif name.startswith("\\"):
            drive, rest = self.cwd[:2], name
        else:
            drive, rest = self.cwd[:2], self.cwd[2:] + "\\" + name
        parts: list[str] = []
        for p in rest.replace("/", "\\").split("\\"):
            if p == "..":
                if parts:
                    parts.pop()
            elif p and p != ".":
                parts.append(p)
        return drive + "\\" + "\\".join(parts)

    def _write(self, target: str, lines: list[str], append: bool) -> None:
        key = self.path(target).lower()
        old = self.files.get(key, []) if append else []
        size = sum(len(x) for x in lines)
        if size > self.room:
            return
        self.room -= size
        self.files[key] = old + lines


def addresses(host: str) -> tuple[str, str, str]:
    """(IPv4, gateway, link-local IPv6) of this install: drawn from its host name, which
    is drawn once per install, so they stay the same for it and differ between installs."""
    h = hashlib.sha256(host.encode()).digest()
    net = f"10.{h[0]}.{h[1]}"
    groups = ":".join(f"{int.from_bytes(h[i:i + 2], 'big'):x}" for i in range(3, 11, 2))
    return f"{net}.{2 + h[2] % 250}", f"{net}.1", f"fe80::{groups}"
