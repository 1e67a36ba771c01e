"""What the engine starts beside the services: the downloader and the shellcode emulator.

Both work after the fact (a fetch or an emulation outlives the connection that caused it),
so their incidents may come after the connection's `connection.free`; the sinks keep
such late incidents with their connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from muscipula.config import Capture
from muscipula.incidents import Bus, Incident
from muscipula.store import Store

if TYPE_CHECKING:
    from muscipula.capture.bindstage import BindCatcher
    from muscipula.capture.cmdexe import Host
    from muscipula.capture.connectback import ConnectBack
    from muscipula.capture.download import Downloader
    from muscipula.capture.shellcode import Emulator
    from muscipula.net.runtime import Scan

log = logging.getLogger(__name__)



class CaptureHub:
    def __init__(self, cfg: Capture, store: Store, bus: Bus,
                 identity: dict[str, str] | None = None) -> None:
        """`identity`: who the machine the emulated shellcode runs on says it is."""
        self.cfg = cfg
        self.identity = identity or {}
        self.store = store
        self.bus = bus
        self.downloader: Downloader | None = None
        self.emulator: Emulator | None = None
        self.binds: BindCatcher | None = None
        self.connectback: ConnectBack | None = None

    def start(self) -> None:
        """Before the privileges drop: the emulator's workers import their engine here."""
        dl = self.cfg.download
        if dl.enabled:
            from muscipula.capture.download import Downloader

            self.downloader = Downloader(dl, self.store, self.bus)
            self.bus.subscribe("download.offer", self._offer)
            shell = self._shell_host()
            if dl.bind_stages:
                from muscipula.capture.bindstage import BindCatcher

                self.binds = BindCatcher(dl, self.store, self.bus, shell)
                self.bus.subscribe("emu.service", self.binds.service)
            if shell is not None:
                from muscipula.capture.connectback import ConnectBack

                self.connectback = ConnectBack(dl, self.downloader.policy, self.bus, shell)
                self.bus.subscribe("emu.service", self.connectback.service)
        if self.cfg.shellcode.enabled:
            from muscipula.capture.shellcode import Emulator

            self.emulator = Emulator(self.cfg.shellcode, self.store, self.bus,
                                     self.identity)

    def _shell_host(self) -> Host | None:
        """The cmd.exe shells are answered with: on a Windows persona (its identity names
        a Windows build), as SYSTEM, the account exploited services run as."""
        version = self.identity.get("version")
        if not self.cfg.download.shells or not version:
            return None
        from muscipula.capture.cmdexe import Host

        return Host(self.identity.get("hostname", ""), "nt authority\\system", version)

    def _offer(self, incident: Incident) -> None:
        assert self.downloader is not None
        url = incident.fields.get("url")
        if isinstance(url, str):
            source = incident.fields.get("source")
            self.downloader.offer(incident.conn, url, source if isinstance(source, str) else None)

    def scanner(self, service: str) -> Scan | None:
        """What a connection of `service` hands its transcript to when it ends, if anything."""
        if self.emulator is None or service not in self.cfg.shellcode.services:
            return None
        return self.emulator.scan

    def counters(self) -> dict[str, dict[str, int]]:
        """What the downloader and the emulator did, for counters.json."""
        out: dict[str, dict[str, int]] = {}
        if self.downloader is not None:
            out["download"] = {"fetched": self.downloader.fetched,
                               "refused_busy": self.downloader.refused_busy,
                               "refused_limit": self.downloader.refused_limit}
        if self.emulator is not None:
            out["shellcode"] = self.emulator.counters()
        return out

    async def close(self) -> None:
        """Emulations finish (their offers are recorded); fetches still running are given
        up and each says so with a download.failed."""
        if self.emulator is not None:
            await self.emulator.close()
        if self.binds is not None:
            await self.binds.close()
        if self.connectback is not None:
            await self.connectback.close()
        if self.downloader is not None:
            await self.downloader.close()
