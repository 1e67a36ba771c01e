"""One call's RTP stream as the PBX's media port sees it: RFC 3550 packets, RFC 4733 digits.

Pure bookkeeping, no I/O: `Stream.packet()` takes one datagram and its source and
says what to keep of it (the audio payload, for the recording); `Stream.summary()`
is the `sip.rtp` incident. Everything kept is bounded: payload types and SSRCs
by count, digits by length, packets and bytes by the configured limits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

#: static payload types of RFC 3551 that a recording can be written for
G711 = {0: "PCMU", 8: "PCMA"}
#: RFC 4733 §3.2 events 0-16
EVENTS = "0123456789*#ABCD!"
MAX_SSRCS = 16
MAX_TYPES = 32
MAX_DIGITS = 128
MAX_EVENTS_SEEN = 256

_HEAD = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class Packet:
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse(data: bytes) -> Packet | None:
    """An RTP packet, or None for anything that is not one (wrong version, short, RTCP)."""
    if len(data) < 12:
        return None
    b0, b1, seq, ts, ssrc = _HEAD.unpack_from(data)
    if b0 >> 6 != 2 or 200 <= b1 <= 204:  # not version 2, or RTCP SR..APP sharing the port
        return None
    end = len(data)
    if b0 & 0x20:  # padding: the last byte counts it
        pad = data[-1]
        if pad == 0 or pad > end - 12:
            return None
        end -= pad
    start = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: profile word and length in 32-bit words
        if start + 4 > end:
            return None
        start += 4 + 4 * int.from_bytes(data[start + 2:start + 4], "big")
    if start > end:
        return None
    return Packet(b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, data[start:end])


def au_header(payload_type: int) -> bytes:
    """Sun/NeXT .au header for 8 kHz mono G.711 (encoding 1 µ-law, 27 A-law), length unknown:
    the file can be written as the packets come, and players read to its end."""
    encoding = 27 if payload_type == 8 else 1
    return struct.pack("!4sIIIII", b".snd", 24, 0xFFFFFFFF, encoding, 8000, 1)


@dataclass(slots=True)
class Stream:
    """What arrived on one call's media port."""

    call_id: str
    local_port: int
    #: the only address whose packets count (the caller's, as seen on signalling)
    peer_host: str
    #: the codec agreed in the answer (0 or 8), the one the recording is written in
    codec: int
    #: the payload type the answer gave telephone-event
    event_pt: int
    max_packets: int
    max_bytes: int
    opened: float
    last: float = 0.0
    first: float | None = None
    source: tuple[str, int] | None = None
    packets: int = 0
    bytes: int = 0
    ignored: int = 0
    malformed: int = 0
    recorded: int = 0
    payload_types: dict[int, int] = field(default_factory=dict)
    ssrcs: list[int] = field(default_factory=list)
    digits: str = ""
    #: (ssrc, timestamp) of telephone events already counted: one digit per event
    events: list[tuple[int, int]] = field(default_factory=list)

    def packet(self, data: bytes, source: tuple[str, int] | None,
               now: float) -> tuple[bytes | None, str | None]:
        """Account one datagram: (audio payload to record or None, limit reached or None)."""
        if source is None or _plain(source[0]) != self.peer_host:
            self.ignored += 1
            return None, None
        if self.packets >= self.max_packets:
            return None, "max_packets"
        if self.bytes + len(data) > self.max_bytes:
            return None, "max_bytes"
        self.packets += 1
        self.bytes += len(data)
        self.last = now
        if self.first is None:
            self.first = now
            self.source = (_plain(source[0]), source[1])
        pkt = parse(data)
        if pkt is None:
            self.malformed += 1
            return None, None
        pt = pkt.payload_type
        if pt in self.payload_types or len(self.payload_types) < MAX_TYPES:
            self.payload_types[pt] = self.payload_types.get(pt, 0) + 1
        if pkt.ssrc not in self.ssrcs and len(self.ssrcs) < MAX_SSRCS:
            self.ssrcs.append(pkt.ssrc)
        if pt == self.event_pt:
            self._event(pkt)
            return None, None
        if pt == self.codec and pkt.payload:
            self.recorded += len(pkt.payload)
            return pkt.payload, None
        return None, None

    def _event(self, pkt: Packet) -> None:
        """RFC 4733: every packet of one event shares its timestamp (the end one is sent
        three times); a digit is counted once, at its first packet."""
        if len(pkt.payload) < 4:
            self.malformed += 1
            return
        key = (pkt.ssrc, pkt.timestamp)
        if key in self.events:
            return
        self.events.append(key)
        if len(self.events) > MAX_EVENTS_SEEN:
            del self.events[0]
        event = pkt.payload[0]
        if event < len(EVENTS) and len(self.digits) < MAX_DIGITS:
            self.digits += EVENTS[event]

    def deadline(self, idle: float) -> float:
        return (self.last or self.opened) + idle

    def summary(self, end: str, now: float) -> dict[str, Any]:
        duration = 0.0 if self.first is None else round(self.last - self.first, 3)
        return {
            "call_id": self.call_id[:256], "local_port": self.local_port,
            "remote_host": self.source[0] if self.source else self.peer_host,
            "remote_port": self.source[1] if self.source else None,
            "codec": G711.get(self.codec, str(self.codec)), "packets": self.packets,
            "bytes": self.bytes, "payload_types": sorted(self.payload_types),
            "ssrc": [f"{s:08x}" for s in self.ssrcs], "duration": duration,
            "dtmf": self.digits, "ignored": self.ignored, "malformed": self.malformed,
            "recorded": self.recorded, "end": end,
        }


def _plain(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") else host
