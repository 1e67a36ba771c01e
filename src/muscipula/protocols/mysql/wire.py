"""MySQL packet framing and the small encoders every reply is built from.

A packet is a 3-byte little-endian length, a 1-byte sequence number and the
payload; payloads of 0xFFFFFF bytes continue in the next packet. Length-encoded
integers and strings are the protocol's variable-size fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_CHUNK = 0xFFFFFF

# capability flags
LONG_PASSWORD = 1
FOUND_ROWS = 1 << 1
LONG_FLAG = 1 << 2
CONNECT_WITH_DB = 1 << 3
NO_SCHEMA = 1 << 4
COMPRESS = 1 << 5
ODBC = 1 << 6
LOCAL_FILES = 1 << 7
IGNORE_SPACE = 1 << 8
PROTOCOL_41 = 1 << 9
INTERACTIVE = 1 << 10
SSL = 1 << 11
IGNORE_SIGPIPE = 1 << 12
TRANSACTIONS = 1 << 13
RESERVED = 1 << 14
SECURE_CONNECTION = 1 << 15
MULTI_STATEMENTS = 1 << 16
MULTI_RESULTS = 1 << 17
PS_MULTI_RESULTS = 1 << 18
PLUGIN_AUTH = 1 << 19
CONNECT_ATTRS = 1 << 20
PLUGIN_AUTH_LENENC = 1 << 21
CAN_HANDLE_EXPIRED = 1 << 22
SESSION_TRACK = 1 << 23
DEPRECATE_EOF = 1 << 24
OPTIONAL_METADATA = 1 << 25
ZSTD = 1 << 26
QUERY_ATTRIBUTES = 1 << 27
MULTI_FACTOR_AUTH = 1 << 28
SSL_VERIFY_SERVER_CERT = 1 << 30
REMEMBER_OPTIONS = 1 << 31

# status flags
STATUS_IN_TRANS = 0x0001
STATUS_AUTOCOMMIT = 0x0002
STATUS_MORE_RESULTS = 0x0008
STATUS_CURSOR_EXISTS = 0x0040
STATUS_LAST_ROW_SENT = 0x0080
STATUS_NO_INDEX_USED = 0x0020

# column types
T_DECIMAL = 0x00
T_TINY = 0x01
T_SHORT = 0x02
T_LONG = 0x03
T_FLOAT = 0x04
T_DOUBLE = 0x05
T_NULL = 0x06
T_TIMESTAMP = 0x07
T_LONGLONG = 0x08
T_INT24 = 0x09
T_DATE = 0x0A
T_TIME = 0x0B
T_DATETIME = 0x0C
T_YEAR = 0x0D
T_VARCHAR = 0x0F
T_JSON = 0xF5
T_NEWDECIMAL = 0xF6
T_BLOB = 0xFC
T_VAR_STRING = 0xFD
T_STRING = 0xFE

# column flags
F_NOT_NULL = 1
F_PRI_KEY = 2
F_BLOB = 16
F_UNSIGNED = 32
F_BINARY = 128
F_AUTO_INCREMENT = 512
F_NUM = 32768

# COM_STMT_EXECUTE flags
CURSOR_TYPE_READ_ONLY = 0x01

# commands (dionaea's mysql_command_ops numbering)
COMMANDS = {
    0: "COM_SLEEP", 1: "COM_QUIT", 2: "COM_INIT_DB", 3: "COM_QUERY", 4: "COM_FIELD_LIST",
    5: "COM_CREATE_DB", 6: "COM_DROP_DB", 7: "COM_REFRESH", 8: "COM_SHUTDOWN",
    9: "COM_STATISTICS", 10: "COM_PROCESS_INFO", 11: "COM_CONNECT", 12: "COM_PROCESS_KILL",
    13: "COM_DEBUG", 14: "COM_PING", 15: "COM_TIME", 16: "COM_DELAYED_INSERT",
    17: "COM_CHANGE_USER", 18: "COM_BINLOG_DUMP", 19: "COM_TABLE_DUMP", 20: "COM_CONNECT_OUT",
    21: "COM_REGISTER_SLAVE", 22: "COM_STMT_PREPARE", 23: "COM_STMT_EXECUTE",
    24: "COM_STMT_SEND_LONG_DATA", 25: "COM_STMT_CLOSE", 26: "COM_STMT_RESET",
    27: "COM_SET_OPTION", 28: "COM_STMT_FETCH", 29: "COM_DAEMON", 30: "COM_BINLOG_DUMP_GTID",
    31: "COM_RESET_CONNECTION",
}


class Truncated(Exception):
    """A field ran past the end of its packet."""


def lenenc_int(n: int) -> bytes:
    if n < 251:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def lenenc_str(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return lenenc_int(len(data)) + data


def frame(seq: int, payload: bytes) -> bytes:
    """One logical payload as wire packets (split at 16 MiB, as the server does)."""
    out = bytearray()
    while True:
        chunk = payload[:MAX_CHUNK]
        payload = payload[MAX_CHUNK:]
        out += struct.pack("<I", len(chunk))[:3] + bytes((seq & 0xFF,)) + chunk
        seq += 1
        if len(chunk) < MAX_CHUNK:
            return bytes(out)


@dataclass(slots=True)
class Reader:
    """A cursor over one payload; every read raises Truncated instead of IndexError."""

    data: bytes
    pos: int = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Truncated
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def int_lenenc(self) -> int | None:
        first = self.u8()
        if first < 0xFB:
            return first
        if first == 0xFB:
            return None
        if first == 0xFC:
            return self.u16()
        if first == 0xFD:
            return int.from_bytes(self.take(3), "little")
        if first == 0xFE:
            return int(struct.unpack("<Q", self.take(8))[0])
        raise Truncated

    def str_lenenc(self) -> bytes:
        n = self.int_lenenc()
        return self.take(n or 0)

    def str_null(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise Truncated
        out = self.data[self.pos:end]
        self.pos = end + 1
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


class Deframer:
    """Reassembles payloads from the byte stream, holding at most `limit` bytes."""

    __slots__ = ("buf", "limit", "parts", "parts_size")

    def __init__(self, limit: int) -> None:
        self.buf = bytearray()
        self.limit = limit
        self.parts: list[bytes] = []
        self.parts_size = 0

    def buffered(self) -> int:
        return len(self.buf) + self.parts_size

    def feed(self, data: bytes, most: int | None = None) -> list[tuple[int, bytes]] | None:
        """Complete (seq, payload) pairs; None when a payload would exceed the limit.

        With `most`, no more than that many: the rest stays buffered for the caller,
        which must then stop taking input (the connection is being closed).
        """
        self.buf += data
        out: list[tuple[int, bytes]] = []
        buf = self.buf
        while len(buf) >= 4:
            if most is not None and len(out) >= most:
                return out
            size = buf[0] | buf[1] << 8 | buf[2] << 16
            if self.parts_size + size > self.limit:
                self.buf.clear()
                self.parts.clear()
                self.parts_size = 0
                return None
            if len(buf) < 4 + size:
                break
            seq = buf[3]
            chunk = bytes(buf[4:4 + size])
            del buf[:4 + size]
            if size == MAX_CHUNK:
                self.parts.append(chunk)
                self.parts_size += size
                continue
            if self.parts:
                chunk = b"".join(self.parts) + chunk
                self.parts = []
                self.parts_size = 0
            out.append((seq, chunk))
        if len(buf) > self.limit + 4:
            buf.clear()
            return None
        return out


def ok_payload(affected: int = 0, insert_id: int = 0, status: int = STATUS_AUTOCOMMIT,
               warnings: int = 0, info: str = "", header: int = 0x00,
               session_track: bool = False) -> bytes:
    out = (bytes((header,)) + lenenc_int(affected) + lenenc_int(insert_id)
           + struct.pack("<HH", status, warnings))
    if session_track:
        if info:
            out += lenenc_str(info)
    elif info:
        out += info.encode()
    return out


def eof_payload(status: int = STATUS_AUTOCOMMIT, warnings: int = 0) -> bytes:
    return b"\xfe" + struct.pack("<HH", warnings, status)


def err_payload(code: int, state: str, message: str) -> bytes:
    return (b"\xff" + struct.pack("<H", code) + b"#" + state.encode()[:5]
            + message.encode("utf-8", "replace"))
