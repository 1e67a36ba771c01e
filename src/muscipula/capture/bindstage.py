"""Listening where emulated shellcode listened: bind stagers and bind shells.

A bind stager opens a port on the victim and waits; the attacker's handler connects to
it and sends the next stage. When emulation finds one (emu.service bindshell://port,
kind stager), that port is opened on the address the attack came to, for `bind_wait`
seconds, for the attacking address only; what its handler sends (ended by `stage_idle`
seconds of silence, the peer's close, or `max_bytes`) is stored as
bindstage://address:port/. A bind shell (kind shell: it ran cmd.exe on the socket) gets
the same port, and the attacker a cmd.exe there (shellsession.py), when the persona is
Windows (`host`); elsewhere there is no cmd.exe to answer with, and the port stays shut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

from muscipula.capture.cmdexe import Cmd, Host
from muscipula.capture.download.body import Body
from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.tcp import read_stage
from muscipula.capture.shellsession import converse
from muscipula.config import Download
from muscipula.incidents import Bus, Incident
from muscipula.store import Store, stored_incidents

log = logging.getLogger(__name__)


class BindCatcher:
    def __init__(self, cfg: Download, store: Store, bus: Bus,
                 host: Host | None = None) -> None:
        """`host`: the machine a bind shell's cmd.exe runs on; None: shells are not
        answered."""
        self.cfg, self.store, self.bus, self.host = cfg, store, bus, host
        self.tasks: set[asyncio.Task[None]] = set()
        #: connections of attackers being served (a shell lasts past its listener)
        self.sessions: set[asyncio.Task[Any]] = set()

    def service(self, incident: Incident) -> None:
        """An emu.service incident: a bind stager's port is opened for its attacker."""
        f = incident.fields
        parts = urlsplit(str(f.get("url", "")))
        port = int(parts.netloc) if parts.scheme == "bindshell" and parts.netloc.isdigit() \
            else 0
        local, remote = f.get("local_host"), f.get("remote_host")
        if not 0 < port < 65536 or not isinstance(local, str) or not isinstance(remote, str):
            return
        shell = f.get("kind") == "shell"
        if shell and (self.host is None or not self.cfg.shells):
            return
        host = f"[{local}]" if ":" in local else local
        url = f"bindshell://{host}:{port}/" if shell else f"bindstage://{host}:{port}/"
        if len(self.tasks) >= self.cfg.max_bind_listeners:
            self._emit(incident.conn, [("download.failed", {
                "url": url, "reason": "busy",
                "detail": f"{len(self.tasks)} stage listeners open"})])
            return
        task = asyncio.get_running_loop().create_task(
            self._catch(incident.conn, local, remote, port, url, shell))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _catch(self, conn: int, local: str, remote: str, port: int, url: str,
                     shell: bool) -> None:
        body = Body(self.store, self.cfg.max_bytes)
        got: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        came = asyncio.Event()  # the attacker connected: a shell then has shell_timeout

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername") or ("",)
            if got.done() or came.is_set() or peer[0] != remote:
                writer.close()  # only the attacker's handler, and only once
                return
            came.set()
            server.close()  # the port is the attacker's, once: no one else finds it open
            session = asyncio.current_task()
            if session is not None:  # closed with the rest at shutdown
                self.sessions.add(session)
            try:
                if shell:
                    assert self.host is not None
                    await converse(reader, writer, Cmd(self.host), self.cfg, url,
                                   lambda name, fields: self.bus.emit(name, conn, fields))
                else:
                    await read_stage(reader, body, self.cfg.bind_wait, self.cfg.stage_idle)
                if not got.done():
                    got.set_result(None)
            except FetchError as exc:
                if not got.done():
                    got.set_exception(exc)
            except Exception as exc:  # a bug must not leave the listener waiting
                log.exception("session on %s failed", url)
                if not got.done():
                    got.set_exception(FetchError("error", type(exc).__name__))
            finally:
                writer.close()
                if session is not None:
                    self.sessions.discard(session)

        outcome: list[tuple[str, dict[str, object]]]
        try:
            server = await asyncio.start_server(accept, local, port, reuse_address=True)
        except OSError as exc:
            self._emit(conn, [("download.failed", {"url": url, "reason": "listen",
                                                   "detail": exc.strerror or str(exc)})])
            return
        try:
            if shell:
                await asyncio.wait_for(came.wait(), self.cfg.bind_wait)
                await asyncio.shield(got)  # converse bounds the session
            else:
                await asyncio.wait_for(asyncio.shield(got), self.cfg.bind_wait)
            if shell:  # its commands were recorded as they came
                body.abort()
                outcome = []
            else:
                outcome = stored_incidents(url, body.finish(), body.cut is None)
        except TimeoutError:
            body.abort()
            outcome = [("download.failed", {"url": url, "reason": "timeout",
                                            "detail": "nobody came"})]
        except FetchError as exc:
            body.abort()
            outcome = [("download.failed", {"url": url, "reason": exc.reason,
                                            "detail": exc.detail})]
        except asyncio.CancelledError:
            body.abort()
            self._emit(conn, [("download.failed", {"url": url, "reason": "shutdown",
                                                   "detail": ""})])
            raise
        finally:
            server.close()
        self._emit(conn, outcome)

    def _emit(self, conn: int, outcome: list[tuple[str, dict[str, object]]]) -> None:
        for name, fields in outcome:
            self.bus.emit(name, conn, dict(fields))

    async def close(self) -> None:
        tasks = [*self.tasks, *self.sessions]
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=5.0)
