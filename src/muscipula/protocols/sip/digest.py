"""HTTP digest for SIP (RFC 2617 / 7616 with MD5): nonces, checking answers, hashcat lines.

Nonces are made from the per-install secret and the time, in the product's
shape, so two installs (or two minutes) never share one and a nonce can be
checked for its age without remembering it.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from muscipula.protocols.sip.message import digits

_PARAM = re.compile(r'\s*+([A-Za-z0-9_\-]++)\s*+=\s*+("(?:[^"\\]|\\.)*+"|[^\s,]*+)\s*+,?')
#: an Authorization value longer than this is not read further (real ones are ~300 bytes)
MAX_AUTH = 4096


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogateescape")).hexdigest()


def parse_auth(value: str) -> dict[str, str] | None:
    """`Digest username="100", realm=...` → its parameters (lower-case names)."""
    scheme, _, rest = value.strip()[:MAX_AUTH].partition(" ")
    if scheme.lower() != "digest":
        return None
    out: dict[str, str] = {}
    pos, end = 0, len(rest)
    while pos < end and len(out) < 32:  # one pass: what does not parse is skipped to a comma
        m = _PARAM.match(rest, pos)
        if m is None:
            comma = rest.find(",", pos)
            if comma < 0:
                break
            pos = comma + 1
            continue
        pos = m.end()
        raw = m.group(2)
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out.setdefault(m.group(1).lower(), raw[:1024])
    return out


def expected(fields: dict[str, str], method: str, password: str) -> str:
    """The response a client knowing `password` would send for these fields."""
    ha1 = md5(f"{fields.get('username', '')}:{fields.get('realm', '')}:{password}")
    ha2 = md5(f"{method}:{fields.get('uri', '')}")
    qop = fields.get("qop", "")
    if qop:
        return md5(f"{ha1}:{fields.get('nonce', '')}:{fields.get('nc', '')}:"
                   f"{fields.get('cnonce', '')}:{qop}:{ha2}")
    return md5(f"{ha1}:{fields.get('nonce', '')}:{ha2}")


def matches(fields: dict[str, str], method: str, password: str) -> bool:
    got = fields.get("response", "").lower()
    return hmac.compare_digest(got.encode(), expected(fields, method, password).encode())


class Nonces:
    """Makes nonces `<time><mac>` in a product's style and tells whether one is ours and fresh."""

    def __init__(self, secret: bytes, style: str, lifetime: float) -> None:
        self.secret = secret
        self.style = style
        self.lifetime = lifetime

    def _mac(self, stamp: str, peer: str) -> str:
        return hmac.new(self.secret, f"{stamp}/{peer}".encode(), hashlib.md5).hexdigest()

    def make(self, now: float, peer: str) -> str:
        stamp = str(int(now))
        mac = self._mac(stamp, peer)
        if self.style == "3cx":
            # 3CX: hex bytes of "AMS\\" and a counter, a colon, 32 hex digits
            return f"414d535c{int(now) & 0xFFFFFFFFFF:010x}:{mac}"
        return f"{stamp}/{mac}"

    def fresh(self, nonce: str, now: float, peer: str) -> bool:
        if self.style == "3cx":
            head, _, mac = nonce.partition(":")
            if not head.startswith("414d535c"):
                return False
            try:
                stamp = str(int(head[8:], 16))
            except ValueError:
                return False
        else:
            stamp, _, mac = nonce.partition("/")
            if not digits(stamp):
                return False
        if not hmac.compare_digest(mac.encode(), self._mac(stamp, peer).encode()):
            return False
        return 0 <= (int(now) & 0xFFFFFFFFFF) - int(stamp) <= self.lifetime


def hashcat(fields: dict[str, str], method: str, server: str, client: str) -> str:
    """The answer as hashcat mode 11400 (`$sip$*...`), to crack offline."""
    uri = fields.get("uri", "")
    prefix, _, resource = uri.partition(":")
    suffix = ""
    head, sep, tail = resource.rpartition(":")
    if sep and digits(tail) and "]" not in tail:
        resource, suffix = head, tail
    parts = [server, client, fields.get("username", ""), fields.get("realm", ""), method,
             prefix, resource, suffix, fields.get("nonce", ""), fields.get("cnonce", ""),
             fields.get("nc", ""), fields.get("qop", ""), "MD5",
             fields.get("response", "").lower()]
    return "$sip$*" + "*".join(p.replace("*", "") for p in parts)
