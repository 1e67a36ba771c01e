"""The FTP control connection as a sans-IO machine (RFC 959, 2389, 2428, 3659, 4217).

Data channels are child channels: PASV/EPSV ask the driver for a listener in
the configured range, PORT/EPRT for a connect back to the client's own
address (anything else is a bounce attempt: refused and recorded). A command
that needs a channel that is not there yet parks the control connection; lines
that arrive meanwhile wait in a bounded buffer, except ABOR. Uploads leave as
CaptureData/CaptureEnd and then appear in this session's listing only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from muscipula.incidents import plain_host
from muscipula.machine import (
    Action,
    BaseMachine,
    CaptureData,
    CaptureEnd,
    ChildClose,
    ChildClosed,
    ChildConnect,
    ChildConnected,
    ChildData,
    ChildEvent,
    ChildFailed,
    ChildListen,
    ChildListening,
    ChildSend,
    Close,
    Emit,
    Peer,
    Send,
    StartTLS,
    Wake,
)
from muscipula.protocols.ftp import listing
from muscipula.protocols.ftp.ascii import CrlfStream, to_crlf
from muscipula.protocols.ftp.policy import LoginPolicy, is_anonymous
from muscipula.protocols.ftp.replies import Dialect
from muscipula.protocols.ftp.vfs import Node, SeedFiles, Vfs

IAC, DONT, DO, WONT, WILL = 255, 254, 253, 252, 251
_HTTP_VERBS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "CONNECT"})
_ALIASES = {"XPWD": "PWD", "XCWD": "CWD", "XCUP": "CDUP", "XMKD": "MKD", "XRMD": "RMD"}
_CHUNK = 64 * 1024
#: verbs that only some products answer (see Dialect.own_verbs)
_PRODUCT_VERBS = frozenset({"HOST", "LANG", "CLNT", "CCC"})


@dataclass(frozen=True)
class Setup:
    """Everything sessions of one service share."""

    dialect: Dialect
    policy: LoginPolicy
    seed: Node
    files: SeedFiles
    passive_ports: tuple[int, int] = (0, 0)
    passive_address: str | None = None
    tls: bool = True
    max_line: int = 4096
    max_pending: int = 16384
    max_kept_upload_bytes: int = 1024 * 1024
    max_session_entries: int = 5000
    idle_timeout: float = 300.0
    max_login_fails: int = 3
    upload_owner: int = 1000
    #: a PROT P data channel whose TLS handshake has not finished by then is dropped
    data_tls_timeout: float = 30.0


@dataclass
class DataChannel:
    tag: str
    passive: bool
    host: str = ""
    port: int = 0
    connected: bool = False
    tls: bool = False
    #: bytes the client sent before the command that reads them (bounded)
    early: bytearray = field(default_factory=bytearray)


@dataclass
class Transfer:
    inbound: bool
    done_key: str
    mark: bytes
    payload: bytes = b""
    path: str = ""
    url: str = ""
    stream: str = ""
    node: Node | None = None
    append: bool = False
    size: int = 0
    kept: bytearray | None = None
    running: bool = False
    #: TYPE A upload on a server that converts line ends
    ascii: CrlfStream | None = None


def _show(text: str) -> str:
    """Client text as it may go into incidents (no lone surrogates)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def strip_telnet(raw: bytes) -> tuple[bytes, bool]:
    """Drop Telnet IAC command sequences (RFC 854) from a command line; IAC IAC is 0xFF."""
    if IAC not in raw:
        return raw, False
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b != IAC:
            out.append(b)
            i += 1
            continue
        nxt = raw[i + 1] if i + 1 < n else None
        if nxt == IAC:
            out.append(IAC)
            i += 2
        elif nxt in (WILL, WONT, DO, DONT):
            i += 3
        else:
            i += 2
    return bytes(out), True


