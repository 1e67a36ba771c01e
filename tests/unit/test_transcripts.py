"""Packed transcripts: what a session keeps, and what reading them back gives."""

from __future__ import annotations

import tracemalloc

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
    # what a session may keep is counted as it is written out: repeats spelled out, and
    # every chunk's head
    assert s.transcript_left == Limits().max_transcript_bytes - 4 * len(request) \
        - 3 * len(answer) - len(b"other") - 8 * HEAD


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


def test_empty_chunks_are_bounded_per_connection():
    s = make(room=1 << 20, max_transcript_bytes=1000)
    for _ in range(50_000):
        s.record(0, b"", 100.0)
    assert s.transcript is not None and len(s.transcript) <= 1000
    assert s.rt.shared.transcript_room == (1 << 20) - len(s.transcript)


def test_repeats_never_take_a_connection_past_its_bound():
    s = make(room=1 << 30, max_transcript_bytes=100_000)
    for i in range(10_000):
        s.record(0, b"G" * 1000, 100.0 + i / 1000)
    spelled = sum(HEAD + len(data) for _, _, data in transcripts.unpack(bytes(s.transcript)))
    assert 100_000 - 1013 < spelled <= 100_000


def test_a_frame_of_repeats_is_written_without_holding_it_all_spelled_out(tmp_path):
    s = make(room=1 << 30)
    for i in range(1024):
        s.record(0, b"G" * 1024, 100.0 + i / 1000)
    packed = bytes(s.transcript)
    count = (1 << 20) // len(packed) + 1  # a frame's worth, as the sink process gets them
    items = [(Connection(i, "tcp", "t", "accept", "127.0.0.1", 80, "127.0.0.2", 5000,
                         service="h"), 1.7e9, packed) for i in range(count)]
    tracemalloc.start()
    try:
        files = transcripts.DayFiles(tmp_path)
        files.write(items)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    files.close()
    assert files.written == count
    assert peak < 32 << 20
