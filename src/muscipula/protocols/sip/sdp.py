"""The parts of an SDP body (RFC 4566) that the reference system's sip_sdp_* tables keep.

Only `o=`, `c=` and `m=` lines are read; anything else is left alone. Returns
None for a body that is not SDP at all, so the caller can answer 400 as a PBX
does for an unreadable offer. `audio_offer` reads the first audio stream's
payload types and rtpmap names, from which the answer's codec is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_MEDIA = 16
MAX_FORMATS = 32


def parse(body: bytes) -> dict[str, Any] | None:
    text = body.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("v="):
        return None
    origin: dict[str, Any] | None = None
    conns: list[dict[str, Any]] = []
    medias: list[dict[str, Any]] = []
    for line in lines:
        kind, sep, value = line.partition("=")
        if not sep or len(kind) != 1:
            return None
        words = value.split()
        if kind == "o" and origin is None and len(words) >= 6:
            origin = {"username": words[0], "sess_id": words[1], "sess_version": words[2],
                      "nettype": words[3], "addrtype": words[4],
                      "unicast_address": words[5]}
        elif kind == "c" and len(words) >= 3 and len(conns) < MAX_MEDIA:
            addr, ttl, count = _multicast(words[2])
            conns.append({"nettype": words[0], "addrtype": words[1],
                          "connection_address": addr, "ttl": ttl,
                          "number_of_addresses": count})
        elif kind == "m" and len(words) >= 3 and len(medias) < MAX_MEDIA:
            port, _, nports = words[1].partition("/")
            medias.append({"media": words[0], "port": port,
                           "number_of_ports": nports or None, "proto": words[2],
                           "formats": words[3:16]})
    return {"o": origin, "c": conns, "m": medias}


def _multicast(text: str) -> tuple[str, str | None, str | None]:
    """`224.2.1.1/127/3` → address, ttl, number of addresses."""
    addr, *rest = text.split("/")
    ttl = rest[0] if rest else None
    count = rest[1] if len(rest) > 1 else None
    return addr, ttl, count


@dataclass(frozen=True, slots=True)
class AudioOffer:
    """What an offer's first audio stream asks for: its payload types in preference order
    and their rtpmap names, enough to pick the answer's codec and DTMF type."""

    port: int
    formats: tuple[int, ...]
    names: dict[int, str]

    def codec(self, supported: dict[int, str]) -> int | None:
        """The first offered type we also speak, by number or by its rtpmap name."""
        wanted = {name: pt for pt, name in supported.items()}
        for pt in self.formats:
            name = self.names.get(pt)
            if name is None and pt in supported:
                return pt
            if name is not None and wanted.get(name) == pt:
                return pt
        return None

    def event_type(self) -> int | None:
        for pt in self.formats:
            if self.names.get(pt) == "TELEPHONE-EVENT":
                return pt
        return None


def audio_offer(body: bytes) -> AudioOffer | None:
    """The first `m=audio` of an SDP body and its `a=rtpmap` names (upper case, no rate);
    None when there is no audio stream (or no SDP)."""
    text = body.decode("utf-8", "replace").replace("\r\n", "\n")
    port: int | None = None
    formats: list[int] = []
    names: dict[int, str] = {}
    for line in text.split("\n"):
        line = line.strip()
        if line.startswith("m="):
            if port is not None:
                break  # the next media section: only the first audio one counts
            words = line[2:].split()
            if len(words) >= 3 and words[0] == "audio" and _number(words[1].split("/")[0]):
                port = int(words[1].split("/")[0])
                formats = [int(w) for w in words[3:3 + MAX_FORMATS]
                           if _number(w) and int(w) < 128]
        elif line.startswith("a=rtpmap:") and port is not None and len(names) < MAX_FORMATS:
            pt_text, _, rest = line[9:].partition(" ")
            if _number(pt_text) and int(pt_text) < 128:
                names[int(pt_text)] = rest.split("/")[0].strip().upper()[:32]
    if port is None:
        return None
    return AudioOffer(port, tuple(formats), names)


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5
