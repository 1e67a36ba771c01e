"""FTP fetches: a small asyncio client of our own.

Library clients (aioftp, ftplib) connect the data channel to whatever address a PASV
reply names, and look the host name up themselves; a PASV reply can point into the
operator's network. This client connects only to checked addresses, and its data
connection goes to the control connection's peer, with the port from EPSV (tried
first) or PASV. Each control reply waits at most `connect_timeout`; replies are bounded
in line length and count.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket

from muscipula.capture.download.body import Body
from muscipula.capture.download.connect import connect
from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.policy import Policy
from muscipula.capture.download.target import Target
from muscipula.config import Download

MAX_LINE = 4096
MAX_LINES = 64
CHUNK = 65536
_EPSV = re.compile(rb"\(([!-~])\1\1(\d{1,5})\1\)")
_PASV = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")


class Control:
    """The control connection: commands out, (code, text) replies in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout

    async def _line(self) -> bytes:
        try:
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
        except TimeoutError:
            raise FetchError("timeout", "no FTP reply") from None
        except (ValueError, asyncio.LimitOverrunError):
            raise FetchError("protocol", "FTP reply line too long") from None
        if not line:
            raise FetchError("protocol", "FTP server closed the connection")
        return line.rstrip(b"\r\n")

    async def reply(self) -> tuple[int, bytes]:
        first = await self._line()
        if len(first) < 3 or not first[:3].isdigit():
            raise FetchError("protocol", f"not an FTP reply: {first[:80]!r}")
        code, text = int(first[:3]), first
        if first[3:4] == b"-":
            for _ in range(MAX_LINES):
                line = await self._line()
                if line[:3] == first[:3] and line[3:4] == b" ":
                    return code, text
            raise FetchError("protocol", "FTP reply too long")
        return code, text

    async def command(self, line: str) -> tuple[int, bytes]:
        self.writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        await self.writer.drain()
        return await self.reply()


def _fail(step: str, code: int, text: bytes) -> FetchError:
    return FetchError("status", f"{step}: {text[:200].decode('latin-1')}")


async def _data_port(ctl: Control) -> int:
    code, text = await ctl.command("EPSV")
    if code == 229 and (m := _EPSV.search(text)):
        return int(m.group(2))
    code, text = await ctl.command("PASV")
    if code == 227 and (m := _PASV.search(text)):
        # the address in the reply is ignored: data goes to the control peer only
        return int(m.group(5)) * 256 + int(m.group(6))
    raise _fail("PASV", code, text)


async def fetch(target: Target, cfg: Download, policy: Policy, body: Body) -> None:
    addrs = await policy.resolve(target.host, target.port, socket.SOCK_STREAM,
                                 cfg.connect_timeout)
    reader, writer = await connect(addrs, target.port, cfg.connect_timeout, MAX_LINE)
    data_writer: asyncio.StreamWriter | None = None
    try:
        peer = writer.get_extra_info("peername")[0]
        ctl = Control(reader, writer, cfg.connect_timeout)
        code, text = await ctl.reply()
        if code == 120:
            code, text = await ctl.reply()
        if code != 220:
            raise _fail("greeting", code, text)
        code, text = await ctl.command(f"USER {target.user}")
        if code == 331:
            code, text = await ctl.command(f"PASS {target.password}")
        if code not in (230, 202):
            raise _fail("login", code, text)
        code, text = await ctl.command("TYPE I")
        if code != 200:
            raise _fail("TYPE", code, text)
        port = await _data_port(ctl)
        if not 0 < port < 65536:
            raise FetchError("protocol", f"data port {port}")
        data_reader, data_writer = await connect([peer], port, cfg.connect_timeout)
        code, text = await ctl.command(f"RETR {target.path}")
        if code not in (125, 150):
            raise _fail("RETR", code, text)
        body.open()
        while chunk := await data_reader.read(CHUNK):
            if not body.write(chunk):
                return
        data_writer.close()
        data_writer = None
        code, text = await ctl.reply()
        if code not in (226, 250):
            raise _fail("transfer", code, text)
        with contextlib.suppress(OSError, FetchError):
            writer.write(b"QUIT\r\n")
    finally:
        if data_writer is not None:
            data_writer.close()
        writer.close()
