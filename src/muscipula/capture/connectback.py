"""Connect-back shells: going where emulated shellcode's cmd.exe would have gone.

A reverse shell connects to its attacker's handler and runs cmd.exe with that socket
as its stdio; the handler (a worm's, or a listening netcat) then types its commands.
When emulation finds one (emu.service connectbackshell://host:port, kind shell), this
connects there as the victim would, checked by the downloader's destination policy
(only public addresses, or `allow_networks`), and answers as cmd.exe (shellsession.py).
At most `max_shells` sessions run at once; a refused, failed or busy one is a
download.failed of its URL, as a fetch would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from muscipula.capture.cmdexe import Cmd, Host
from muscipula.capture.download.connect import connect
from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.policy import Policy
from muscipula.capture.shellsession import converse
from muscipula.config import Download
from muscipula.incidents import Bus, Incident

log = logging.getLogger(__name__)


class ConnectBack:
    def __init__(self, cfg: Download, policy: Policy, bus: Bus, host: Host) -> None:
        self.cfg, self.policy, self.bus, self.host = cfg, policy, bus, host
        self.tasks: set[asyncio.Task[None]] = set()

    def service(self, incident: Incident) -> None:
        """An emu.service incident: a connect-back shell is followed to its handler."""
        f = incident.fields
        url = str(f.get("url", ""))
        if f.get("kind") != "shell" or not url.startswith("connectbackshell://"):
            return
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return
        if not host or not port:
            return
        if host == f.get("local_host") and not self._allowed(host):
            # never a connection to the honeypot itself (unless allow_networks says so)
            self._failed(incident.conn, url, "destination", "the attacked host itself")
            return
        if len(self.tasks) >= self.cfg.max_shells:
            self._failed(incident.conn, url, "busy", f"{len(self.tasks)} shells open")
            return
        task = asyncio.get_running_loop().create_task(
            self._session(incident.conn, host, port, url))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _session(self, conn: int, host: str, port: int, url: str) -> None:
        cfg = self.cfg
        try:
            addrs = await self.policy.resolve(host, port, socket.SOCK_STREAM,
                                              cfg.connect_timeout)
            reader, writer = await connect(addrs, port, cfg.connect_timeout)
        except FetchError as exc:
            self._failed(conn, url, exc.reason, exc.detail)
            return
        try:
            await converse(reader, writer, Cmd(self.host), cfg, url,
                           lambda name, fields: self.bus.emit(name, conn, fields))
        except Exception as exc:  # a bug ends this session, never the server
            log.exception("shell session to %s failed", url)
            self._failed(conn, url, "error", type(exc).__name__)
        finally:
            writer.close()

    def _allowed(self, host: str) -> bool:
        """Whether `host` is an address allow_networks names."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.policy.allowed if net.version == ip.version)

    def _failed(self, conn: int, url: str, reason: str, detail: str) -> None:
        self.bus.emit("download.failed", conn, {"url": url, "reason": reason,
                                                "detail": detail})

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self.tasks), timeout=5.0)
