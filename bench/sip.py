"""SIP over UDP: OPTIONS requests/s and REGISTER digest logins/s, 32 in flight.

The client is 32 UDP sockets on one epoll loop, each with one request out at a
time, so that at most 32 datagrams are ever in flight and none is lost to a full
socket buffer. A REGISTER round trip is the full digest login: REGISTER, its 401
challenge, the answer computed from it (MD5, qop=auth), and the final 200. A
socket left unanswered for a second counts an error and starts over.
"""

from __future__ import annotations

import hashlib
import re
import selectors
import socket
import time
from collections.abc import Callable, Generator
from pathlib import Path

from lib import (
    HOST,
    Board,
    Load,
    Server,
    measure_rounds,
    muscipula_services,
    start_muscipula,
    start_other,
    unrecorded,
)

AREA = "sip"
SLOTS = 32
EXT, PASSWORD = "100", "bench"
#: a dialog yields each request and is sent each reply; it counts its own completions
Dialog = Generator[bytes, bytes, None]


class Tally:
    """Completed dialogs, errors, and replies received whatever they said."""

    def __init__(self) -> None:
        self.ok = self.errors = 0
        #: each reply is one request the server handled (and should have recorded)
        self.answered = 0


def _request(method: str, port: int, n: int, extra: str = "") -> bytes:
    return (f"{method} sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{port}x{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{EXT}@127.0.0.1>;tag={port}\r\n"
            f"To: <sip:{EXT}@127.0.0.1>\r\nCall-ID: {port}-{n // 2}@127.0.0.1\r\n"
            f"CSeq: {n} {method}\r\nContact: <sip:{EXT}@127.0.0.1:{port}>\r\n"
            f"User-Agent: Zoiper rv2.10\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def options(port: int, tally: Tally) -> Dialog:
    n = 0
    while True:
        n += 1
        reply = yield _request("OPTIONS", port, n)
        if reply.startswith(b"SIP/2.0 200 "):
            tally.ok += 1
        else:
            tally.errors += 1


_PARAM = re.compile(rb'(\w+)=(?:"([^"]*)"|([^,\s]*))')
_CHALLENGE = re.compile(rb"\n(?:WWW-Authenticate|Www-Authenticate):\s*Digest ([^\r\n]*)", re.I)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def authorization(challenge: bytes, n: int) -> str:
    """The Authorization header a phone knowing PASSWORD sends to this challenge."""
    p = {m[0].decode().lower(): (m[1] or m[2]).decode() for m in _PARAM.findall(challenge)}
    uri = "sip:127.0.0.1"
    ha1 = _md5(f"{EXT}:{p.get('realm', '')}:{PASSWORD}")
    ha2 = _md5(f"REGISTER:{uri}")
    cnonce = f"{n:08x}"
    head = (f'Digest username="{EXT}",realm="{p.get("realm", "")}",nonce="{p.get("nonce", "")}",'
            f'uri="{uri}",algorithm=MD5')
    if "qop" in p:
        resp = _md5(f"{ha1}:{p['nonce']}:00000001:{cnonce}:auth:{ha2}")
        head += f',qop=auth,nc=00000001,cnonce="{cnonce}"'
    else:
        resp = _md5(f"{ha1}:{p.get('nonce', '')}:{ha2}")
    if "opaque" in p:
        head += f',opaque="{p["opaque"]}"'
    return f'{head},response="{resp}"\r\n'


class NoChallenge(Exception):
    """The server answered a REGISTER without challenging it."""


def register(port: int, tally: Tally) -> Dialog:
    n = 0
    while True:
        n += 2
        reply = yield _request("REGISTER", port, n - 1, "Expires: 60\r\n")
        m = _CHALLENGE.search(reply)
        if not reply.startswith(b"SIP/2.0 401 ") or m is None:
            if reply.startswith(b"SIP/2.0 200 "):
                raise NoChallenge()
            tally.errors += 1
            continue
        auth = "Authorization: " + authorization(m.group(1), n)
        reply = yield _request("REGISTER", port, n, "Expires: 60\r\n" + auth)
        if reply.startswith(b"SIP/2.0 200 "):
            tally.ok += 1
        else:
            tally.errors += 1


def udp_load(port: int, dialog: Callable[[int, Tally], Dialog], duration: float,
             slots: int = SLOTS, silence: float = 1.0) -> tuple[Load, Tally]:
    """`slots` sockets each running `dialog` back to back for `duration` seconds."""
    tally = Tally()
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    state: dict[int, list] = {}  # fileno -> [socket, dialog, local port, last send]
    try:
        for _ in range(slots):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind((HOST, 0))
            s.connect((HOST, port))
            s.setblocking(False)
            local = s.getsockname()[1]
            d = dialog(local, tally)
            state[s.fileno()] = [s, d, local, time.perf_counter()]
            sel.register(s, selectors.EVENT_READ)
            s.send(next(d))
        t0 = time.perf_counter()
        end = t0 + duration
        next_check = t0 + silence / 4
        while (now := time.perf_counter()) < end:
            for key, _ in sel.select(min(0.05, end - now)):
                st = state[key.fd]
                try:
                    reply = st[0].recv(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                tally.answered += 1
                st[3] = time.perf_counter()
                st[0].send(st[1].send(reply))
            if now >= next_check:  # a lost datagram: start that socket over
                next_check = now + silence / 4
                for st in state.values():
                    if now - st[3] > silence:
                        tally.errors += 1
                        st[1] = dialog(st[2], tally)
                        st[3] = now
                        st[0].send(next(st[1]))
        elapsed = time.perf_counter() - t0
    finally:
        sel.close()
        for s in socks:
            s.close()
    return Load(tally.ok, tally.errors, elapsed), tally


def measure(board: Board, who: str, server: Server, port: int, duration: float,
            round_no: int) -> None:
    o, ot = udp_load(port, options, duration)
    if not o.count:
        raise RuntimeError(f"no OPTIONS answered ({o.errors} errors)")
    board.add(AREA, "options", f"OPTIONS/s, {SLOTS} in flight", "1/s", who, o.rate)
    print(f"  {who}: {o.rate:,.0f} OPTIONS/s ({o.errors} errors)", flush=True)
    answered = ot.answered
    r = None
    try:
        r, rt = udp_load(port, register, duration)
        answered += rt.answered
    except NoChallenge:
        if round_no == 0:
            board.note(AREA, f"{who} answers REGISTER with 200 and no challenge: "
                             "no digest figure")
    if r is not None:
        board.add(AREA, "register", f"REGISTER digest logins/s, {SLOTS} in flight", "1/s",
                  who, r.rate)
        print(f"  {who}: {r.rate:,.0f} REGISTER digest logins/s ({r.errors} errors)", flush=True)
    errors = o.errors + (r.errors if r else 0)
    if errors:
        board.note(AREA, f"{who}: {errors} requests unanswered or answered wrongly")
    if who == "muscipula":
        unrecorded(board, AREA, who, server, [
            ("sip_commands", "SELECT count(*) FROM sip_commands", answered),
            ("logins", "SELECT count(*) FROM logins", r.count if r else 0)])


def _start(who: str, peers, tmp: Path) -> tuple[Server | None, int]:
    if who != "muscipula":
        return start_other(who, "sip", peers, "udp")
    body = {"udp_ports": [5060], "tcp_ports": [], "tls_ports": [],
            "login": {"mode": "list", "accounts": {EXT: PASSWORD}}}
    server = start_muscipula(tmp, {"sip": body}, [(5060, "udp")])
    return server, server.port(5060)


def run(board: Board, quick: bool, rounds: int, peers=None) -> None:
    if "sip" not in muscipula_services():
        board.note(AREA, "muscipula has no sip service yet; only the others were measured")
    who_all = ["bare", "muscipula"]
    if peers:
        who_all.append("qeeqbox")
        board.note(AREA, "opencanary not measured: its SIP module logs and never replies")
    duration = 1.0 if quick else 4.0
    measure_rounds(board, AREA, rounds, who_all, lambda who, tmp: _start(who, peers, tmp),
                   lambda who, server, port, r: measure(board, who, server, port, duration, r))
