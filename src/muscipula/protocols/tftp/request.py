"""Reading an RRQ/WRQ and negotiating its options the way tftpd-hpa 5.2 does.

The order of checks is part of the fingerprint: an unterminated filename or
mode is refused first, then the mode, then the file itself, and only then the
options, one by one, each able to end the request with error 8. Unknown
options, empty ones and values that are not numbers are ignored silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from muscipula.protocols.tftp import wire


@dataclass(slots=True)
class Request:
    opcode: int
    filename: bytes = b""
    mode: bytes | None = None
    #: refused before the mode is looked at (an unterminated filename or mode)
    early_error: str | None = None
    #: complete option pairs, in the order they came
    options: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: an unterminated string after the mode: refused once the options before it pass
    late_error: str | None = None


def parse(packet: bytes) -> Request:
    """Split the strings of a request packet; never raises."""
    req = Request(wire.opcode(packet))
    body = packet[2:]
    end = len(body)
    strings: list[bytes] = []
    pos = 0
    while pos < end and body[pos] != 0:
        nul = body.find(b"\0", pos)
        if nul < 0:
            if len(strings) < 2:
                req.early_error = wire.NOT_TERMINATED
            else:
                req.late_error = wire.NOT_TERMINATED
            break
        strings.append(body[pos:nul])
        pos = nul + 1
    if strings:
        req.filename = strings[0]
    if len(strings) >= 2:
        req.mode = strings[1]
    rest = strings[2:]
    req.options = [(rest[i], rest[i + 1]) for i in range(0, len(rest) - 1, 2)]
    return req


def number(text: bytes) -> int | None:
    """strtoumax() with a full-string check: None where tftpd-hpa ignores the option."""
    s = text.lstrip(b" \t\n\v\f\r")
    negative = False
    if s[:1] in (b"+", b"-"):
        negative = s[:1] == b"-"
        s = s[1:]
    if not s or not s.isdigit():
        return None
    value = int(s)
    if value >= 1 << 64:
        return None  # ERANGE
    return (-value) % (1 << 64) if negative else value


@dataclass(frozen=True, slots=True)
class Limits:
    max_blksize: int
    windowsize: bool
    max_windowsize: int
    max_window_bytes: int


@dataclass(slots=True)
class Params:
    """What a transfer runs with once its options are agreed."""

    blksize: int = wire.SEGSIZE
    timeout: float | None = None  # seconds, from the client's timeout/utimeout
    tsize: int | None = None
    windowsize: int = 1
    rollover: int = 0
    oack: list[tuple[bytes, bytes]] = field(default_factory=list)


def negotiate(req: Request, size: int | None, netascii: bool,
              limits: Limits) -> tuple[Params, str | None]:
    """The agreed parameters, or the error-8 text that ends the request.

    `size` is the file's size for a read in octet mode (tsize is refused in
    netascii mode, whose size tftpd-hpa cannot know), None for a write.
    """
    p = Params()
    reading = req.opcode == wire.RRQ
    window: tuple[bytes, int] | None = None
    for name, raw in req.options:
        if not name or not raw:
            continue
        value = number(raw)
        if value is None:
            continue
        key = name.lower()
        if key in (b"blksize", b"blksize2"):
            if value < 8:
                return p, wire.UNSUPPORTED_OPTIONS
            if value > limits.max_blksize:
                value = limits.max_blksize
            elif key == b"blksize2":
                value = 1 << (value.bit_length() - 1)  # down to a power of two
            p.blksize = value
        elif key == b"tsize":
            if reading and netascii:
                return p, wire.UNSUPPORTED_OPTIONS
            if value == 0 and reading:
                value = size or 0
            p.tsize = value
        elif key == b"timeout":
            if not 1 <= value <= 255:
                return p, wire.UNSUPPORTED_OPTIONS
            p.timeout = float(value)
        elif key == b"utimeout":
            if not 10_000 <= value <= 255_000_000:
                return p, wire.UNSUPPORTED_OPTIONS
            p.timeout = value / 1e6
        elif key == b"rollover":
            if value > 65535:
                return p, wire.UNSUPPORTED_OPTIONS
            p.rollover = value
        elif key == b"windowsize" and limits.windowsize:
            if not 1 <= value <= 65535:
                return p, wire.UNSUPPORTED_OPTIONS
            window = (name, value)
            continue  # answered last: it depends on the block size
        else:
            continue
        p.oack.append((name, str(value).encode()))
    if window is not None:
        name, value = window
        fit = max(limits.max_window_bytes // p.blksize, 1)
        p.windowsize = max(min(value, limits.max_windowsize, fit), 1)
        p.oack.append((name, str(p.windowsize).encode()))
    return p, None
