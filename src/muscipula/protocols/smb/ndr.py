"""NDR (transfer syntax 8a885d04, little-endian) as MS-SRVS and MS-WKST calls need it:
aligned integers, unique pointers and conformant varying UTF-16 strings."""

from __future__ import annotations

import struct

#: Windows numbers referents from here, four apart
REFERENT_BASE = 0x00020000


class Writer:
    """Builds a stub; deferred pointees are written by the caller in NDR order."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.next_ref = REFERENT_BASE

    def align(self, n: int) -> None:
        self.buf += bytes((n - len(self.buf) % n) % n)

    def u32(self, value: int) -> None:
        self.align(4)
        self.buf += struct.pack("<I", value & 0xFFFFFFFF)

    def ref(self, present: bool = True) -> None:
        """A unique (or full) pointer's referent id; 0 for NULL."""
        if present:
            self.u32(self.next_ref)
            self.next_ref += 4
        else:
            self.u32(0)

    def string(self, text: str) -> None:
        """A conformant varying, NUL-terminated UTF-16 string."""
        raw = text.encode("utf-16-le") + b"\0\0"
        count = len(raw) // 2
        self.u32(count)
        self.u32(0)
        self.u32(count)
        self.buf += raw
        self.align(4)

    def bytes(self) -> bytes:
        return bytes(self.buf)


class Reader:
    """Bounded reading of a request stub: every read past the end raises ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def align(self, n: int) -> None:
        self.pos += (n - self.pos % n) % n

    def u32(self) -> int:
        self.align(4)
        if self.pos + 4 > len(self.data):
            raise ValueError("stub too short")
        value = struct.unpack_from("<I", self.data, self.pos)[0]
        self.pos += 4
        return value

    def string(self, limit: int = 4096) -> str:
        """A conformant varying UTF-16 string (its counts checked against the stub)."""
        max_count, offset, actual = self.u32(), self.u32(), self.u32()
        if actual > max_count or offset > max_count or actual > limit:
            raise ValueError("bad string counts")
        end = self.pos + 2 * actual
        if end > len(self.data):
            raise ValueError("string past the stub")
        text = self.data[self.pos:end].decode("utf-16-le", "replace").rstrip("\0")
        self.pos = end
        return text

    def unique_string(self, limit: int = 4096) -> str | None:
        """A [unique, string] wchar_t*: NULL or the string."""
        return self.string(limit) if self.u32() else None
