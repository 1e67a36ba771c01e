"""One parsed request, and the small helpers every server profile needs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_dates: dict[int, str] = {}


def http_date(ts: float) -> str:
    """RFC 7231 IMF-fixdate; cached by second because every answer carries one (and a file
    answer also its Last-Modified, so one slot would be overwritten twice a request)."""
    sec = int(ts)
    text = _dates.get(sec)
    if text is None:
        if len(_dates) >= 256:
            _dates.clear()
        t = time.gmtime(sec)
        text = _dates[sec] = (
            f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
    return text


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str  # "1.0", "1.1"
    headers: list[tuple[str, str]] = field(default_factory=list)
    keep_alive: bool = True
    chunked: bool = False
    length: int | None = None
    body: bytearray = field(default_factory=bytearray)
    body_size: int = 0
    #: the raw head as received (TRACE echoes it)
    raw_head: bytes = b""
    #: set once the answer is decided
    status: int = 0

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def host(self) -> str:
        return self.header("host") or ""

    @property
    def head_only(self) -> bool:
        return self.method == "HEAD"


@dataclass(slots=True)
class Context:
    """What an answer depends on beyond the request: time and the local side."""

    now: float
    keep_alive: bool
    scheme: str
    local_port: int

    def base_url(self, host: str) -> str:
        """scheme://host[:port] as a redirect names this server."""
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.local_port == default else f":{self.local_port}"
        return f"{self.scheme}://{name}{port}"


@dataclass(slots=True)
class Reply:
    status: int
    data: bytes
    close: bool = False
