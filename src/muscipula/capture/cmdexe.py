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
from dataclasses import dataclass, field

#: a command's parts: quoted runs kept whole, then the separators cmd splits a line at
_PARTS = re.compile(r'"[^"]*"?|&&|\|\||[&|]|[^"&|]+')
#: an output redirection: its stream, > or >>, and its target
_REDIRECT = re.compile(r'(?:(?<!\S)([12]))?(>>?)\s*("[^"]*"|[^\s>]+)')
_VARIABLE = re.compile(r"%(\w+)%")
_QUOTED = re.compile(r'"[^"]*"?|[^"]+')
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
#: cmd.exe's longest command line (after %variables% are expanded)
MAX_LINE = 8191
#: the longest directory `cd` moves to (MAX_PATH less a file name's room)
MAX_PATH = 247


@dataclass(frozen=True)
class Host:
    """The machine cmd.exe runs on, as the persona has it."""

    #: NetBIOS name, COMPUTERNAME
    name: str
    #: what whoami prints: the account the exploited service runs as
    user: str
    #: `ver`'s build, e.g. 6.1.7601
    version: str = "6.1.7601"


@dataclass
class Disk:
    """The files `echo` wrote, shared by a shell and the `cmd /c` it runs: `room`
    characters more may be written."""

    room: int
    files: dict[str, list[str]] = field(default_factory=dict)


