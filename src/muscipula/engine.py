"""Starting and stopping everything: state, persona, sinks, services, listeners."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from muscipula import services
from muscipula.capture.hub import CaptureHub
from muscipula.config import Config
from muscipula.incidents import Bus, Connection
from muscipula.net import datagram, stream
from muscipula.net.listeners import (
    BindError,
    Endpoint,
    FamilyUnavailable,
    bind,
    drop_privileges,
)
from muscipula.net.runtime import Caps, ServiceRuntime, Shared
from muscipula.persona import PersonaView, resolve
from muscipula.store import Store

log = logging.getLogger(__name__)


def open_records(shared: Shared) -> Iterator[Connection]:
    """Every open connection's record, each parent before its children: what a restarted
    sink process is told of again."""
    for session in list(shared.sessions):
        yield session.conn
        for child in list((session.children or {}).values()):
            conn = getattr(child, "conn", None)
            if conn is not None:
                yield conn


def endpoints(config: Config, port_offset: int = 0,
              addresses: list[str] | None = None) -> list[Endpoint]:
    from muscipula.persona import PRESETS

    hosts = addresses or config.listen.addresses
    family = PRESETS[config.persona.preset]["os_family"]
    out = []
    for name, svc in config.services.items():
        if not svc.enabled:
            continue
        spec = services.get(name)
        if spec is not None and spec.os_families and family not in spec.os_families:
            log.info("%s: not on a %s host (persona %s)", name, family, config.persona.preset)
            continue
        for transport, ports in (("tcp", svc.tcp_ports), ("tls", svc.tls_ports),
                                 ("udp", svc.udp_ports)):
            for port in ports:
                for host in hosts:
                    out.append(Endpoint(name, transport, host, port + port_offset))
    return out


@dataclass
class Engine:
    config: Config
    state_dir: Path
    port_offset: int = 0
    addresses: list[str] | None = None
    bus: Bus = field(default_factory=Bus)
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    udp: list[asyncio.DatagramTransport] = field(default_factory=list)
    shared: Shared | None = None
    persona: PersonaView | None = None
    capture: CaptureHub | None = None

    def bind_all(self) -> list[tuple[Endpoint, socket.socket]]:
        """Bind every endpoint; raises BindError naming the first that fails.

        A wildcard of an address family the host lacks (:: without IPv6) is left
        out with a warning, so the default config runs on IPv4-only hosts.
        """
        bound: list[tuple[Endpoint, socket.socket]] = []
        try:
            for ep in endpoints(self.config, self.port_offset, self.addresses):
                try:
                    bound.append((ep, bind(ep)))
                except FamilyUnavailable as exc:
                    log.warning("%s; serving the other address family only", exc)
        except Exception:
            for _, sock in bound:
                sock.close()
            raise
        if not bound:
            raise BindError("nothing to listen on: no enabled service could be bound")
        return bound

    def _hand_over_state(self) -> None:
        """Give the state dir to run_as.user before dropping root (its files were made as root)."""
        user = self.config.run_as.user
        if user and os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam(user)
            for path in [self.state_dir, *self.state_dir.rglob("*")]:
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def _sinks(self) -> None:
        from muscipula.sinks.process import SinkHost

        # The disk sinks run in one child process (see sinks/process.py for why).
        cfg = self.config.sinks
        host = self._sink_host = SinkHost(nice=cfg.nice)
        self.bus.max_hold = cfg.max_hold
        if cfg.logsql.enabled:
            self.bus.add(host.sink("logsql", "logsql", self.state_dir / cfg.logsql.file,
                                   cfg.max_late_connections),
                         cfg.logsql.queue_size, cfg.logsql.batch_size,
                         backpressure=cfg.logsql.backpressure)
        if cfg.jsonlog.enabled:
            self.bus.add(host.sink("jsonlog", "jsonlog", self.state_dir / cfg.jsonlog.file,
                                   cfg.jsonlog, cfg.max_late_connections),
                         cfg.jsonlog.queue_size,
                         backpressure=cfg.jsonlog.backpressure)
        if cfg.hpfeeds.enabled:
            from muscipula.sinks.hpfeeds import Hpfeeds

            self.bus.add(Hpfeeds(cfg.hpfeeds, max_late=cfg.max_late_connections),
                         cfg.hpfeeds.queue_size, 100,
                         backpressure=cfg.hpfeeds.backpressure)

    async def start(self, bound: list[tuple[Endpoint, socket.socket]]) -> None:
        """Everything that imports code or makes files as root happens before the drop."""
        cfg = self.config
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        persona = self.persona = resolve(cfg, self.state_dir)
        from muscipula import certs

        tls = certs.Contexts(persona)
        tls_ctx = certs.server_context(persona)
        store = Store(self.state_dir / cfg.store.dir, cfg.store.max_file_bytes,
                      cfg.store.max_total_bytes, cfg.store.max_open_files)
        self._sinks()
        capture = self.capture = CaptureHub(cfg.capture, store, self.bus,
                                            persona.emulated_identity())
        capture.start()
        writer = self._sink_host.transcripts(self.state_dir / cfg.paths.transcripts)
        shared = self.shared = Shared(bus=self.bus, store=store,
                                      caps=Caps(cfg.limits.max_connections),
                                      transcripts=writer, tls_context=lambda: tls_ctx,
                                      transcript_room=cfg.limits.max_transcript_memory)
        self._sink_host.open_connections = lambda: open_records(shared)

        def give_back(size: int) -> None:  # the writer is done with a transcript's bytes
            shared.transcript_room += size

        writer.release = give_back
        runtimes = {ep.service: self._runtime(ep.service, shared, persona) for ep, _ in bound}
        for rt in runtimes.values():  # one context per distinct profile, made before the drop
            rt.tls_context = tls.getter(rt.name)
            rt.scan = capture.scanner(rt.name)
            if rt.scan is not None:
                rt.live_quiet = cfg.capture.shellcode.live_quiet
                rt.live_scans = cfg.capture.shellcode.live_scans
        self._hand_over_state()
        await self._sink_host.start(cfg.run_as.user, cfg.run_as.group)
        drop_privileges(cfg.run_as.user, cfg.run_as.group)
        await self.bus.start()
        loop = asyncio.get_running_loop()
        for ep, sock in bound:
            rt = runtimes[ep.service]
            if ep.transport == "udp":
                transport, _ = await loop.create_datagram_endpoint(
                    lambda rt=rt: datagram.DatagramDriver(rt), sock=sock)
                self.udp.append(transport)
            else:
                server = await loop.create_server(stream.factory(rt, ep.transport == "tls"),
                                                  sock=sock, backlog=1024)
                self.servers.append(server)
            log.info("%s listening on %s [%s]:%d", ep.service, ep.transport, ep.host, ep.port)
        self._sweeper = loop.create_task(shared.sweeper())
        # Everything made so far lives as long as the process: keep the cyclic collector
        # from walking it again on every full collection (a tenth of a session's CPU).
        gc.collect()
        gc.freeze()

    def _runtime(self, name: str, shared: Shared, persona: PersonaView) -> ServiceRuntime:
        spec = services.get(name)
        assert spec is not None
        ctx = services.context(name, self.config, self.state_dir, persona=persona)
        return ServiceRuntime(name=name, protocol=spec.protocol, factory=spec.build(ctx),
                              limits=ctx.limits, transcripts=ctx.config.transcripts,
                              shared=shared)

    async def stop(self) -> None:
        """Stop accepting, close every connection, flush every sink."""
        for server in self.servers:
            server.close()
        for transport in self.udp:
            transport.close()
        if self.shared is not None:
            self._sweeper.cancel()
            for session in list(self.shared.sessions):
                session.close(reason="shutdown")
            deadline = time.monotonic() + 5
            while self.shared.sessions and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        await asyncio.sleep(0)
        if self.capture is not None:
            await self.capture.close()
        await self.bus.close()
        if self.shared is not None and self.shared.transcripts is not None:
            await self.shared.transcripts.aclose()
        self.write_counters()

    def write_counters(self) -> None:
        counters = {name: asdict(c) for name, c in self.bus.counters().items()}
        data = {"emitted": self.bus.emitted, "sinks": counters, "unknown": self.bus.unknown,
                "held_reads": self.bus.holds, "holds_given_up": self.bus.gave_up}
        if self.shared is not None and self.shared.transcripts is not None:
            data["transcripts"] = {"written": self.shared.transcripts.written,
                                   "dropped": self.shared.transcripts.dropped}
        if self.capture is not None:
            data["capture"] = self.capture.counters()
        (self.state_dir / "counters.json").write_text(json.dumps(data, indent=1))
        log.info("incidents: %s", json.dumps(data))
