"""TFTP packets (RFC 1350, 2347) and the error texts tftpd-hpa 5.2 puts in them.

tftpd-hpa words its own errors; where it reports an errno it sends code 0 with
the C library's strerror() text ("Is a directory", "Permission denied"). Those
exact strings are what a scanner compares, so they live here once.
"""

from __future__ import annotations

import struct

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
OPCODE_NAMES = {RRQ: "RRQ", WRQ: "WRQ", DATA: "DATA", ACK: "ACK", ERROR: "ERROR", OACK: "OACK"}

# error codes (RFC 1350 section 5, RFC 2347)
EUNDEF, ENOTFOUND, EACCESS, ENOSPACE, EBADOP, EBADID, EEXISTS, ENOUSER, EOPTNEG = range(9)

#: tftpd-hpa 5.2's default text for each code
DEFAULT_TEXT = {
    EUNDEF: "Undefined error code",
    ENOTFOUND: "File not found",
    EACCESS: "Access denied",
    ENOSPACE: "Disk full or allocation exceeded",
    EBADOP: "Illegal TFTP operation",
    EBADID: "Unknown transfer ID",
    EEXISTS: "File already exists",
    ENOUSER: "No such user",
    EOPTNEG: "Failure to negotiate RFC2347 options",
}

# the request-parsing and option errors tftpd-hpa 5.2 names itself
NOT_TERMINATED = "Request not null-terminated"
MISSING_MODE = "Missing mode"
UNKNOWN_MODE = "Unknown mode"
UNSUPPORTED_OPTIONS = "Unsupported option(s) requested"
# strerror() texts sent with code 0
IS_A_DIRECTORY = "Is a directory"
PERMISSION_DENIED = "Permission denied"

MODES = ("netascii", "octet")
SEGSIZE = 512
MAX_SEGSIZE = 65464  # tftpd-hpa's largest block: 65535 less the IP, UDP and TFTP headers


def error(code: int, text: str | None = None) -> bytes:
    message = DEFAULT_TEXT.get(code, "Request failed") if text is None else text
    return struct.pack("!HH", ERROR, code) + message.encode() + b"\0"


def data(block: int, payload: bytes) -> bytes:
    return struct.pack("!HH", DATA, block) + payload


def ack(block: int) -> bytes:
    return struct.pack("!HH", ACK, block)


def oack(options: list[tuple[bytes, bytes]]) -> bytes:
    return struct.pack("!H", OACK) + b"".join(k + b"\0" + v + b"\0" for k, v in options)


def opcode(packet: bytes) -> int:
    return int.from_bytes(packet[:2], "big") if len(packet) >= 2 else -1


def block_of(packet: bytes) -> int:
    return int.from_bytes(packet[2:4], "big")


def parse_error(packet: bytes) -> tuple[int, str]:
    code = block_of(packet) if len(packet) >= 4 else 0
    text = packet[4:].split(b"\0", 1)[0]
    return code, text[:200].decode("utf-8", "backslashreplace")
