"""The compressed protocol (CLIENT_COMPRESS): zlib packets around the plain packet stream.

Once the login's OK is out, both sides wrap their packet stream in compressed
packets: a 3-byte compressed length, a 1-byte sequence of its own, a 3-byte
length before compression (0: stored as is), then the zlib data. The server's
reply to a command takes the sequence after the one the command came in.

A compressed packet says how big it inflates to, but a bomb can lie, so
inflating stops at the smaller of the declared size and `max_inflated`; anything
that would need more is refused before it is held.
"""

from __future__ import annotations

import zlib

from muscipula.protocols.mysql import wire as w

HEADER = 7
#: below this the server stores a payload as is (mysqld's MIN_COMPRESS_LENGTH)
MIN_COMPRESS_LENGTH = 50


class CompressError(Exception):
    """The peer's compressed stream cannot be used; `code` is mysqld's error number."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class Inflater:
    """Compressed packets in, (sequence, plain bytes) out; holds at most one packet."""

    __slots__ = ("buf", "max_inflated", "max_raw")

    def __init__(self, max_raw: int, max_inflated: int) -> None:
        self.buf = bytearray()
        self.max_raw = max_raw
        self.max_inflated = max_inflated

    def buffered(self) -> int:
        return len(self.buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Complete packets so far; raises CompressError on a bad or oversized one."""
        self.buf += data
        out: list[tuple[int, bytes]] = []
        buf = self.buf
        while len(buf) >= HEADER:
            size = buf[0] | buf[1] << 8 | buf[2] << 16
            seq = buf[3]
            inflated = buf[4] | buf[5] << 8 | buf[6] << 16
            if size > self.max_raw or inflated > self.max_inflated:
                buf.clear()
                raise CompressError(1153, "compressed packet too large")
            if len(buf) < HEADER + size:
                break
            body = bytes(buf[HEADER:HEADER + size])
            del buf[:HEADER + size]
            out.append((seq, body if inflated == 0 else self._inflate(body, inflated)))
        return out

    def _inflate(self, body: bytes, declared: int) -> bytes:
        d = zlib.decompressobj()
        try:
            plain = d.decompress(body, declared + 1)
        except zlib.error:
            self.buf.clear()
            raise CompressError(1157, "zlib data error") from None
        if len(plain) != declared or d.unconsumed_tail:
            self.buf.clear()
            raise CompressError(1157, f"inflated to {len(plain)} bytes, declared {declared}")
        return plain


def deflate(data: bytes, seq: int) -> tuple[bytes, int]:
    """`data` (plain packets) as compressed packets from `seq`; returns them and the next seq."""
    out = bytearray()
    view = memoryview(data)
    while True:
        chunk = bytes(view[:w.MAX_CHUNK])
        view = view[w.MAX_CHUNK:]
        body, size = chunk, 0
        if len(chunk) >= MIN_COMPRESS_LENGTH:
            packed = zlib.compress(chunk)
            if len(packed) < len(chunk):
                body, size = packed, len(chunk)
        out += len(body).to_bytes(3, "little") + bytes((seq & 0xFF,)) \
            + size.to_bytes(3, "little") + body
        seq = (seq + 1) & 0xFF
        if not len(view):
            return bytes(out), seq
