"""TftpSession: the requests of one remote address and port, each served on its own port.

Like tftpd-hpa, every answer to a request, an error too, comes from a fresh
port (a UDP child channel); the well-known port itself never answers. What the
real server ignores (other opcodes, junk) gets no answer here either, only an
incident. Once nothing is left to do the session lingers briefly for a
repeated request, then closes, so each client's requests make one record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from muscipula.incidents import plain_host
from muscipula.machine import (
    Action,
    BaseMachine,
    ChildClose,
    ChildClosed,
    ChildData,
    ChildEvent,
    ChildFailed,
    ChildListen,
    ChildListening,
    ChildSend,
    Close,
    Emit,
    Peer,
    Wake,
)
from muscipula.protocols.tftp import wire
from muscipula.protocols.tftp.backend import Reader, ReadOnlyRoot, Refusal
from muscipula.protocols.tftp.request import Limits, Request, negotiate, parse
from muscipula.protocols.tftp.transfer import ReadTransfer, Timing, Transfer, WriteTransfer


class Slots:
    """Concurrent transfers of the whole service, shared by all its sessions."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def give(self) -> None:
        self.used = max(self.used - 1, 0)


@dataclass(frozen=True, slots=True)
class Setup:
    """Everything sessions share, made once per service from its config."""

    root: ReadOnlyRoot
    slots: Slots
    timing: Timing
    limits: Limits
    allow_upload: bool
    max_file_size: int
    max_per_peer: int
    linger: float
    first_delay: float
    ports: tuple[int, int]
    url_host: str


@dataclass(slots=True)
class _Reply:
    """An ERROR that waits for its port; sent once, then the port closes."""

    packet: bytes