class Cmd:
    """One cmd.exe: its working directory and the files `echo` wrote, bounded."""

    def __init__(self, host: Host, cwd: str = "C:\\Windows\\system32",
                 max_file_chars: int = 64 * 1024, disk: Disk | None = None) -> None:
        self.host, self.cwd = host, cwd
        self.disk = disk or Disk(max_file_chars)
        self.exited = False

    @property
    def files(self) -> dict[str, list[str]]:
        return self.disk.files

    @property
    def banner(self) -> list[str]:
        return [f"Microsoft Windows [Version {self.host.version}]",
                "Copyright (c) 2009 Microsoft Corporation.  All rights reserved.", ""]

    @property
    def prompt(self) -> str:
        return self.cwd + ">"

    def run(self, line: str, depth: int = 0) -> list[str]:
        """The lines `line` prints; `exited` says whether it ended the shell."""
        return self._run(line, depth)[0]

    def _run(self, line: str, depth: int) -> tuple[list[str], bool]:
        """The lines printed and whether the last command worked (for && and ||)."""
        line = self._expand(line)
        if len(line) > MAX_LINE:
            return ["The input line is too long."], False
        out: list[str] = []
        ok = True
        piped: list[str] | None = None  # what the command before `|` printed
        op, command, skipped = "&", "", False
        for part in [*_PARTS.findall(line), ""]:
            if part and part not in ("&", "&&", "||", "|"):
                command += part
                continue
            if not command.strip():
                if not part:  # the line ended with its last command
                    break
                return [*out, f"{part} was unexpected at this time."], False
            # `|` binds tighter than && and ||: a pipeline they skip is skipped whole
            skipped = not (op == "&" or (op == "|" and not skipped) or
                           (op in ("&&", "||") and (op == "&&") == ok))
            if not skipped:
                lines, ok = self._one(command.strip(), depth, piped)
                if part == "|":
                    piped = lines
                else:
                    piped = None
                    out += lines
            op, command = part, ""
            if self.exited:
                break
        return out, ok

    def _expand(self, line: str) -> str:
        values = {"cd": self.cwd, "computername": self.host.name,
                  "username": self.host.user.rsplit("\\", 1)[-1],
                  "systemroot": "C:\\Windows", "windir": "C:\\Windows",
                  "temp": "C:\\Windows\\TEMP", "tmp": "C:\\Windows\\TEMP",
                  "comspec": "C:\\Windows\\system32\\cmd.exe"}
        return _VARIABLE.sub(lambda m: values.get(m.group(1).lower(), m.group(0)), line)

    def _one(self, command: str, depth: int,
             piped: list[str] | None) -> tuple[list[str], bool]:
        targets: list[tuple[str, str, str]] = []
        kept: list[str] = []
        for piece in _QUOTED.findall(command):  # > inside quotes is text, not a redirection
            if piece.startswith('"'):
                kept.append(piece)
                continue
            targets += [(m.group(1) or "1", m.group(2), m.group(3).strip('"'))
                        for m in _REDIRECT.finditer(piece)]
            kept.append(_REDIRECT.sub("", piece))
        text = "".join(kept).strip().lstrip("@")
        lines, ok = self._output(text, depth, piped)
        for stream, mode, target in targets:
            if stream == "1":
                if target.lower() != "nul":
                    self._write(target, lines, append=mode == ">>")
                lines = []
        return lines, ok

    def _output(self, text: str, depth: int,
                piped: list[str] | None) -> tuple[list[str], bool]:
        word, _, rest = text.partition(" ")
        name = word.strip('"').rsplit("\\", 1)[-1].lower()
        base = name[:-4] if name.endswith(".exe") else name
        if base.startswith("echo") and (base == "echo" or base[4:5] in ".:("):
            return self._echo(text[4:]), True
        if base in ("cd", "chdir") or base.startswith("cd\\") or base.startswith("cd.."):
            return self._cd((text[2:] if base.startswith("cd") else text[5:]).strip())
        if len(base) == 2 and base[1] == ":" and not rest:
            self.cwd = base.upper() + "\\"
            return [], True
        if base == "exit":
            self.exited = True
            return [], True
        if base in ("findstr", "find") and piped is not None:
            return _find(rest, piped)
        if base == "cmd":
            inner = re.match(r'(?i)\s*(?:/[a-bd-jl-z]\S*\s+)*/[ck]\s*(.*)$', rest)
            if inner and depth < _MAX_DEPTH:
                body = inner.group(1).strip()
                if len(body) > 1 and body[0] == '"' and body[-1] == '"':
                    body = body[1:-1]
                # a shell of its own: its exit and cd end with it, its files stay
                return Cmd(self.host, self.cwd, disk=self.disk)._run(body, depth + 1)
            return [], True
        return self._builtin(base, rest, word)

    def _builtin(self, base: str, rest: str, word: str) -> tuple[list[str], bool]:
        host = self.host
        if base == "whoami":
            return [host.user], True
        if base == "hostname":
            return [host.name], True
        if base == "ver":
            return ["", f"Microsoft Windows [Version {host.version}]"], True
        if base == "type":
            content = self.files.get(self.path(rest.strip().strip('"')).lower())
            if content is None:
                return ["The system cannot find the file specified."], False
            return list(content), True
        if base == "set":
            return ([] if rest.strip() else [
                "COMPUTERNAME=" + host.name, "ComSpec=C:\\Windows\\system32\\cmd.exe",
                "OS=Windows_NT", "PROCESSOR_ARCHITECTURE=AMD64", "SystemRoot=C:\\Windows",
                "USERNAME=" + host.user.rsplit("\\", 1)[-1]]), True
        if base == "ipconfig":
            ipv4, gateway, link = addresses(host.name)
            return ["", "Windows IP Configuration", "", "",
                    "Ethernet adapter Local Area Connection:", "",
                    "   Connection-specific DNS Suffix  . : ",
                    f"   Link-local IPv6 Address . . . . . : {link}%11",
                    f"   IPv4 Address. . . . . . . . . . . : {ipv4}",
                    "   Subnet Mask . . . . . . . . . . . : 255.255.255.0",
                    f"   Default Gateway . . . . . . . . . : {gateway}"], True
        program = word.strip('"').lower()
        if base in _SILENT or program.endswith(_PROGRAM) or "\\" in program or "/" in program:
            return [], True
        return [f"'{word.strip(chr(34))}' is not recognized as an internal or external "
                "command,", "operable program or batch file."], False

    def _echo(self, rest: str) -> list[str]:
        """`echo X` prints X (one separator after echo dropped, the rest kept)."""
        if rest in ("", " ") or rest.strip() == "":
            return ["ECHO is on."]
        if rest.strip().lower() in ("on", "off"):
            return []
        return [rest[1:]]

    def _cd(self, arg: str) -> tuple[list[str], bool]:
        arg = arg.strip('"')
        if arg.lower().startswith("/d"):
            arg = arg[2:].strip().strip('"')
        if not arg:
            return [self.cwd], True
        path = self.path(arg)
        if len(path) > MAX_PATH:
            return ["The filename or extension is too long."], False
        self.cwd = path if len(path) > 3 else path[:2] + "\\"
        return [], True

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
        if size > self.disk.room:
            return
        self.disk.room -= size
        self.files[key] = old + lines


def _find(args: str, piped: list[str]) -> tuple[list[str], bool]:
    """`... | findstr [/i] word` and `find [/i] "word"`: the piped lines holding it."""
    words = args.split()
    fold = any(w.lower() == "/i" for w in words)
    terms = [w.strip('"') for w in words if not w.startswith("/")]
    if not terms:
        return [], False
    needle = terms[0].lower() if fold else terms[0]
    found = [x for x in piped if needle in (x.lower() if fold else x)]
    return found, bool(found)


def addresses(host: str) -> tuple[str, str, str]:
    """(IPv4, gateway, link-local IPv6) of this install: drawn from its host name, which
    is drawn once per install, so they stay the same for it and differ between installs."""
    h = hashlib.sha256(host.encode()).digest()
    net = f"10.{h[0]}.{h[1]}"
    groups = ":".join(f"{int.from_bytes(h[i:i + 2], 'big'):x}" for i in range(3, 11, 2))
    return f"{net}.{2 + h[2] % 250}", f"{net}.1", f"fe80::{groups}"
