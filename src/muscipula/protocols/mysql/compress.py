"""The compressed protocol (CLIENT_COMPRESS): zlib packets around the plain packet stream.

Once the login's OK is out, both sides wrap their packet stream in compressed
packets: a 3-byte compressed length, a 1-byte sequence of its own, a 3-byte
length before compression (0: stored as is), then the zlib data. The server's
reply to a command takes the sequence after the one the command came in.

A compressed packet says how big it inflates to, but a bomb can lie, so
inflating stops at the smaller of the declared size and `max_inflated`; anything
that would need more is refused before it is held. What a connection inflates in
all has its own budget, since a small packet can inflate to a flood of commands.
"""

from __future__ import annotations

import zlib

from muscipula.protocols.mysql import wire as w

HEADER = 7
#: below this the server stores a payload as is (mysqld's MIN_COMPRESS_LENGTH)
MIN_COMPRESS_LENGTH = 50


class CompressError(Exception):
    """The peer's compressed stream cannot be used; `code` is mysqld's error number.

    `seq` is the compressed sequence of the packet at fault; `limit` names the
    configured budget it used up, if that is why.
    """

    def __init__(self, code: int, detail: str, seq: int, limit: str = "") -> None:
        super().__init__(detail)
        self.code = code
        self.seq = seq
        self.limit = limit


class Inflater:
    """Compressed packets in, one (sequence, plain bytes) at a time out.

    Only one packet is inflated at a time, so a read of many packets never holds
    all their plain bytes together. `budget` is what the connection may still
    inflate in all: compressed bytes are what `max_bytes_in` counts, and a
    packet of pings a thousand times its size must not get past that bound.
    """

    __slots__ = ("budget", "buf", "max_inflated", "max_raw", "pos", "ratio", "room")

    def __init__(self, max_raw: int, max_inflated: int, budget: int, ratio: int = 32,
                 slack: int = 256 * 1024) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.max_raw = max_raw
        self.max_inflated = max_inflated
        self.budget = budget
        #: plain bytes allowed per compressed byte; `room` is what may still be inflated
        #: given the compressed bytes seen so far (it grows by `ratio` per byte)
        self.ratio = ratio
        self.room = slack

    def buffered(self) -> int:
        return len(self.buf) - self.pos

    def feed(self, data: bytes) -> None:
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def next(self) -> tuple[int, bytes] | None:
        """The next complete packet, inflated; None until one is complete.

        Raises CompressError on a bad or oversized packet, or once the budget is spent.
        """
        buf, pos = self.buf, self.pos
        if len(buf) - pos < HEADER:
            return None
        size = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        seq = buf[pos + 3]
        inflated = buf[pos + 4] | buf[pos + 5] << 8 | buf[pos + 6] << 16
        if size > self.max_raw or inflated > self.max_inflated:
            self._drop()
            raise CompressError(1153, "compressed packet too large", seq)
        plain_size = inflated or size
        if plain_size > self.budget:
            self._drop()
            raise CompressError(1157, "inflated bytes budget used up", seq,
                                "max_inflated_total")
        if len(buf) - pos < HEADER + size:
            return None
        if inflated:
            self.room += (HEADER + size) * self.ratio - plain_size
            if self.room < 0:
                self._drop()
                raise CompressError(1157, "inflates far more than it weighs", seq,
                                    "max_inflate_ratio")
        body = bytes(buf[pos + HEADER:pos + HEADER + size])
        self.pos = pos + HEADER + size
        if self.pos == len(buf):
            buf.clear()
            self.pos = 0
        self.budget -= plain_size
        return seq, body if inflated == 0 else self._inflate(body, inflated, seq)

    def _drop(self) -> None:
        self.buf.clear()
        self.pos = 0

    def _inflate(self, body: bytes, declared: int, seq: int) -> bytes:
        d = zlib.decompressobj()
        try:
            plain = d.decompress(body, declared + 1)
        except zlib.error:
            self._drop()
            raise CompressError(1157, "zlib data error", seq) from None
        if len(plain) != declared or d.unconsumed_tail:
            self._drop()
            raise CompressError(1157, f"inflated to {len(plain)} bytes, declared {declared}",
                                seq)
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
