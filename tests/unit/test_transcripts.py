"""Packed transcripts: what a session keeps, and what reading them back gives."""

from __future__ import annotations

from muscipula import transcripts
from muscipula.config import Limits
from muscipula.incidents import Bus, Connection
from muscipula.machine import BaseMachine
from muscipula.net import session as session_mod
from muscipula.net.runtime import Caps, ServiceRuntime, Shared

HEAD = transcripts.FRAME.size


class MemorySession(session_mod.Session):
    def _send(self, data, addr):
        pass

    def _close(self, abort):
        pass


def make(room: int = 1 << 20, **limits: int) -> MemorySession:
    shared = Shared(bus=Bus(), store=None, caps=Caps(10), transcripts=None,  # type: ignore[arg-type]
                    tls_context=lambda: None, transcript_room=room)  # type: ignore[arg-type,return-value]
    rt = ServiceRuntime("t", "t", lambda peer: BaseMachine(), Limits(**limits), True, shared)
    conn = Connection(1, "tcp", "t", "accept", "127.0.0.1", 80, "127.0.0.2", 5000)
    return MemorySession(rt, conn, BaseMachine(), 100.0)


def test_a_repeated_chunk_is_kept_as_its_head_and_read_back_whole():
    s = make()
    request, answer = b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"
    for i in range(3):
        s.record(0, request, 100.0 + i)
        s.record(1, answer, 100.5 + i)
    s.record(0, b"other", 104.0)
    s.record(0, request, 105.0)  # equal to an older chunk, not the last one: kept whole
    assert s.transcript is not None
    assert len(s.transcript) == 8 * HEAD + 2 * len(request) + len(answer) + len(b"other")
    assert s.rt.shared.transcript_room == (1 << 20) - len(s.transcript)
    chunks = list(transcripts.unpack(bytes(s.transcript)))
    assert chunks == [(0.0, 0, request), (0.5, 1, answer), (1.0, 0, request), (1.5, 1, answer),
                      (2.0, 0, request), (2.5, 1, answer), (4.0, 0, b"other"),
                      (5.0, 0, request)]
    # what a session may keep is counted in the bytes it recorded, repeats included
    assert s.transcript_left == Limits().max_transcript_bytes - 4 * len(request) \
        - 3 * len(answer) - len(b"other")


def test_large_chunks_are_never_remembered_for_repeats():
    s = make()
    big = b"x" * (session_mod.REPEAT_MAX + 1)
    s.record(0, big, 100.0)
    s.record(0, big, 100.1)
    assert s.transcript is not None and len(s.transcript) == 2 * (HEAD + len(big))
    assert s.transcript_last == [None, None]


def test_the_encoded_line_spells_repeats_out():
    buf = bytearray()
    transcripts.pack(buf, 0.0, 0, b"USER a\r\n")
    transcripts.pack(buf, 0.25, 0, b"USER a\r\n", repeat=True)
    conn = Connection(7, "tcp", "ftp", "accept", "127.0.0.1", 21, "127.0.0.2", 5000)
    line = transcripts.encode(conn, 1.0, buf)
    assert line.endswith('"chunks":[[0.000000,"in","VVNFUiBhDQo="],'
                         '[0.250000,"in","VVNFUiBhDQo="]]}')
