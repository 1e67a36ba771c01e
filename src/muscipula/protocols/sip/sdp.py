"""The parts of an SDP body (RFC 4566) that the reference system's sip_sdp_* tables keep.

Only `o=`, `c=` and `m=` lines are read; anything else is left alone. Returns
None for a body that is not SDP at all, so the caller can answer 400 as a PBX
does for an unreadable offer.
"""

from __future__ import annotations

from typing import Any

MAX_MEDIA = 16


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
