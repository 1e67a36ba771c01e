"""URLs and download commands inside SQL text, for `download.offer`.

Uses the shared extractor when the package has one; this small fallback keeps
the MySQL service working on its own.
"""

from __future__ import annotations

import re

try:  # the shared extractor, where present
    from muscipula.capture.urls import find_offers as _shared
except ImportError:  # pragma: no cover - depends on what is installed beside us
    _shared = None

_URL = re.compile(rb"""(?i)\b(?:https?|ftp|tftp)://[^\s'"`<>)(;|\\]{3,2048}""")
_HEX = re.compile(r"(?i)(?<![0-9a-z_])0x([0-9a-f]{16,})|unhex\(\s*'([0-9a-f]{16,})'")


def decoded_literals(text: str, limit: int = 1 << 20) -> list[bytes]:
    """Hex literals (0x.. and UNHEX('..')) decoded, for scanning payloads inside them."""
    out: list[bytes] = []
    total = 0
    for m in _HEX.finditer(text):
        digits = m.group(1) or m.group(2)
        if len(digits) % 2:
            digits = digits[:-1]
        total += len(digits) // 2
        if total > limit:
            break
        out.append(bytes.fromhex(digits))
    return out


def find_offers(text: str) -> list[str]:
    if _shared is not None:
        return list(_shared(text))
    seen: list[str] = []
    for m in _URL.finditer(text.encode("utf-8", "surrogateescape")):
        url = m.group(0).decode("utf-8", "replace").rstrip(".,")
        if url not in seen:
            seen.append(url)
    return seen


def offers_in_query(text: str) -> list[str]:
    found = find_offers(text)
    for blob in decoded_literals(text):
        if len(blob) > 65536:
            continue
        for url in find_offers(blob.decode("latin-1")):
            if url not in found:
                found.append(url)
    return found
