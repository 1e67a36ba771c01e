"""Finding where shellcode may start in what a peer sent, at C speed, on the event loop.

Position-independent code must learn where it runs (its "GetPC") before it can reach
its own data or decode itself. The idioms are few and short, and a few compiled
patterns find them; ordinary protocol traffic and random bytes almost never
hold them, so most connections cost a few failed regex scans. Each hit is then checked
(the call lands on a pop, an FPU instruction precedes fnstenv) before it becomes a
candidate.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from muscipula.transcripts import FRAME, REPEAT, SENT

# Each pattern begins with a literal byte string of two bytes or more, so that the regex
# engine skips ahead with its fast literal search and a byte that starts no idiom costs
# well under a nanosecond. A one-byte prefix (0xe8 alone) made every byte of an 0xe8
# flood start a failed attempt (~7 ns a byte); one alternation of all idioms, ~45 ns.
#: call $+5; pop r32
_CALL5 = re.compile(rb"\xe8\x00\x00\x00\x00[\x58-\x5f]")
#: call $+4 into its own last byte: ff c0..cf (inc/dec r32), then pop r32
_CALL4 = re.compile(rb"\xe8\xff\xff\xff\xff[\xc0-\xcf][\x58-\x5f]")
#: call back by up to 4 KiB (the "call" of jmp-call-pop; the target is checked), found
#: from its opcode or from its displacement's 0xffff tail (a lookbehind checks the rest):
#: `_back` uses whichever of the two is rarer in the data, so neither an 0xe8 nor an 0xff
#: flood makes the engine stop at every byte
_BACK_HEAD = re.compile(rb"\xe8.[\xf0-\xff]\xff\xff", re.DOTALL)
_BACK_TAIL = re.compile(rb"\xff\xff(?<=\xe8.[\xf0-\xff]\xff\xff)", re.DOTALL)
#: cld; call forward by up to 512 bytes over a routine (the target is checked)
_CLDCALL = re.compile(rb"\xfc\xe8.[\x00\x01]\x00\x00", re.DOTALL)
#: fnstenv [esp-0xc]: the FPU's last instruction pointer lands on the stack
_FNSTENV = re.compile(rb"\xd9\x74\x24\xf4")

#: hits looked at per candidate wanted: bytes crafted to hit and fail the checks
#: cost a bounded amount of loop time
HITS_PER_CANDIDATE = 64
#: how far before fnstenv the FPU instruction whose address it stores may be
FPU_REACH = 16
#: the first bytes of what a jmp-call-pop or cld-call lands on: pop r32, pushad,
#: mov r32,[esp], mov ebp,esp
_LANDINGS = frozenset(range(0x58, 0x60)) | {0x60, 0x8B, 0x89}
#: a window starts at its chunk's start (decoders begin before their GetPC) only if
#: the candidate is at most this far into the chunk
CHUNK_REACH = 4096


def _landing_ok(data: bytes, at: int) -> bool:
    return 0 <= at < len(data) and data[at] in _LANDINGS


def _fpu_before(data: bytes, at: int) -> int | None:
    """The nearest FPU instruction (register form, as decoders use) before `at`."""
    for i in range(at - 2, max(at - FPU_REACH, 0) - 1, -1):
        if 0xD8 <= data[i] <= 0xDF and data[i + 1] >= 0xC0:
            return i
    return None


def _back(data: bytes) -> tuple[re.Pattern[bytes], int]:
    """The backward-call pattern to use on `data`, and how far its match starts after
    the call opcode: anchored on the rarer of 0xe8 and 0xff (two single-byte counts)."""
    if data.count(b"\xe8") <= data.count(b"\xff"):
        return _BACK_HEAD, 0
    return _BACK_TAIL, 3


def maybe(data: bytes) -> bool:
    """Whether `data` holds any idiom at all: a few searches at C speed, without the
    merging and checking of `candidates`. Most connections end here."""
    back, _shift = _back(data)
    return any(p.search(data) for p in (_FNSTENV, _CALL5, _CALL4, back, _CLDCALL))


def _hits(data: bytes) -> Iterator[tuple[int, str]]:
    """Every idiom's hits, merged in offset order, found lazily."""
    back, shift = _back(data)
    return heapq.merge(((m.start(), "call5") for m in _CALL5.finditer(data)),
                       ((m.start(), "call4") for m in _CALL4.finditer(data)),
                       ((m.start() - shift, "callback") for m in back.finditer(data)),
                       ((m.start(), "cldcall") for m in _CLDCALL.finditer(data)),
                       ((m.start(), "fnstenv") for m in _FNSTENV.finditer(data)))


def candidates(data: bytes, limit: int) -> list[int]:
    """Offsets in `data` where emulation should start, in order, at most `limit`."""
    found: list[int] = []
    for at, kind in itertools.islice(_hits(data), limit * HITS_PER_CANDIDATE):
        if kind == "callback":
            disp = int.from_bytes(data[at + 1:at + 5], "little", signed=True)
            if not _landing_ok(data, at + 5 + disp):
                continue
        elif kind == "cldcall":
            disp = int.from_bytes(data[at + 2:at + 6], "little", signed=True)
            if not _landing_ok(data, at + 6 + disp):
                continue
        elif kind == "fnstenv":
            fpu = _fpu_before(data, at)
            if fpu is None:
                continue
            at = fpu
        if at not in found:
            found.append(at)
            if len(found) >= limit:
                break
    return found


def inbound(packed: bytes | bytearray, limit: int) -> tuple[bytes, list[int]]:
    """What the peer sent (at most `limit` bytes) and where each of its chunks starts.

    Read straight from the packed transcript (transcripts.pack): a repeated chunk is
    skipped, it was looked at already.
    """
    view = memoryview(packed)
    at, end, head = 0, len(packed), FRAME.size
    parts: list[bytes] = []
    starts: list[int] = []
    size = 0
    while at + head <= end and size < limit:
        _offset, flags, n = FRAME.unpack_from(view, at)
        at += head
        if flags & REPEAT:
            continue
        if not flags & SENT and n:
            piece = view[at:at + min(n, limit - size)]
            starts.append(size)
            parts.append(bytes(piece))
            size += len(piece)
        at += n
    return b"".join(parts), starts


@dataclass(frozen=True, slots=True)
class Window:
    """Bytes to emulate, where they start in the inbound stream, and the entry points
    (offsets into `data`) to try in order."""

    start: int
    data: bytes
    entries: tuple[int, ...]


def windows(data: bytes, starts: list[int], found: list[int], max_bytes: int) -> list[Window]:
    """Group candidates into windows of at most `max_bytes`: one per region of code."""
    out: list[Window] = []
    for at in found:
        for i, w in enumerate(out):
            if w.start <= at < w.start + len(w.data):
                if at - w.start not in w.entries:
                    out[i] = Window(w.start, w.data, (*w.entries, at - w.start))
                break
        else:
            chunk = max((s for s in starts if s <= at), default=0)
            begin = chunk if at - chunk <= CHUNK_REACH else at
            entries = (at - begin, 0) if begin != at else (0,)
            out.append(Window(begin, data[begin:begin + max_bytes], entries))
    return out
