"""Download offers inside SQL text, including inside hex literals (UDF droppers)."""

from __future__ import annotations

import re

from muscipula.capture.urls import find_offers

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


def offers_in_query(text: str) -> list[str]:
    found = find_offers(text)
    for blob in decoded_literals(text):
        if len(blob) > 65536:
            continue
        for url in find_offers(blob.decode("latin-1")):
            if url not in found:
                found.append(url)
    return found
