"""A cmd.exe on a socket, for the shells emulated shellcode opens.

Worms that open a shell on their victim type their dropper into it: an `ftp -s:` script
built with echo, a tftp or a certutil line. Each line the peer sends is answered as
cmd.exe with its stdio on a socket answers it (the prompt, the line echoed, its output),
recorded as shell.command and searched for what it would download (download.offer,
source "shell"). A session ends at `exit`, the peer's close, `shell_idle` seconds
without a line, `shell_timeout` in all, or `max_shell_bytes` received.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from muscipula.capture.cmdexe import Cmd
from muscipula.capture.urls import find_offers
from muscipula.config import Download

#: cmd.exe's longest command line; a longer one is refused as cmd refuses it
MAX_LINE = 8191
READ = 4096
_SCRIPT = re.compile(r'(?i)-s:("[^"]*"|\S+)')

Emit = Callable[[str, dict[str, object]], None]


def _offers(cmd: Cmd, line: str) -> list[str]:
    """What `line` would download; an `ftp -s:FILE` line is read with the script it runs
    (each script once: all of them hold at most what the shell's disk has room for)."""
    scripts = [text for name in dict.fromkeys(m.group(1).strip('"')
                                              for m in _SCRIPT.finditer(line))
               for text in cmd.files.get(cmd.path(name).lower(), [])]
    return find_offers("\n".join([*scripts, line]))


async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cmd: Cmd,
                   cfg: Download, shell: str, emit: Emit) -> int:
    """Answer the peer until the session ends; the number of lines it sent."""
    loop = asyncio.get_running_loop()
    end = loop.time() + cfg.shell_timeout
    writer.write(("\r\n".join(cmd.banner) + "\r\n" + cmd.prompt).encode())
    pending = bytearray()
    received = lines = 0
    skipping = False  # the rest of an overlong line, up to its newline, is dropped
    offered: set[str] = set()
    while not cmd.exited:
        wait = min(cfg.shell_idle, end - loop.time())
        if wait <= 0:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(READ), wait)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        chunk = chunk[:cfg.max_shell_bytes - received]
        received += len(chunk)
        pending += chunk
        while not cmd.exited:
            cut = pending.find(b"\n")
            if skipping:
                del pending[:cut + 1 if cut >= 0 else len(pending)]
                skipping = cut < 0
                if skipping:
                    break
                continue
            if cut < 0 and len(pending) <= MAX_LINE:
                break
            overlong = cut < 0 or cut > MAX_LINE
            if overlong:
                raw = bytes(pending[:MAX_LINE])
                del pending[:cut + 1 if cut >= 0 else len(pending)]
                skipping = cut < 0
            else:
                raw = bytes(pending[:cut])
                del pending[:cut + 1]
            lines += 1
            line = raw.rstrip(b"\r").decode("cp437")
            writer.write(_answer(cmd, line, overlong, shell, emit, offered))
        if received >= cfg.max_shell_bytes:
            break
        try:
            await asyncio.wait_for(writer.drain(), max(wait, 0.1))
        except (TimeoutError, OSError):
            break
    return lines


def _answer(cmd: Cmd, line: str, overlong: bool, shell: str, emit: Emit,
            offered: set[str]) -> bytes:
    """What cmd.exe prints for one line read from its stdin: the line, its output, the
    next prompt (none after exit)."""
    if overlong:
        out = ["The input line is too long."]
    elif not line.strip():
        return ("\r\n" + cmd.prompt).encode("cp437", "replace")
    else:
        emit("shell.command", {"command": line, "shell": shell})
        for url in _offers(cmd, line):
            if url not in offered:
                offered.add(url)
                emit("download.offer", {"url": url, "source": "shell"})
        out = cmd.run(line)
    text = line + "\r\n" + "".join(x + "\r\n" for x in out)
    if not cmd.exited:
        text += "\r\n" + cmd.prompt
    return text.encode("cp437", "replace")
