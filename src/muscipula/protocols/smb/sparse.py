"""A buffer of announced length that holds only the bytes that came.

SMB1 transactions and implant uploads announce their total size up front; the real server
allocates it all at once, but keeping zeros for bytes never sent would let a few bytes on the
wire hold (and later capture) megabytes. Pieces are kept at their offsets, merged as they meet;
their number is bounded so scattered one-byte writes cannot cost more than they carry.
"""

from __future__ import annotations

#: separate pieces one buffer keeps; the public tools write in order (one piece)
MAX_PIECES = 64


class Sparse:
    """Bytes written at offsets within [0, total)."""

    __slots__ = ("_pieces", "max_pieces", "total")

    def __init__(self, total: int, max_pieces: int = MAX_PIECES) -> None:
        self.total = total
        self.max_pieces = max_pieces
        #: (offset, bytes) sorted by offset, neither overlapping nor touching
        self._pieces: list[tuple[int, bytearray]] = []

    def held(self) -> int:
        """Distinct bytes received."""
        return sum(len(b) for _, b in self._pieces)

    def pieces(self) -> int:
        return len(self._pieces)

    def complete(self) -> bool:
        """Every byte in [0, total) came."""
        if self.total == 0:
            return True
        return len(self._pieces) == 1 and self._pieces[0][0] == 0 and \
            len(self._pieces[0][1]) >= self.total

    def write(self, offset: int, data: bytes) -> bool:
        """Keep `data` at `offset` (later bytes win); False, nothing kept, if it would leave
        more than `max_pieces` pieces or fall outside the total."""
        if offset < 0 or offset + len(data) > self.total:
            return False
        if not data:
            return True
        end = offset + len(data)
        pieces = self._pieces
        if pieces and pieces[-1][0] + len(pieces[-1][1]) == offset:
            pieces[-1][1].extend(data)  # the usual case: the next chunk in order
            return True
        before = [p for p in pieces if p[0] + len(p[1]) < offset]
        after = [p for p in pieces if p[0] > end]
        meet = pieces[len(before):len(pieces) - len(after)]
        if not meet and len(pieces) >= self.max_pieces:
            return False
        start = min([offset, *(s for s, _ in meet)])
        stop = max([end, *(s + len(b) for s, b in meet)])
        joined = bytearray(stop - start)
        for s, b in meet:
            joined[s - start:s - start + len(b)] = b
        joined[offset - start:end - start] = data
        self._pieces = [*before, (start, joined), *after]
        return True

    def whole(self) -> bytes:
        """All `total` bytes, zeros where nothing came (what the server's buffer holds)."""
        out = bytearray(self.total)
        for s, b in self._pieces:
            out[s:s + len(b)] = b
        return bytes(out)

    def received(self) -> bytes:
        """The bytes that came, pieces in offset order, gaps left out."""
        return b"".join(bytes(b) for _, b in self._pieces)
