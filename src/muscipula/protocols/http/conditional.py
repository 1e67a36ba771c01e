"""Validators and byte ranges for static files: the parsing both server profiles share.

What each server then does with them (exact or ordered date match, which range
forms it takes, what it answers to a bad one) stays in its own profile.
"""

from __future__ import annotations

import calendar
from email.utils import parsedate_tz

#: largest off_t / LONGLONG: a bound past it is an overflow to both servers
MAX_OFFSET = 2**63 - 1
#: Range refused outright (416)
UNSATISFIABLE = "unsatisfiable"


def http_time(value: str | None) -> int | None:
    """Seconds since the epoch of an RFC 1123, RFC 850 or asctime date, or None."""
    if not value:
        return None
    try:
        parts = parsedate_tz(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parts is None:
        return None
    try:
        return calendar.timegm(parts[:6]) - (parts[9] or 0)
    except (OverflowError, ValueError):
        return None


def etag_listed(header: str, etag: str, weak: bool) -> bool:
    """True if the comma separated list holds `etag` (or is `*`); `weak` ignores W/."""
    if header.strip() == "*":
        return True
    want = etag[2:] if weak and etag.startswith("W/") else etag
    for item in header.split(","):
        tag = item.strip()
        if weak and tag.startswith("W/"):
            tag = tag[2:]
        if tag == want:
            return True
    return False


def nginx_ranges(value: str, length: int) -> list[tuple[int, int]] | str | None:
    """ngx_http_range_parse over the part after `bytes=`: [start, end) pairs, the string
    UNSATISFIABLE (416), or None when nginx declines and sends the whole file."""
    p, n, i = value, len(value), 0
    cutoff, cutlim = divmod(MAX_OFFSET, 10)
    ranges: list[tuple[int, int]] = []
    size = 0

    def at(k: int) -> str:
        return p[k] if k < n else "\0"

    def digit(k: int) -> bool:
        return "0" <= at(k) <= "9"

    def number(k: int) -> tuple[int, int] | None:
        """The decimal at k and the index after it; None past the cut-off (as nginx)."""
        value = 0
        while digit(k):
            d = ord(p[k]) - 48
            if value >= cutoff and (value > cutoff or d > cutlim):
                return None
            value = value * 10 + d
            k += 1
        return value, k

    while True:
        start = end = 0
        suffix = False
        while at(i) == " ":
            i += 1
        whole = False
        if at(i) != "-":
            if not digit(i) or (got := number(i)) is None:
                return UNSATISFIABLE
            start, i = got
            while at(i) == " ":
                i += 1
            if at(i) != "-":
                return UNSATISFIABLE
            i += 1
            while at(i) == " ":
                i += 1
            if at(i) in (",", "\0"):
                end, whole = length, True
        else:
            suffix = True
            i += 1
        if not whole:
            if not digit(i) or (got := number(i)) is None:
                return UNSATISFIABLE
            end, i = got
            while at(i) == " ":
                i += 1
            if at(i) not in (",", "\0"):
                return UNSATISFIABLE
            if suffix:
                start = length - end if end < length else 0
                end = length - 1
            end = length if end >= length else end + 1
        if start < end:
            ranges.append((start, end))
            size += end - start
        elif start == 0:
            return None
        if at(i) != ",":
            break
        i += 1
    if not ranges:
        return UNSATISFIABLE
    if size > length:
        return None
    return ranges


def simple_range(value: str, length: int) -> tuple[int, int] | str | None:
    """One RFC 7233 byte range after `bytes=`: [start, end), UNSATISFIABLE, None when the
    header is not one well formed range, or "overflow" when a bound passes MAX_OFFSET."""
    spec = value.strip()
    if "," in spec or "-" not in spec:
        return None
    first, _, last = (s.strip() for s in spec.partition("-"))
    if (first and not first.isascii()) or (last and not last.isascii()):
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
        return None
    lo = int(first) if first else None
    hi = int(last) if last else None
    if (lo is not None and lo > MAX_OFFSET) or (hi is not None and hi > MAX_OFFSET):
        return "overflow"
    if lo is None:  # the last `hi` bytes
        assert hi is not None
        if hi == 0 or length == 0:
            return UNSATISFIABLE
        return max(length - hi, 0), length
    if hi is not None and hi < lo:
        return None
    if lo >= length:
        return UNSATISFIABLE
    return lo, length if hi is None or hi >= length else hi + 1
