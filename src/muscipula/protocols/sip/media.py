"""The media ports of one SIP session's answered calls: opened, fed, recorded and closed.

A call that is answered gets a UDP child channel on an even port of the configured
range, chosen as Asterisk does (a random even port, another one if it is taken);
the 200's SDP names it. Packets from the caller's address are counted as RTP and,
with `record`, their G.711 payload is captured as a Sun .au file. A stream ends at
BYE, at its idle timeout, at a limit or with the session, as one `sip.rtp` incident.

Once the caller's first packet arrives, the PBX side sends `send_seconds` of G.711
silence back to where it came from (symmetric RTP, so only to the caller's own
host), 20 ms packets in bursts of five every 100 ms: ten wake-ups a second per
call for a bounded time, instead of fifty.
"""

from __future__ import annotations

import hashlib
import struct
import weakref
from dataclasses import dataclass
from urllib.parse import quote

from muscipula.machine import (
    Action,
    CaptureData,
    CaptureEnd,
    ChildClose,
    ChildClosed,
    ChildData,
    ChildEvent,
    ChildFailed,
    ChildListen,
    ChildListening,
    ChildSend,
    Emit,
)
from muscipula.protocols.sip.rtp import Stream, au_header

#: the connection protocol of the media channel, as the reference system named it
PROTOCOL = "RtpUdpStream"
#: ports tried for one call before it is refused
ATTEMPTS = 8
#: sent media: samples per packet (20 ms at 8 kHz), packets per burst, seconds between bursts
SAMPLES = 160
BURST = 5
PACE = BURST * SAMPLES / 8000
#: one G.711 sample of silence per codec
SILENCE = {0: b"\xff", 8: b"\xd5"}


