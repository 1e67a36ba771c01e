"""Turning an emulated API trace into what the shellcode wanted: URLs, shells, commands.

Pure functions over the trace the worker returns (a list of {"call", "args", "return"},
the shape the reference's emu_profiles kept), so they are tested without an emulator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from muscipula.capture.urls import find_offers

#: calls whose second argument is the URL fetched
_URL_ARG1 = {"URLDownloadToFileA", "URLDownloadToFileW", "URLDownloadToCacheFileA",
             "URLDownloadToCacheFileW", "InternetOpenUrlA", "InternetOpenUrlW"}
#: calls that run a command line: name -> indexes of the arguments that make it up
_COMMANDS = {"WinExec": (0,), "system": (0,), "_wsystem": (0,),
             "CreateProcessA": (0, 1), "CreateProcessW": (0, 1),
             "CreateProcessInternalA": (1, 2), "CreateProcessInternalW": (1, 2),
             "ShellExecuteA": (2, 3), "ShellExecuteW": (2, 3),
             "ShellExecuteExA": (), "ShellExecuteExW": ()}
_SOCKETS = {"socket", "WSASocketA", "WSASocketW"}
_HOSTPORT = re.compile(r"^\[?([0-9A-Fa-f:.]+)\]?:(\d{1,5})$")
_SECURE = 0x00800000  # INTERNET_FLAG_SECURE and WINHTTP_FLAG_SECURE alike
#: characters of one command line kept for URL extraction
MAX_COMMAND = 4096


#: offers, shells and commands kept per trace unless told otherwise: a download loop
#: would otherwise offer thousands of URLs, each a fetch
MAX_FINDINGS = 16


@dataclass
class Findings:
    offers: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    #: of `services`, those a process was started after (a cmd.exe on the socket: a
    #: shell); the others read code from it (stagers) or did nothing more
    shells: list[str] = field(default_factory=list)
    #: how many of each kind are kept; more are left out
    limit: int = MAX_FINDINGS

    def offer(self, url: str) -> None:
        if url and url not in self.offers and len(self.offers) < self.limit:
            self.offers.append(url)

    def service(self, url: str) -> None:
        if url not in self.services and len(self.services) < self.limit:
            self.services.append(url)

    def command(self, line: str) -> None:
        if line and line not in self.commands and len(self.commands) < self.limit:
            self.commands.append(line)


def short_name(api: str) -> str:
    """"kernel32.WinExec" -> "WinExec", as the reference's profiles named calls."""
    return api.rsplit(".", 1)[-1]


def _int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) and not _is_pointer(value) else ""


def _is_pointer(value: str) -> bool:
    return value.startswith("0x") and _int(value) is not None


def _hostport(value: Any) -> tuple[str, int] | None:
    m = _HOSTPORT.match(value) if isinstance(value, str) else None
    return (m.group(1), int(m.group(2))) if m else None


def _join_host(host: str, port: int | None, secure: bool) -> str:
    scheme = "https" if secure else "http"
    default = 443 if secure else 80
    hp = f"[{host}]" if ":" in host else host
    return f"{scheme}://{hp}" + (f":{port}" if port and port != default else "")


def findings(trace: list[dict[str, Any]], limit: int = MAX_FINDINGS) -> Findings:
    """What a trace of {"call", "args", "return"} reveals, at most `limit` of each kind."""
    out = Findings(limit=limit)
    connects: dict[int, tuple[str, int | None]] = {}  # handle -> (server, port)
    listening: dict[int, int] = {}  # socket -> port bound
    connected: dict[int, str] = {}  # socket -> tcp:// URL of the handler it reached
    for item in trace:
        call = short_name(str(item.get("call", "")))
        args = item.get("args") or []
        ret = _int(item.get("return"))

        def arg(i: int, args: list[Any] = args) -> Any:
            return args[i] if i < len(args) else None

        if call in _URL_ARG1:
            url = _text(arg(1))
            if "://" in url:
                out.offer(url)
        elif call in ("InternetConnectA", "InternetConnectW", "WinHttpConnect"):
            if ret:
                connects[ret] = (_text(arg(1)), _int(arg(2)))
        elif call in ("HttpOpenRequestA", "HttpOpenRequestW", "WinHttpOpenRequest"):
            target = connects.get(_int(arg(0)) or -1)
            flags = _int(arg(6 if call == "WinHttpOpenRequest" else 7)) or 0
            if target and target[0]:
                secure = bool(flags & _SECURE) or target[1] == 443
                path = _text(arg(2)) or "/"
                out.offer(_join_host(target[0], target[1], secure) + "/" + path.lstrip("/"))
        elif call in _COMMANDS:
            parts = [_text(arg(i)) for i in _COMMANDS[call]]
            line = " ".join(p for p in parts if p)[:MAX_COMMAND]
            out.command(line)
            out.shells = list(out.services)
        elif call == "bind":
            hp = _hostport(arg(1))
            sock = _int(arg(0))
            if hp and sock is not None:
                listening[sock] = hp[1]
        elif call == "listen":
            sock = _int(arg(0))
            if sock in listening:
                out.service(f"bindshell://{listening[sock]}")
        elif call in ("connect", "WSAConnect"):
            hp = _hostport(arg(1))
            sock = _int(arg(0))
            if hp:
                host = f"[{hp[0]}]" if ":" in hp[0] else hp[0]
                out.service(f"connectbackshell://{host}:{hp[1]}")
                if sock is not None:
                    connected[sock] = f"tcp://{host}:{hp[1]}/"
        elif call in ("recv", "WSARecv"):
            # a stager reading its next stage from the handler it connected to
            stage = connected.get(_int(arg(0)) or -1)
            if stage:
                out.offer(stage)
    if out.commands:
        for url in find_offers("\n".join(out.commands)):
            out.offer(url)
    return out