class FtpSession(BaseMachine):
    protocol = "ftpd"

    def __init__(self, setup: Setup, peer: Peer) -> None:
        self.s = setup
        self.d = setup.dialect
        self.peer = peer
        self.buf = bytearray()
        self.discarding = False
        self.done = False
        self.user: str | None = None
        self.logged_in = False
        self.anonymous = False
        self.fails = 0
        self.vfs_: Vfs | None = None
        self.ascii = True
        self.rest = 0
        self.rnfr: str | None = None
        self.tls = False
        self.pbsz = False
        self.prot_p = False
        self.epsv_all = False
        self.data: DataChannel | None = None
        self.transfer: Transfer | None = None
        self.waiting: str | None = None  # "listen", "port" or "transfer"
        self.seq = 0
        self.kept = 0
        self.idle_at = 0.0

    # ------------------------------------------------------------ contract

    def start(self, now: float) -> list[Action]:
        out: list[Action] = [Send(self.d.line("banner"))]
        self._touch(now, out)
        return out

    def receive(self, data: bytes, now: float) -> list[Action]:
        out: list[Action] = []
        if self.done:
            return out
        self.buf += data
        self._touch(now, out)
        self._drain(now, out)
        return out

    def timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self.done:
            return out
        if now + 0.001 < self.idle_at:
            out.append(Wake(self.idle_at))
            return out
        if self.transfer is not None and self.transfer.running:
            self._touch(now, out)
            return out
        seconds = int(self.s.idle_timeout)
        out.append(Send(self.d.line("timeout", seconds=seconds)))
        self._finish(out, "idle timeout")
        return out

    def child(self, event: ChildEvent, now: float) -> list[Action]:
        out: list[Action] = []
        if self.done:
            return out
        data = self.data
        current = data is not None and event.tag == data.tag
        if isinstance(event, ChildData):
            self._touch(now, out)
            if current:
                self._child_data(event.data, out)
            return out
        self._touch(now, out)
        if isinstance(event, ChildListening):
            if current and self.waiting == "listen":
                self.waiting = None
                self._announce(event.port, out)
        elif isinstance(event, ChildConnected):
            if current:
                assert data is not None
                data.connected = True
                if self.waiting == "port":
                    self.waiting = None
                    self._reply(out, "eprt_ok" if data.tag.startswith("e") else "port_ok")
                elif self.waiting == "transfer":
                    self._run(out, fresh=True)
        elif isinstance(event, ChildClosed):
            if current:
                t = self.transfer
                if t is not None and t.inbound and t.running:
                    self._upload_done(out, complete=True)
                elif t is None:
                    self.data = None
        elif isinstance(event, ChildFailed) and current:
            out.append(Emit("protocol.error", {"detail": f"data channel: {event.reason}",
                                               "data": b""}))
            self.data = None
            t = self.transfer
            if t is not None and t.running:
                self._data_timeout(out)
            elif self.waiting == "listen":
                self._reply(out, "listen_fail")
            elif self.waiting in ("port", "transfer"):
                self._reply(out, "data_fail")
                self.transfer = None
            self.waiting = None
        if self.waiting is None:
            self._drain(now, out)
        return out

    def closed(self, now: float) -> list[Action]:
        out: list[Action] = []
        t = self.transfer
        if t is not None and t.inbound and t.running:
            out.append(CaptureEnd(t.stream, t.url, complete=False))
        self.transfer = None
        self.done = True
        return out

    def buffered(self) -> int:
        held = len(self.buf) + self.kept
        if self.data is not None:
            held += len(self.data.early)
        if self.transfer is not None and self.transfer.kept is not None:
            held += len(self.transfer.kept)
        return held

    # ------------------------------------------------------------- input

    def _touch(self, now: float, out: list[Action]) -> None:
        self.idle_at = now + self.s.idle_timeout
        out.append(Wake(self.idle_at))

    def _drain(self, now: float, out: list[Action]) -> None:
        limit = self.s.max_line
        while not self.done:
            if self.waiting is not None:
                if self.waiting == "transfer" and self._abor_pending(out):
                    continue
                if len(self.buf) > limit + self.s.max_pending:
                    out.append(Emit("protocol.error", {"detail": "too much pipelined input",
                                                       "data": bytes(self.buf[:64])}))
                    self._finish(out, "pending input")
                return
            idx = self.buf.find(b"\n")
            if self.discarding:
                # the rest of a line already answered as too long
                if idx < 0:
                    self.buf.clear()
                    return
                del self.buf[: idx + 1]
                self.discarding = False
                continue
            if idx < 0 or idx > limit:
                if idx > limit or len(self.buf) > limit:
                    self._too_long(out)
                    continue
                return
            raw = bytes(self.buf[:idx])
            del self.buf[: idx + 1]
            self._line(raw, now, out)

    def _too_long(self, out: list[Action]) -> None:
        out.append(Emit("protocol.error", {"detail": "command line too long",
                                           "data": bytes(self.buf[:64])}))
        self._reply(out, "too_long")
        if self.d.close_on_long_line:
            self.buf.clear()
            self._finish(out, "line too long")
            return
        idx = self.buf.find(b"\n")
        if idx >= 0:
            del self.buf[: idx + 1]
        else:
            self.buf.clear()
            self.discarding = True

    def _abor_pending(self, out: list[Action]) -> bool:
        """During a transfer only ABOR is read; True when one was found and handled."""
        idx = self.buf.find(b"\n")
        if idx < 0:
            return False
        raw, _ = strip_telnet(bytes(self.buf[:idx]).rstrip(b"\r"))
        if raw.strip().upper() != b"ABOR":
            return False
        del self.buf[: idx + 1]
        out.append(Emit("ftp.command", {"command": "ABOR", "arguments": []}))
        self._abort(out)
        return True

    def _line(self, raw: bytes, now: float, out: list[Action]) -> None:
        while raw.endswith(b"\r"):
            raw = raw[:-1]
        had_iac = False
        if self.d.telnet:
            raw, had_iac = strip_telnet(raw)
        elif raw.startswith(b"\xff\xf4\xff\xf2"):
            raw, had_iac = raw[4:], True
        raw = raw.replace(b"\0", b"\n")
        if had_iac:
            out.append(Emit("protocol.error", {"detail": "telnet commands in command line",
                                               "data": raw[:64]}))
        if not raw:
            return  # both servers ignore empty lines
        text = raw.decode("utf-8", "surrogateescape")
        verb, _, arg = text.partition(" ")
        cmd = verb.upper()
        out.append(Emit("ftp.command", {"command": _show(cmd),
                                        "arguments": [_show(arg)] if arg else []}))
        if not cmd.isascii() or not cmd.isalnum():
            out.append(Emit("protocol.error", {"detail": "not an FTP command",
                                               "data": raw[:64]}))
        cmd = _ALIASES.get(cmd, cmd)
        handler = self._handler(cmd)
        if not self.logged_in and cmd not in self.d.prelogin:
            if handler is None and self.d.name == "iis":
                self._reply(out, "unknown")
            else:
                self._reply(out, "login_needed")
            return
        if handler is None:
            if cmd in _HTTP_VERBS and self.d.name == "vsftpd":
                self._reply(out, "http")
                self._finish(out, "http verb")
                return
            self._reply(out, "unknown")
            return
        handler(arg, now, out)

    def _handler(self, cmd: str) -> Any:
        if cmd in ("MLSD", "MLST") and not self.d.mlsd:
            return None
        if cmd in ("AUTH", "PBSZ", "PROT", "CCC") and not self.s.tls:
            return None
        if cmd in _PRODUCT_VERBS and cmd not in self.d.own_verbs:
            return None
        if cmd == "P@SW" and self.d.name == "vsftpd":
            cmd = "PASV"
        return getattr(self, f"cmd_{cmd}", None) if cmd.isalpha() else None

    # ------------------------------------------------------------ helpers

    def _reply(self, out: list[Action], key: str, **values: Any) -> None:
        out.append(Send(self.d.line(key, **values)))

    def _finish(self, out: list[Action], reason: str) -> None:
        self.done = True
        self.buf.clear()
        t = self.transfer
        if t is not None and t.inbound and t.running:
            out.append(CaptureEnd(t.stream, t.url, complete=False))
        self.transfer = None
        if self.data is not None:
            out.append(ChildClose(self.data.tag))
            self.data = None
        out.append(Wake(None))
        out.append(Close(reason))

    @property
    def vfs(self) -> Vfs:
        if self.vfs_ is None:
            self.vfs_ = Vfs(self.s.seed.copy(), self.d.case_insensitive,
                            self.s.max_session_entries)
        return self.vfs_

    def _owner(self) -> int:
        return 0 if self.anonymous else self.s.upload_owner

    def _converts(self) -> bool:
        """TYPE A and a server that really converts line ends."""
        return self.ascii and self.d.ascii_convert

    def _mode(self) -> str:
        return "ASCII" if self._converts() else "BINARY"

    def _url(self, path: str) -> str:
        host = self.peer.local_host
        if ":" in host:
            host = f"[{host}]"
        port = "" if self.peer.local_port == 21 else f":{self.peer.local_port}"
        user = ""
        if self.user and not self.anonymous:
            user = quote(self.user, safe="", errors="surrogateescape") + "@"
        return f"ftp://{user}{host}{port}{quote(path, errors='surrogateescape')}"

    def _close_data(self, out: list[Action]) -> None:
        if self.data is not None:
            out.append(ChildClose(self.data.tag))
            self.data = None

    def _tag(self, kind: str) -> str:
        self.seq += 1
        return f"{kind}{self.seq}"

    # ------------------------------------------------------------ session

    def cmd_USER(self, arg: str, now: float, out: list[Action]) -> None:
        d = self.d
        if self.logged_in and d.name == "vsftpd":
            if self.anonymous:
                self._reply(out, "user_again_guest")
            elif arg == self.user:
                self._reply(out, "user_again_same")
            else:
                self._reply(out, "user_again_other")
            return
        if not arg and d.name == "iis":
            self._reply(out, "syntax")
            return
        self.logged_in = False
        if self.s.policy.anonymous_only() and not is_anonymous(arg) and d.name == "vsftpd":
            self.user = None
            self._reply(out, "user_anon_only")
            return
        self.user = arg
        self._reply(out, "user_anon" if is_anonymous(arg) else "user", user=arg)

    def cmd_PASS(self, arg: str, now: float, out: list[Action]) -> None:
        if self.logged_in:
            self._reply(out, "pass_again")
            return
        if not self.user:
            self._reply(out, "pass_first")
            return
        user = self.user
        ok = self.s.policy.check(plain_host(self.peer.remote_host), user, arg)
        out.append(Emit("login", {"username": _show(user), "password": _show(arg),
                                  "success": ok, "method": "ftp", "extra": None}))
        if ok:
            self.logged_in = True
            self.anonymous = is_anonymous(user)
            self._reply(out, "login_anon_ok" if self.anonymous else "login_ok")
            return
        self.user = None
        self.fails += 1
        self._reply(out, "login_fail")
        if self.s.max_login_fails and self.fails >= self.s.max_login_fails:
            self._finish(out, "login failures")

    def cmd_ACCT(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "acct")

    def cmd_QUIT(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "quit")
        self._finish(out, "quit")

    def cmd_NOOP(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "noop")

    def cmd_SYST(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "syst")

    def cmd_FEAT(self, arg: str, now: float, out: list[Action]) -> None:
        out.append(Send(self.d.feat(self.s.tls)))

    def cmd_HELP(self, arg: str, now: float, out: list[Action]) -> None:
        out.append(Send(self.d.lines(self.d.help_lines)))

    def cmd_OPTS(self, arg: str, now: float, out: list[Action]) -> None:
        words = arg.upper().split()
        if words[:1] == ["UTF8"] and (self.d.name == "iis" or words == ["UTF8", "ON"]):
            self._reply(out, "opts_utf8")
        else:
            self._reply(out, "opts_bad")

    def cmd_STAT(self, arg: str, now: float, out: list[Action]) -> None:
        if arg:
            nodes = self._list_nodes(arg)
            lines = [self.d.texts["stat_file_head"].format(name=arg)]
            if nodes is not None:
                lines += [self._list_line(n, now) for n in nodes]
            lines.append(self.d.texts["stat_file_end"])
            out.append(Send(self.d.lines(lines)))
            return
        if self.d.name == "vsftpd":
            user = self.user or ""
            lines = [
                self.d.texts["stat_head"],
                f"     Connected to {plain_host(self.peer.remote_host)}",
                f"     Logged in as {'ftp' if self.anonymous else user}",
                f"     TYPE: {self._mode()}",
                "     No session bandwidth limit",
                f"     Session timeout in seconds is {int(self.s.idle_timeout)}",
                f"     Control connection is {'encrypted' if self.tls else 'plain text'}",
                f"     Data connections will be {'encrypted' if self.prot_p else 'plain text'}",
                "     At session startup, client count was 1",
                f"     vsFTPd {self.d.version} - secure, fast, stable",
                self.d.texts["stat_end"],
            ]
        else:
            lines = [self.d.texts["stat_head"], self.d.texts["stat_end"]]
        out.append(Send(self.d.lines(lines)))

    def cmd_ALLO(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "allo")

    def cmd_REIN(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "rein")

    def cmd_SMNT(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "smnt")

    def cmd_SITE(self, arg: str, now: float, out: list[Action]) -> None:
        if self.d.name == "vsftpd" and arg.split(" ", 1)[0].upper() == "HELP":
            self._reply(out, "site_help")
        else:
            self._reply(out, "site_bad")

    # ---------------------------------------------------------------- TLS

    def cmd_AUTH(self, arg: str, now: float, out: list[Action]) -> None:
        if self.tls:
            self._reply(out, "login_needed" if self.d.name == "vsftpd" else "pass_again")
            return
        if arg.upper() not in ("TLS", "TLS-C", "SSL", "TLS-P"):
            self._reply(out, "auth_bad")
            return
        self._reply(out, "auth_ok")
        self.tls = True
        rest = bytes(self.buf)
        self.buf.clear()
        out.append(StartTLS(rest))

    def cmd_PBSZ(self, arg: str, now: float, out: list[Action]) -> None:
        if not self.tls:
            self._reply(out, "pbsz_plain")
            return
        self.pbsz = True
        self._reply(out, "pbsz")

    def cmd_PROT(self, arg: str, now: float, out: list[Action]) -> None:
        if not self.tls:
            self._reply(out, "prot_plain")
            return
        level = arg.upper()
        if level == "C":
            self.prot_p = False
            self._reply(out, "prot_c")
        elif level == "P":
            self.prot_p = True
            self._reply(out, "prot_p")
        elif level in ("S", "E"):
            self._reply(out, "prot_unsupported")
        else:
            self._reply(out, "prot_bad")

    def cmd_CCC(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "ccc_refused" if self.tls else "ccc_plain")

    # ------------------------------------------------- IIS session verbs

    def cmd_HOST(self, arg: str, now: float, out: list[Action]) -> None:
        """RFC 7151 virtual host: only before USER; the default site takes any name."""
        if not arg.strip():
            self._reply(out, "syntax")
        elif self.user is not None or self.logged_in:
            self._reply(out, "host_late")
        else:
            self._reply(out, "host_ok")

    def cmd_LANG(self, arg: str, now: float, out: list[Action]) -> None:
        """FEAT says `LANG EN*`: English in any variant, or no argument (the default)."""
        tag = arg.strip().upper()
        ok = not tag or tag == "EN" or tag.startswith("EN-")
        self._reply(out, "lang_ok" if ok else "lang_bad")

    def cmd_CLNT(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "clnt")

    # --------------------------------------------------------- navigation

    def cmd_PWD(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "pwd", path=self.vfs.cwd.replace('"', '""'))

    def cmd_CWD(self, arg: str, now: float, out: list[Action]) -> None:
        if not arg and self.d.name == "iis":
            self._reply(out, "syntax")
            return
        self._reply(out, "cwd_ok" if self.vfs.chdir(arg or "/") else "cwd_fail")

    def cmd_CDUP(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "cdup_ok" if self.vfs.chdir("..") else "cwd_fail")

    # ----------------------------------------------------- transfer params

    def cmd_TYPE(self, arg: str, now: float, out: list[Action]) -> None:
        kind = arg.upper()
        if kind in ("I", "L8", "L 8"):
            self.ascii = False
            self._reply(out, "type_i")
        elif kind in ("A", "A N"):
            self.ascii = True
            self._reply(out, "type_a")
        else:
            self._reply(out, "type_bad")

    def cmd_MODE(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "mode_ok" if arg.upper() == "S" else "mode_bad")

    def cmd_STRU(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "stru_ok" if arg.upper() == "F" else "stru_bad")

    def cmd_REST(self, arg: str, now: float, out: list[Action]) -> None:
        digits = arg.strip()
        if not digits.isdigit():
            if self.d.name == "iis":
                self._reply(out, "syntax")
                return
            digits = "0"
        self.rest = min(int(digits[:19]), 2**63 - 1)
        self._reply(out, "rest", offset=self.rest)

    def cmd_ABOR(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "abor_idle")

    # ----------------------------------------------------- data channels

    def _ipv6(self) -> bool:
        return ":" in plain_host(self.peer.local_host)

    def _family(self) -> int:
        return 2 if self._ipv6() else 1

    def cmd_PASV(self, arg: str, now: float, out: list[Action]) -> None:
        if self.epsv_all:
            self._reply(out, "epsv_all_only")
            return
        if self._ipv6() and not self.d.pasv_on_ipv6:
            self._reply(out, "pasv_v6")
            return
        self._listen("p", out)

    def cmd_EPSV(self, arg: str, now: float, out: list[Action]) -> None:
        word = arg.strip().upper()
        if word == "ALL":
            self.epsv_all = True
            self._reply(out, "epsv_all")
            return
        if word:
            ipv6 = self._ipv6()
            if word not in ("1", "2") or (word == "2" and not ipv6) or (
                    word == "1" and ipv6 and self.d.name == "iis"):
                self._reply(out, "epsv_bad", family=self._family())
                return
        self._listen("x", out)

    def _listen(self, kind: str, out: list[Action]) -> None:
        self._close_data(out)
        tag = self._tag(kind)
        tls = self.tls and self.prot_p
        self.data = DataChannel(tag, passive=True, tls=tls)
        self.waiting = "listen"
        out.append(ChildListen(tag, "tcp", self.s.passive_ports, "ftpdata", tls=tls,
                               tls_timeout=self.s.data_tls_timeout))

    def _announce(self, port: int, out: list[Action]) -> None:
        assert self.data is not None
        if self.data.tag.startswith("x"):
            self._reply(out, "epsv", port=port)
            return
        # vsftpd on an IPv6 control connection has no IPv4 address to give, not even a
        # configured pasv_address: it says 0,0,0,0 and clients take the control address
        address = self.s.passive_address
        if self._ipv6():
            address = "0.0.0.0"
        elif address is None:
            address = plain_host(self.peer.local_host)
        self._reply(out, "pasv", address=address.replace(".", ","), p1=port >> 8,
                    p2=port & 255)

    def cmd_PORT(self, arg: str, now: float, out: list[Action]) -> None:
        if self.epsv_all:
            self._reply(out, "epsv_all_only")
            return
        self._close_data(out)
        parts = arg.strip().split(",")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) != 6 or any(not 0 <= n <= 255 for n in nums):
            self._reply(out, "port_bad")
            return
        host = ".".join(str(n) for n in nums[:4])
        self._active("p", host, nums[4] * 256 + nums[5], "PORT", out)

    def cmd_EPRT(self, arg: str, now: float, out: list[Action]) -> None:
        if self.epsv_all:
            self._reply(out, "epsv_all_only")
            return
        self._close_data(out)
        arg = arg.strip()
        delim = "|" if self.d.name == "vsftpd" else (arg[:1] or "|")
        fields = arg.split(delim)
        if len(fields) != 5 or fields[0] or fields[4]:
            self._reply(out, "eprt_bad")
            return
        proto, host, port_text = fields[1], fields[2], fields[3]
        if proto not in ("1", "2") or (proto == "2" and not self._ipv6()):
            self._reply(out, "eprt_proto", family=self._family())
            return
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
            port = int(port_text)
        except ValueError:
            self._reply(out, "eprt_bad")
            return
        if (addr.version == 4) != (proto == "1") or not 0 <= port <= 65535:
            self._reply(out, "eprt_bad")
            return
        self._active("e", str(addr), port, "EPRT", out)

    def _active(self, kind: str, host: str, port: int, command: str,
                out: list[Action]) -> None:
        peer = plain_host(self.peer.remote_host)
        low = self.d.refuse_low_ports and port < 1024
        if plain_host(host) != peer or low or port == 0:
            out.append(Emit("ftp.bounce", {"command": command, "host": host, "port": port,
                                           "reason": "privileged port" if host == peer
                                           else "not the client's address"}))
            self._reply(out, "port_bounce" if kind == "p" else "eprt_bounce")
            return
        tag = self._tag(kind)
        self.data = DataChannel(tag, passive=False, host=host, port=port,
                                tls=self.tls and self.prot_p)
        if self.d.connect_on_port:
            self.waiting = "port"
            out.append(ChildConnect(tag, host, port, "ftpdata", tls=self.data.tls,
                                    tls_timeout=self.s.data_tls_timeout))
            return
        self._reply(out, "port_ok" if kind == "p" else "eprt_ok")

    # ----------------------------------------------------------- transfers

    def _begin(self, t: Transfer, out: list[Action]) -> None:
        data = self.data
        assert data is not None
        self.transfer = t
        if data.connected:
            self._run(out, fresh=False)
            return
        self.waiting = "transfer"
        if not data.passive:
            out.append(ChildConnect(data.tag, data.host, data.port, "ftpdata", tls=data.tls,
                                    tls_timeout=self.s.data_tls_timeout))

    def _run(self, out: list[Action], fresh: bool) -> None:
        """The data channel is up: mark, then send or start receiving."""
        t, data = self.transfer, self.data
        assert t is not None and data is not None
        self.waiting = None
        if self.d.name == "iis" and not fresh:
            self._reply(out, "already_open")
        else:
            out.append(Send(t.mark))
        t.running = True
        if t.inbound:
            self.waiting = "transfer"
            if t.url:
                out.append(Emit("download.offer", {"url": t.url, "source": "ftp"}))
            if data.early:
                early = bytes(data.early)
                data.early.clear()
                self._child_data(early, out)
            return
        payload = t.payload
        for i in range(0, len(payload), _CHUNK):
            out.append(ChildSend(data.tag, payload[i:i + _CHUNK]))
        out.append(ChildClose(data.tag))
        self.data = None
        self.transfer = None
        self._reply(out, t.done_key)

    def _child_data(self, chunk: bytes, out: list[Action]) -> None:
        t, data = self.transfer, self.data
        assert data is not None
        if t is None or not t.inbound or not t.running:
            room = self.s.max_pending - len(data.early)
            if room > 0:
                data.early += chunk[:room]
            return
        if t.ascii is not None:
            chunk = t.ascii.feed(chunk)
        out.append(CaptureData(t.stream, chunk))
        t.size += len(chunk)
        if t.kept is not None:
            if self.kept + len(t.kept) + len(chunk) <= self.s.max_kept_upload_bytes:
                t.kept += chunk
            else:
                t.kept = None

    def _upload_done(self, out: list[Action], complete: bool) -> None:
        t = self.transfer
        assert t is not None and t.node is not None
        out.append(CaptureEnd(t.stream, t.url, complete=complete))
        node = t.node
        if t.append:
            node.size += t.size
            node.data = (node.data + bytes(t.kept)) if (
                node.data is not None and t.kept is not None) else None
        else:
            node.size = t.size
            node.data = bytes(t.kept) if t.kept is not None else None
        if node.data is not None:
            self.kept += len(t.kept or b"")
        node.source = None
        self.transfer = None
        self.waiting = None
        self.data = None
        self._reply(out, "transfer_ok")

    def _data_timeout(self, out: list[Action]) -> None:
        """The data channel of a running transfer died under us (a TLS handshake that
        never finished): the product's stalled-data answer."""
        t = self.transfer
        assert t is not None
        if t.inbound and t.size:
            out.append(CaptureEnd(t.stream, t.url, complete=False))
        self.transfer = None
        self.waiting = None
        self._reply(out, "data_timeout")
        if self.d.close_on_data_timeout:
            self._finish(out, "data timeout")

    def _abort(self, out: list[Action]) -> None:
        t = self.transfer
        if t is not None and t.inbound and t.running:
            out.append(CaptureEnd(t.stream, t.url, complete=False))
            self._reply(out, "abor_broken_in")
        else:
            self._reply(out, "abor_broken")
        self.transfer = None
        self.waiting = None
        self._close_data(out)
        self._reply(out, "abor_ok")

    def _ready(self, out: list[Action]) -> bool:
        if self.data is None:
            self._reply(out, "no_data")
            return False
        return True

    # ------------------------------------------------------------ listings

    def _split_list_arg(self, arg: str) -> str:
        arg = arg.strip()
        if arg.startswith("-"):
            _, _, arg = arg.partition(" ")
        return arg.strip()

    def _list_nodes(self, target: str) -> list[Node] | None:
        """The entries LIST shows for `target`; None when it does not exist."""
        vfs = self.vfs
        node = vfs.lookup(vfs.absolute(target or "."))
        if node is not None:
            return listing.sorted_children(node) if node.is_dir else [node]
        if not target or self.d.name == "iis":
            return None
        # vsftpd: the last component is a glob filter on its directory
        path = vfs.absolute(target)
        base, _, pattern = path.rpartition("/")
        parent = vfs.lookup(base or "/")
        if parent is None or not parent.is_dir:
            return []
        return listing.matches(listing.sorted_children(parent), pattern, vfs.fold)

    def _list_line(self, node: Node, now: float) -> str:
        return listing.dos_line(node) if self.d.name == "iis" else listing.unix_line(node, now)

    def _listing(self, arg: str, now: float, out: list[Action], names: bool) -> None:
        if not self._ready(out):
            return
        nodes = self._list_nodes(self._split_list_arg(arg))
        if nodes is None and self.d.name == "iis":
            self._reply(out, "retr_fail")
            return
        nodes = nodes or []
        lines = [n.name for n in nodes] if names else [self._list_line(n, now) for n in nodes]
        mark = self.d.line("list_mark", mode=self._mode())
        self._begin(Transfer(False, "list_done", mark, listing.render(lines)), out)

    def cmd_LIST(self, arg: str, now: float, out: list[Action]) -> None:
        self._listing(arg, now, out, names=False)

    def cmd_NLST(self, arg: str, now: float, out: list[Action]) -> None:
        self._listing(arg, now, out, names=True)

    def cmd_MLSD(self, arg: str, now: float, out: list[Action]) -> None:
        if not self._ready(out):
            return
        vfs = self.vfs
        node = vfs.lookup(vfs.absolute(arg.strip() or "."))
        if node is None or not node.is_dir:
            self._reply(out, "retr_fail")
            return
        lines = [listing.mlsx_facts(node, ".", "cdir")]
        lines += [listing.mlsx_facts(n) for n in listing.sorted_children(node)]
        mark = self.d.line("list_mark", mode=self._mode())
        self._begin(Transfer(False, "transfer_ok", mark, listing.render(lines)), out)

    def cmd_MLST(self, arg: str, now: float, out: list[Action]) -> None:
        vfs = self.vfs
        path = vfs.absolute(arg.strip() or ".")
        node = vfs.lookup(path)
        if node is None:
            self._reply(out, "retr_fail")
            return
        shown = vfs.display(path)
        lines = [self.d.texts["mlst_head"].format(path=shown),
                 " " + listing.mlsx_facts(node, shown), self.d.texts["mlst_end"]]
        out.append(Send(self.d.lines(lines)))

    # ------------------------------------------------------------- files

    def cmd_RETR(self, arg: str, now: float, out: list[Action]) -> None:
        offset, self.rest = self.rest, 0
        if not self._ready(out):
            return
        if self.ascii and offset and self.d.name == "vsftpd":
            self._reply(out, "retr_ascii_rest")
            return
        vfs = self.vfs
        path = vfs.absolute(arg)
        node = vfs.lookup(path)
        content = self.s.files.read(node) if node is not None and not node.is_dir else None
        if content is None or node is None:
            self._reply(out, "retr_fail")
            return
        mark = self.d.line("retr_mark", mode=self._mode(), name=arg, size=node.size)
        content = content[offset:]
        if self._converts():
            content = to_crlf(content)
        self._begin(Transfer(False, "transfer_ok", mark, content, path=path), out)

    def _upload(self, arg: str, now: float, out: list[Action], unique: bool,
                append: bool) -> None:
        self.rest = 0
        if not self._ready(out):
            return
        vfs = self.vfs
        name = vfs.unique(arg) if unique else arg
        if not name and not unique:
            self._reply(out, "stor_fail")
            return
        existing = vfs.lookup(vfs.absolute(name)) if append else None
        if existing is not None and not existing.is_dir:
            made: tuple[str, Node] | None = (vfs.display(vfs.absolute(name)), existing)
        else:
            append = False
            made = vfs.store(name, now, self._owner())
        if made is None:
            self._reply(out, "stor_fail")
            return
        path, node = made
        if unique:
            mark = self.d.line("stou_mark", name=name, mode=self._mode())
        else:
            mark = self.d.line("stor_mark", mode=self._mode())
        self.seq += 1
        t = Transfer(True, "transfer_ok", mark, path=path, url=self._url(path),
                     stream=f"ftp-{self.seq}", node=node, append=append,
                     kept=bytearray() if self.s.max_kept_upload_bytes else None,
                     ascii=CrlfStream() if self._converts() else None)
        self._begin(t, out)

    def cmd_STOR(self, arg: str, now: float, out: list[Action]) -> None:
        self._upload(arg, now, out, unique=False, append=False)

    def cmd_APPE(self, arg: str, now: float, out: list[Action]) -> None:
        self._upload(arg, now, out, unique=False, append=True)

    def cmd_STOU(self, arg: str, now: float, out: list[Action]) -> None:
        self._upload(arg, now, out, unique=True, append=False)

    def cmd_DELE(self, arg: str, now: float, out: list[Action]) -> None:
        self._reply(out, "dele_ok" if arg and self.vfs.remove(arg, want_dir=False)
                    else "dele_fail")

    def cmd_RNFR(self, arg: str, now: float, out: list[Action]) -> None:
        vfs = self.vfs
        if arg and vfs.lookup(vfs.absolute(arg)) is not None:
            self.rnfr = arg
            self._reply(out, "rnfr_ok")
        else:
            self.rnfr = None
            self._reply(out, "rnfr_fail")

    def cmd_RNTO(self, arg: str, now: float, out: list[Action]) -> None:
        if self.rnfr is None:
            self._reply(out, "rnto_first")
            return
        src, self.rnfr = self.rnfr, None
        self._reply(out, "rnto_ok" if arg and self.vfs.rename(src, arg, now) else "rnto_fail")

    def cmd_MKD(self, arg: str, now: float, out: list[Action]) -> None:
        made = self.vfs.mkdir(arg, now, self._owner()) if arg else None
        if made is None:
            self._reply(out, "mkd_fail")
            return
        self._reply(out, "mkd_ok", path=made.replace('"', '""'), name=arg.replace('"', '""'))

    def cmd_RMD(self, arg: str, now: float, out: list[Action]) -> None:
        ok = bool(arg) and self.vfs.remove(arg, want_dir=True)
        self._reply(out, "rmd_ok" if ok else "rmd_fail")

    def _file(self, arg: str) -> Node | None:
        vfs = self.vfs
        node = vfs.lookup(vfs.absolute(arg)) if arg else None
        return node if node is not None and not node.is_dir else None

    def cmd_SIZE(self, arg: str, now: float, out: list[Action]) -> None:
        node = self._file(arg)
        if node is None:
            self._reply(out, "size_fail")
        else:
            out.append(Send(f"213 {node.size}\r\n".encode()))

    def cmd_MDTM(self, arg: str, now: float, out: list[Action]) -> None:
        node = self._file(arg)
        if node is None:
            self._reply(out, "mdtm_fail")
        else:
            out.append(Send(f"213 {listing.mdtm(node)}\r\n".encode()))