class PortBudget:
    """The media ports all sessions of the service hold together (rtp.max_media_ports).

    Counted from the sessions themselves, which it holds weakly: a session that goes away
    gives its ports back by going, so no path can leak a count. Only sessions that have
    opened media are looked at, and only when a call is about to be answered."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.members: weakref.WeakSet[Media] = weakref.WeakSet()

    def full(self) -> bool:
        return sum(len(m.opening) + len(m.streams) for m in self.members) >= self.limit


@dataclass(frozen=True, slots=True)
class MediaSetup:
    ports: tuple[int, int]
    record: bool
    max_bytes: int
    max_packets: int
    idle_timeout: float
    max_calls: int
    send_seconds: float = 0.0
    budget: PortBudget | None = None


@dataclass(slots=True)
class _Sender:
    """The PBX's own stream of one call: silence to the caller's media address."""

    to: tuple[str, int]
    codec: int
    ssrc: int
    seq: int
    timestamp: int
    start: float
    total: int
    sent: int = 0

    def due(self, now: float) -> list[bytes]:
        """The packets whose time has come, and up to a burst's worth ahead of time."""
        elapsed = int((now - self.start) * 8000 / SAMPLES + 1e-6)  # packets due by now
        wanted = min(self.total, (elapsed // BURST + 1) * BURST)
        payload = SILENCE.get(self.codec, b"\xff") * SAMPLES
        packets = []
        while self.sent < wanted:
            b1 = self.codec | (0x80 if self.sent == 0 else 0)  # marker: the talkspurt begins
            packets.append(struct.pack("!BBHII", 0x80, b1, self.seq, self.timestamp,
                                       self.ssrc) + payload)
            self.seq = (self.seq + 1) & 0xFFFF
            self.timestamp = (self.timestamp + SAMPLES) & 0xFFFFFFFF
            self.sent += 1
        return packets

    def next(self) -> float | None:
        if self.sent >= self.total:
            return None
        return self.start + self.sent * SAMPLES / 8000  # when the last burst runs out


@dataclass(slots=True)
class _Opening:
    call_id: str
    codec: int
    event_pt: int
    attempt: int = 0


class Media:
    """Channels by tag: those being opened and the open streams."""

    def __init__(self, setup: MediaSetup, secret: bytes, peer_host: str) -> None:
        self.s = setup
        self.secret = secret
        self.peer_host = peer_host[7:] if peer_host.startswith("::ffff:") else peer_host
        self.opening: dict[str, _Opening] = {}
        self.streams: dict[str, Stream] = {}
        self.senders: dict[str, _Sender] = {}
        self.count = 0

    def busy(self) -> tuple[str, int] | None:
        """The limit (name, value) that refuses more media: this session's
        (max_calls_with_media) or the service's (max_media_ports); None if neither."""
        if len(self.opening) + len(self.streams) >= self.s.max_calls:
            return "rtp.max_calls_with_media", self.s.max_calls
        if self.s.budget is not None and self.s.budget.full():
            return "rtp.max_media_ports", self.s.budget.limit
        return None

    def open(self, call_id: str, codec: int, event_pt: int, now: float) -> tuple[str, Action]:
        """A new channel for `call_id`: its tag and the ChildListen to carry out."""
        self.count += 1
        tag = f"rtp{self.count}"
        if self.s.budget is not None:
            self.s.budget.members.add(self)
        job = _Opening(call_id, codec, event_pt)
        self.opening[tag] = job
        return tag, self._listen(tag, job, now)

    def _listen(self, tag: str, job: _Opening, now: float) -> ChildListen:
        low, high = self.s.ports
        low += low & 1
        high -= high & 1
        slots = (high - low) // 2 + 1
        seed = f"{job.call_id}\0{tag}\0{job.attempt}\0{now}".encode("utf-8", "surrogateescape")
        pick = int.from_bytes(hashlib.blake2b(seed, key=self.secret[:64],
                                              digest_size=8).digest(), "big")
        port = low + 2 * (pick % slots)
        return ChildListen(tag, "udp", (port, port), PROTOCOL)

    def child(self, event: ChildEvent, now: float) -> tuple[str, str, int, list[Action]]:
        """(call id, outcome, port, actions): outcome "open" (port is bound), "failed"
        (no port could be had), "" (nothing for the call to do)."""
        tag = event.tag
        job = self.opening.get(tag)
        if job is not None:
            if isinstance(event, ChildListening):
                del self.opening[tag]
                self.streams[tag] = Stream(
                    job.call_id, event.port, self.peer_host, job.codec, job.event_pt,
                    self.s.max_packets, self.s.max_bytes, opened=now)
                return job.call_id, "open", event.port, []
            if isinstance(event, ChildFailed):
                job.attempt += 1
                if event.reason.startswith("bind failed") and job.attempt < ATTEMPTS:
                    return job.call_id, "", 0, [self._listen(tag, job, now)]
                del self.opening[tag]
                return job.call_id, "failed", 0, []
            return job.call_id, "", 0, []
        stream = self.streams.get(tag)
        if stream is None:
            return "", "", 0, []
        if isinstance(event, ChildData):
            first = stream.source is None
            payload, limit = stream.packet(event.data, event.peer, now)
            if limit is not None:
                return stream.call_id, "", 0, [
                    Emit("connection.limit", {"limit": f"rtp.{limit}",
                                              "value": getattr(self.s, limit)}),
                    *self.finish(tag, limit, now)]
            out: list[Action] = []
            if first and stream.source is not None and self.s.send_seconds > 0:
                out += self._send(tag, stream, now)
            if payload is not None and self.s.record:
                if stream.recorded == len(payload):
                    out.append(CaptureData(tag, au_header(stream.codec)))
                out.append(CaptureData(tag, payload))
            return stream.call_id, "", 0, out
        if isinstance(event, (ChildClosed, ChildFailed)):
            return stream.call_id, "", 0, self.finish(tag, "closed", now, close=False)
        return stream.call_id, "", 0, []

    def _send(self, tag: str, stream: Stream, now: float) -> list[Action]:
        """Start the PBX's side of the call, to where the caller's media comes from (the
        packet's source port: a caller behind NAT hears it, as with Asterisk's rtp_symmetric)."""
        assert stream.source is not None
        seed = f"{stream.call_id}\0{tag}".encode("utf-8", "surrogateescape")
        h = hashlib.blake2b(seed, key=self.secret[:64], digest_size=10, person=b"rtp-out").digest()
        sender = _Sender(stream.source, stream.codec, int.from_bytes(h[:4], "big"),
                         int.from_bytes(h[4:6], "big"), int.from_bytes(h[6:10], "big"), now,
                         int(self.s.send_seconds * 8000 / SAMPLES))
        self.senders[tag] = sender
        return [ChildSend(tag, p, sender.to) for p in sender.due(now)]

    def finish(self, tag: str, end: str, now: float, close: bool = True) -> list[Action]:
        """End a channel: its stream's incident and recording, and the port closed."""
        out: list[Action] = []
        self.senders.pop(tag, None)
        if self.opening.pop(tag, None) is not None:
            return [ChildClose(tag)] if close else []
        stream = self.streams.pop(tag, None)
        if stream is None:
            return out
        summary = stream.summary(end, now)
        out.append(Emit("sip.rtp", summary))
        if self.s.record and stream.recorded:
            where = summary["remote_host"]
            if summary["remote_port"]:
                where = f"[{where}]" if ":" in where else where
                where = f"{where}:{summary['remote_port']}"
            url = f"rtp://{where}/{quote(stream.call_id[:200], safe='@.-_~')}"
            out.append(CaptureEnd(tag, url, complete=end not in ("max_bytes", "max_packets")))
        if close:
            out.append(ChildClose(tag))
        return out

    def timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        for tag, stream in list(self.streams.items()):
            if stream.deadline(self.s.idle_timeout) <= now:
                out += self.finish(tag, "idle", now)
        for tag, sender in list(self.senders.items()):
            out += [ChildSend(tag, p, sender.to) for p in sender.due(now)]
            if sender.next() is None:
                del self.senders[tag]
        return out

    def deadline(self) -> float | None:
        times = [s.deadline(self.s.idle_timeout) for s in self.streams.values()]
        times += [t for t in (s.next() for s in self.senders.values()) if t is not None]
        return min(times) if times else None

    def finish_all(self, end: str, now: float) -> list[Action]:
        out: list[Action] = []
        for tag in list(self.opening) + list(self.streams):
            out += self.finish(tag, end, now)
        return out

    def set_codec(self, tag: str, codec: int, event_pt: int | None) -> None:
        """The caller's answer to our offer (a late offer's ACK) names the codec in use."""
        stream = self.streams.get(tag)
        if stream is not None and not stream.recorded:
            stream.codec = codec
            if event_pt is not None:
                stream.event_pt = event_pt