class TftpSession(BaseMachine):
    protocol = "TftpSession"

    def __init__(self, setup: Setup, peer: Peer) -> None:
        self.setup = setup
        self.addr = (peer.remote_host, peer.remote_port)
        host = peer.local_host if peer.local_host not in ("", "0.0.0.0", "::") else ""
        self.url_host = host or setup.url_host
        if ":" in self.url_host:
            self.url_host = f"[{self.url_host}]"
        self.pending: dict[str, Transfer | _Reply] = {}  # waiting for their port
        self.ready: dict[str, tuple[float, Transfer | _Reply]] = {}  # port up, first send due
        self.active: dict[str, Transfer] = {}
        self.digests: dict[str, bytes] = {}  # tag -> request digest (repeats are ignored)
        self.count = 0
        self.linger_at: float | None = None
        self.wake_at: float | None = None

    # --------------------------------------------------------------- requests

    def receive(self, data: bytes, now: float) -> list[Action]:
        out = self._request(data, now)
        return self._schedule(out, now)

    def _request(self, data: bytes, now: float) -> list[Action]:
        op = wire.opcode(data)
        if op not in (wire.RRQ, wire.WRQ):
            # tftpd-hpa's forked child exits without a word on anything but a request.
            return [Emit("protocol.error", {"detail": f"not a request (opcode {op})",
                                            "data": data[:64]})]
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest in self.digests.values():
            return []  # the client repeated its request before our answer reached it
        if len(self.pending) + len(self.ready) + len(self.active) >= self.setup.max_per_peer:
            return [Emit("connection.limit", {"limit": "max_transfers_per_peer",
                                              "value": self.setup.max_per_peer})]
        if not self.setup.slots.take():
            # Dropped as if lost: the client retries and may find a free slot then.
            return [Emit("connection.limit", {"limit": "max_transfers",
                                              "value": self.setup.slots.limit})]
        self.count += 1
        tag = f"t{self.count}"
        self.digests[tag] = digest
        req = parse(data)
        job, out = self._answer(req, tag, now)
        self.pending[tag] = job
        out.append(ChildListen(tag, "udp", self.setup.ports))
        return out

    def _answer(self, req: Request, tag: str, now: float) -> tuple[Transfer | _Reply,
                                                                   list[Action]]:
        """Check the request in tftpd-hpa's order; a transfer, or the ERROR to send."""
        fields: dict[str, Any] = {
            "opcode": wire.OPCODE_NAMES[req.opcode],
            "filename": req.filename.decode("utf-8", "backslashreplace"),
            "mode": (req.mode or b"").decode("utf-8", "backslashreplace"),
            "options": {k.decode("utf-8", "backslashreplace"):
                        v.decode("utf-8", "backslashreplace") for k, v in req.options},
        }

        def refuse(code: int, text: str | None = None) -> tuple[_Reply, list[Action]]:
            packet = wire.error(code, text)
            fields["error_code"] = code
            fields["error_text"] = wire.DEFAULT_TEXT[code] if text is None else text
            return _Reply(packet), [Emit("tftp.request", fields)]

        if req.early_error:
            return refuse(wire.EBADOP, req.early_error)
        if req.mode is None:
            return refuse(wire.EBADOP, wire.MISSING_MODE)
        mode = req.mode.lower().decode("latin-1")
        if mode not in wire.MODES:
            return refuse(wire.EBADOP, wire.UNKNOWN_MODE)
        fields["mode"] = mode
        reading = req.opcode == wire.RRQ
        reader: Reader | None = None
        if reading:
            opened = self.setup.root.open(req.filename)
            if isinstance(opened, Refusal):
                return refuse(opened.code, opened.text)
            reader = opened
        else:
            refusal = self._may_write(req.filename)
            if refusal is not None:
                return refuse(refusal.code, refusal.text)
        size = reader.size if reader is not None and mode == "octet" else None
        params, failure = negotiate(req, size, mode == "netascii", self.setup.limits)
        if failure is None and req.late_error:
            failure = req.late_error
            code = wire.EBADOP
        else:
            code = wire.EOPTNEG
        if failure is None and not reading and (params.tsize or 0) > self.setup.max_file_size:
            failure, code = wire.DEFAULT_TEXT[wire.ENOSPACE], wire.ENOSPACE
        if failure is not None:
            if reader is not None:
                reader.close()
            return refuse(code, failure)
        fields["error_code"] = None
        fields["error_text"] = None
        out: list[Action] = [Emit("tftp.request", fields)]
        timing = self.setup.timing
        if reader is not None:
            return ReadTransfer(tag, self.addr, req.filename, mode, params, timing, now,
                                reader), out
        url = f"tftp://{self.url_host}/{quote(req.filename.lstrip(b'/'), safe='/')}"
        out.append(Emit("download.offer", {"url": url, "source": "tftp"}))
        return WriteTransfer(tag, self.addr, req.filename, mode, params, timing, now, url,
                             self.setup.max_file_size), out

    def _may_write(self, filename: bytes) -> Refusal | None:
        kind = self.setup.root.kind(filename)
        if kind == "dir":
            return Refusal(wire.EUNDEF, wire.IS_A_DIRECTORY)
        if self.setup.allow_upload:
            return None
        # tftpd-hpa without --create: only existing, world-writable files; ours are not.
        if kind == "file":
            return Refusal(wire.EUNDEF, wire.PERMISSION_DENIED)
        return Refusal(wire.ENOTFOUND, wire.DEFAULT_TEXT[wire.ENOTFOUND])

    # ----------------------------------------------------------------- child

    def child(self, event: ChildEvent, now: float) -> list[Action]:
        return self._schedule(self._child(event, now), now)

    def _child(self, event: ChildEvent, now: float) -> list[Action]:
        tag = event.tag
        if isinstance(event, ChildListening):
            job = self.pending.pop(tag, None)
            if job is None:
                return [ChildClose(tag)]
            if isinstance(job, Transfer):
                job.local_port = event.port
            if self.setup.first_delay > 0:
                self.ready[tag] = (now + self.setup.first_delay, job)
                return []
            return self._first(tag, job, now)
        if isinstance(event, ChildData):
            transfer = self.active.get(tag)
            if transfer is None or event.peer is None:
                return []
            if (plain_host(event.peer[0]), event.peer[1]) != self.addr:
                return []  # another TID: tftpd-hpa's connected socket never sees it
            out = transfer.packet(event.data, now)
            self._reap(tag)
            return out
        if isinstance(event, ChildFailed | ChildClosed):
            job = self.pending.pop(tag, None) or self.active.pop(tag, None)
            if job is None and tag in self.ready:
                job = self.ready.pop(tag)[1]
            if job is None:
                return []
            self._release(tag)
            if isinstance(job, Transfer):
                return job.abandon("failed" if isinstance(event, ChildFailed) else "closed",
                                   now)
        return []

    def _first(self, tag: str, job: Transfer | _Reply, now: float) -> list[Action]:
        """The first packet from the new port: an ERROR (and done), or a transfer's start."""
        if isinstance(job, _Reply):
            self._release(tag)
            return [ChildSend(tag, job.packet, self.addr), ChildClose(tag)]
        self.active[tag] = job
        return job.begin(now)

    # ----------------------------------------------------------------- timers

    def timer(self, now: float) -> list[Action]:
        self.wake_at = None
        out: list[Action] = []
        for tag, (at, job) in list(self.ready.items()):
            if now >= at:
                del self.ready[tag]
                out += self._first(tag, job, now)
        for tag, transfer in list(self.active.items()):
            out += transfer.timer(now)
            self._reap(tag)
        if self.linger_at is not None and now >= self.linger_at and not self._busy():
            self.linger_at = None
            return [*out, Close("done")]
        return self._schedule(out, now)

    def _busy(self) -> bool:
        return bool(self.pending or self.ready or self.active)

    def _reap(self, tag: str) -> None:
        transfer = self.active.get(tag)
        if transfer is not None and transfer.done:
            del self.active[tag]
            self._release(tag)

    def _release(self, tag: str) -> None:
        if self.digests.pop(tag, None) is not None:
            self.setup.slots.give()

    def _schedule(self, out: list[Action], now: float) -> list[Action]:
        """Ask for a wake-up at the earliest deadline, unless an earlier one is pending.

        Deadlines only move later as a transfer makes progress, so a wake-up that
        comes too early just finds nothing due and asks again: one timer per
        retransmission period instead of one per packet.
        """
        if self._busy():
            self.linger_at = None
        elif self.linger_at is None:
            self.linger_at = now + self.setup.linger
        due = [d for t in self.active.values() if (d := t.next_deadline()) is not None]
        due += [at for at, _ in self.ready.values()]
        if self.linger_at is not None:
            due.append(self.linger_at)
        if due:
            at = min(due)
            if self.wake_at is None or at < self.wake_at:
                self.wake_at = at
                out.append(Wake(at))
        return out

    # ---------------------------------------------------------------- closing

    def closed(self, now: float) -> list[Action]:
        out: list[Action] = []
        ready = [(tag, job) for tag, (_, job) in self.ready.items()]
        for tag, job in [*self.pending.items(), *ready, *self.active.items()]:
            self._release(tag)
            if isinstance(job, Transfer):
                out += job.abandon("closed", now)  # a read also closes its file here
        self.pending.clear()
        self.ready.clear()
        self.active.clear()
        return out

    def buffered(self) -> int:
        return sum(t.held() for t in self.active.values())
