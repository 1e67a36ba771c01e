"""One TFTP transfer on its own port: sending a file (RRQ) or receiving one (WRQ).

A transfer answers only the client's own address and port (tftpd-hpa connects
its transfer socket, so the kernel drops anything else). It sends a packet
again only when its timer runs out, with the wait doubling each time, and
never because a duplicate ACK came in: answering duplicates is the Sorcerer's
Apprentice bug, where every lost packet doubles the traffic from then on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from muscipula.machine import Action, CaptureData, CaptureEnd, ChildClose, ChildSend, Emit
from muscipula.protocols.tftp import wire
from muscipula.protocols.tftp.backend import Reader
from muscipula.protocols.tftp.request import Params


@dataclass(frozen=True, slots=True)
class Timing:
    retransmit_timeout: float
    retransmit_count: int
    transfer_timeout: float


def wire_block(n: int, rollover: int) -> int:
    """Block number on the wire for the n-th block (1-based), wrapping to `rollover`."""
    if n < 65536:
        return n
    return rollover + (n - 65536) % (65536 - rollover)


def netascii_encode(raw: bytes) -> bytes:
    return raw.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


class Transfer:
    """What both directions share: addressing, timers, counters, the final incident."""

    direction = ""

    def __init__(self, tag: str, addr: tuple[str, int], filename: bytes, mode: str,
                 params: Params, timing: Timing, now: float) -> None:
        self.tag = tag
        self.addr = addr
        self.filename = filename
        self.mode = mode
        self.params = params
        self.timing = timing
        self.started = now
        self.expires = now + timing.transfer_timeout
        self.base_wait = params.timeout or timing.retransmit_timeout
        self.wait = self.base_wait
        self.deadline: float | None = None  # next retransmission; None until the port is up
        self.tries = 0
        self.retransmits = 0
        self.bytes = 0
        self.blocks = 0
        self.local_port = 0
        self.done = False
        self.status = ""
        self.peer_error: tuple[int, str] | None = None

    # ---------------------------------------------------------------- helpers

    def send(self, packet: bytes) -> ChildSend:
        return ChildSend(self.tag, packet, self.addr)

    def arm(self, now: float, fresh: bool) -> None:
        """Start the retransmission timer; `fresh` after progress resets the backoff."""
        if fresh:
            self.wait = self.base_wait
            self.tries = 0
        self.deadline = now + self.wait

    def finish(self, status: str, now: float) -> list[Action]:
        """Mark done and say so once; the caller closes the child port."""
        if self.done:
            return []
        self.done = True
        self.status = status
        self.deadline = None
        return [Emit("tftp.transfer", self.summary(now))]

    def summary(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "direction": self.direction,
            "filename": self.filename.decode("utf-8", "backslashreplace"),
            "mode": self.mode, "status": self.status, "bytes": self.bytes,
            "blocks": self.blocks, "blksize": self.params.blksize,
            "windowsize": self.params.windowsize, "tsize": self.params.tsize,
            "retransmits": self.retransmits, "local_port": self.local_port,
            "duration": round(max(now - self.started, 0.0), 6),
        }
        if self.peer_error is not None:
            out["peer_error_code"], out["peer_error_text"] = self.peer_error
        return out

    def next_deadline(self) -> float | None:
        if self.done:
            return None
        return self.expires if self.deadline is None else min(self.deadline, self.expires)

    def held(self) -> int:
        return 0

    # ------------------------------------------------------------- overridden

    def begin(self, now: float) -> list[Action]:
        raise NotImplementedError

    def packet(self, data: bytes, now: float) -> list[Action]:
        raise NotImplementedError

    def retransmit(self, now: float) -> list[Action]:
        raise NotImplementedError

    def timer(self, now: float) -> list[Action]:
        if self.done:
            return []
        if now >= self.expires:
            return self.expire(now)
        if self.deadline is None or now < self.deadline:
            return []
        if self.tries >= self.timing.retransmit_count:
            return self.expire(now)
        self.tries += 1
        self.retransmits += 1
        self.wait *= 2
        self.deadline = now + self.wait
        return self.retransmit(now)

    def expire(self, now: float) -> list[Action]:
        return [*self.finish("timeout", now), ChildClose(self.tag)]

    def abandon(self, status: str, now: float) -> list[Action]:
        """The session ends under the transfer (peer closed, limit, shutdown)."""
        return self.finish(status, now)


class ReadTransfer(Transfer):
    """Sends a file from the root: DATA blocks in windows, each window ACKed."""

    direction = "read"

    def __init__(self, tag: str, addr: tuple[str, int], filename: bytes, mode: str,
                 params: Params, timing: Timing, now: float, reader: Reader) -> None:
        super().__init__(tag, addr, filename, mode, params, timing, now)
        self.reader = reader
        self.netascii = mode == "netascii"
        self.pending = bytearray()  # encoded netascii not yet in a block
        self.eof = False
        self.window: deque[tuple[int, bytes]] = deque()  # sent, not yet acknowledged
        self.base = 1  # first block not acknowledged
        self.next = 1  # next block to make
        self.final: int | None = None  # number of the short (last) block once made
        self.oack = wire.oack(params.oack) if params.oack else b""

    def held(self) -> int:
        return len(self.pending) + sum(len(p) for _, p in self.window)

    def _chunk(self) -> bytes:
        size = self.params.blksize
        if not self.netascii:
            return self.reader.read(size)
        while len(self.pending) < size and not self.eof:
            raw = self.reader.read(size)
            if not raw:
                self.eof = True
            else:
                self.pending += netascii_encode(raw)
        chunk = bytes(self.pending[:size])
        del self.pending[:size]
        return chunk

    def _fill(self) -> list[Action]:
        """Make and send blocks until the window is full or the last block is out."""
        out: list[Action] = []
        while self.final is None and self.next < self.base + self.params.windowsize:
            payload = self._chunk()
            n = self.next
            self.next += 1
            self.window.append((n, payload))
            self.bytes += len(payload)
            self.blocks += 1
            if len(payload) < self.params.blksize:
                self.final = n
                self.reader.close()
            out.append(self.send(wire.data(wire_block(n, self.params.rollover), payload)))
        return out

    def begin(self, now: float) -> list[Action]:
        self.arm(now, fresh=True)
        if self.oack:
            return [self.send(self.oack)]
        return self._fill()

    def retransmit(self, now: float) -> list[Action]:
        if self.oack:
            return [self.send(self.oack)]
        roll = self.params.rollover
        return [self.send(wire.data(wire_block(n, roll), p)) for n, p in self.window]

    def packet(self, data: bytes, now: float) -> list[Action]:
        op = wire.opcode(data)
        if op == wire.ERROR:
            self.peer_error = wire.parse_error(data)
            return [*self.finish("peer_error", now), ChildClose(self.tag)]
        if op != wire.ACK or len(data) < 4:
            return []
        got = wire.block_of(data)
        if self.oack:
            if got != 0:
                return []
            self.oack = b""
            self.arm(now, fresh=True)
            return self._fill()
        roll = self.params.rollover
        acked = next((n for n, _ in self.window if wire_block(n, roll) == got), None)
        if acked is None:
            return []  # a duplicate or stale ACK: never answered (Sorcerer's Apprentice)
        while self.window and self.window[0][0] <= acked:
            self.window.popleft()
        self.base = acked + 1
        if self.final is not None and acked >= self.final:
            return [*self.finish("complete", now), ChildClose(self.tag)]
        self.arm(now, fresh=True)
        return self._fill()

    def finish(self, status: str, now: float) -> list[Action]:
        self.reader.close()
        self.window.clear()
        self.pending.clear()
        return super().finish(status, now)


class WriteTransfer(Transfer):
    """Receives a file into the store; the bytes never touch the served root."""

    direction = "write"

    def __init__(self, tag: str, addr: tuple[str, int], filename: bytes, mode: str,
                 params: Params, timing: Timing, now: float, url: str,
                 max_size: int) -> None:
        super().__init__(tag, addr, filename, mode, params, timing, now)
        self.url = url
        self.max_size = max_size
        self.stream = f"tftp-{tag}"
        self.netascii = mode == "netascii"
        self.carry_cr = False
        self.expected = 1
        self.last_acked = 0
        self.unacked = 0  # blocks taken since the last ACK
        self.captured = False
        self.dallying = False
        self.reply = wire.oack(params.oack) if params.oack else wire.ack(0)

    def summary(self, now: float) -> dict[str, Any]:
        return {**super().summary(now), "url": self.url}

    def begin(self, now: float) -> list[Action]:
        self.arm(now, fresh=True)
        return [self.send(self.reply)]

    def retransmit(self, now: float) -> list[Action]:
        return [self.send(self.reply)]

    def _decode(self, payload: bytes, last: bool) -> bytes:
        if not self.netascii:
            return payload
        data = (b"\r" if self.carry_cr else b"") + payload
        self.carry_cr = data.endswith(b"\r") and not last
        if self.carry_cr:
            data = data[:-1]
        return data.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")

    def packet(self, data: bytes, now: float) -> list[Action]:
        op = wire.opcode(data)
        if op == wire.ERROR:
            if self.dallying:
                self.done = True
                return [ChildClose(self.tag)]
            self.peer_error = wire.parse_error(data)
            return self._broken("peer_error", now)
        if op != wire.DATA or len(data) < 4:
            return []
        got = wire.block_of(data)
        roll = self.params.rollover
        if got != wire_block(self.expected, roll) or self.dallying:
            if self.last_acked and got == wire_block(self.last_acked, roll):
                return [self.send(wire.ack(got))]  # our ACK was lost: say it again
            return []
        payload = data[4:]
        if self.bytes + len(payload) > self.max_size:
            return [self.send(wire.error(wire.ENOSPACE)), *self._broken("too_large", now)]
        last = len(payload) < self.params.blksize
        self.bytes += len(payload)
        self.blocks += 1
        self.expected += 1
        self.unacked += 1
        self.captured = True
        out: list[Action] = [CaptureData(self.stream, self._decode(payload, last))]
        self.arm(now, fresh=True)  # progress: the client is alive, whatever the window
        if last or self.unacked >= self.params.windowsize:
            self.last_acked = self.expected - 1
            self.unacked = 0
            self.reply = wire.ack(got)
            out.append(self.send(self.reply))
        if last:
            out.append(CaptureEnd(self.stream, self.url, complete=True))
            out += self.finish("complete", now)
            # Stay a moment to ACK a repeated last block, as tftpd-hpa does.
            self.done = False
            self.dallying = True
            self.deadline = now + self.base_wait
        return out

    def _broken(self, status: str, now: float) -> list[Action]:
        out: list[Action] = []
        if self.captured:
            out.append(CaptureEnd(self.stream, self.url, complete=False))
            self.captured = False
        return [*out, *self.finish(status, now), ChildClose(self.tag)]

    def timer(self, now: float) -> list[Action]:
        if self.dallying:
            if self.deadline is not None and now >= self.deadline:
                self.done = True
                self.deadline = None
                return [ChildClose(self.tag)]
            return []
        return super().timer(now)

    def expire(self, now: float) -> list[Action]:
        return self._broken("timeout", now)

    def abandon(self, status: str, now: float) -> list[Action]:
        if self.dallying:
            self.done = True
            return []
        out: list[Action] = []
        if self.captured:
            out.append(CaptureEnd(self.stream, self.url, complete=False))
            self.captured = False
        return [*out, *self.finish(status, now)]

    def next_deadline(self) -> float | None:
        if self.dallying:
            return self.deadline
        return super().next_deadline()
