"""What one attacker can make the shellcode emulator spend: memory, time, findings, store,
scan cost, a share of the workers; its counters; and what the emulated machine calls itself."""

from __future__ import annotations

import asyncio
import json
import pickle
import resource
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from muscipula.capture.shellcode import Emulator, detect, pool
from muscipula.config import Shellcode
from muscipula.incidents import Connection
from muscipula.store import Store
from tests.unit.shellcode_samples import (
    assemble,
    computer_name_url,
    download_exec,
    infinite_loop,
    reverse_shell,
    url_flood,
    write_flood,
)
from tests.unit.test_shellcode import Recorder, transcript

ROOT = Path(__file__).resolve().parents[2]
HIT = b"\xe8\x00\x00\x00\x00\x5d"  # call $+5; pop ebp
URL = "http://198.51.100.7/dl/x.exe"


def conn(cid: int, remote: str = "127.0.0.9") -> Connection:
    return Connection(cid, "tcp", "blackhole", "accept", "127.0.0.1", 23, remote, 40000,
                      "blackhole")


def windows_of(code: bytes) -> list[tuple[bytes, list[int]]]:
    ws = detect.windows(code, [0], detect.candidates(code, 8), 65536)
    return [(w.data, list(w.entries)) for w in ws]


def run_emulator(cfg: Shellcode, tmp: Path, jobs: list[tuple[Connection, bytearray]],
                 grace: float | None = None) -> tuple[Emulator, Recorder, float]:
    bus = Recorder()
    store = Store(tmp / "binaries", 1 << 20, 1 << 24)

    async def main() -> tuple[Emulator, float]:
        emu = Emulator(cfg, store, bus)  # type: ignore[arg-type]
        for c, t in jobs:
            emu.scan(c, t)
        start = time.monotonic()
        await emu.close(grace)
        return emu, time.monotonic() - start

    emu, took = asyncio.run(main())
    return emu, bus, took


# ------------------------------------------------------------------ scan cost

@pytest.mark.parametrize("unit", [b"\xe8", b"\xff", b"\xe8\xff"])
def test_scan_cost_of_a_flood_is_bounded(unit: bytes) -> None:
    """Each byte of an 0xe8 (or 0xff) flood used to start a failed regex attempt:
    ~2 ms for 256 KiB then, ~1.5 ms now for the quick look and the candidates together."""
    assert Shellcode().max_scan_bytes == 256 * 1024
    data = (unit * (1 << 18))[:(1 << 18) - len(HIT)] + HIT
    best = 1.0
    for _ in range(3):
        start = time.perf_counter()
        assert detect.maybe(data) and detect.candidates(data, 8) == [len(data) - len(HIT)]
        best = min(best, time.perf_counter() - start)
    assert best < 0.020, f"{best * 1e3:.1f} ms"


def test_backward_call_found_in_dense_call_opcodes() -> None:
    """Anchored on the 0xffff tail when 0xe8 is the commoner byte: still found."""
    jcp = b"\xeb\x01\x5e\xe8\xfa\xff\xff\xff"
    data = b"\xe8" * 1000 + jcp
    assert detect.maybe(data) and detect.candidates(data, 8) == [1003]
    assert detect.candidates(b"\xff" * 1000 + jcp, 8) == [1003]
    assert detect.candidates(b"\xe8" * 1000 + b"\xeb\x01\x41\xe8\xfa\xff\xff\xff", 8) == []


# ------------------------------------------------------------------ memory and time

def test_an_emulation_cannot_take_gigabytes() -> None:
    """WriteFile of 1 MiB in a loop grew ~230 MB a second; the address space is capped."""
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from tests.unit.shellcode_samples import assemble, write_flood\n"
              "from muscipula.capture.shellcode.worker import emulate\n"
              "r = emulate(assemble(write_flood()), [0], 5.0, 5000)\n"
              "print(r['profile'][0]['call'])\n")
    # a safety net for the shared machine; the worker must stay far below it on its own
    out = subprocess.run(["bash", "-c", f'ulimit -v 3000000; exec "{sys.executable}" -c "$0"',
                          script], timeout=120, check=False, cwd=ROOT, capture_output=True)
    assert out.stdout.strip() == b"VirtualAlloc", out.stderr[-2000:]
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 1024 * 1024  # KiB


def test_the_emulation_stops_at_its_timeout_in_api_handlers() -> None:
    """Unicorn's timeout does not count time in speakeasy's handlers: the worker's timer does."""
    start = time.monotonic()
    out = pool.run(pool.context(), windows_of(assemble(write_flood(0x10000))), 1.0, 100000,
                   pool.entry_deadline(1.0))
    took = time.monotonic() - start
    assert out.error == "" and out.results[0]["profile"][0]["call"] == "VirtualAlloc"
    assert took < 1.0 + pool.SLACK + 1.5, took  # the timeout, not the per-entry kill


def test_the_deadline_is_per_entry_and_keeps_what_was_learnt() -> None:
    """The second window spins past its deadline: killed, the first window's result kept."""
    code = [(assemble(download_exec(URL)), [0]), (assemble(infinite_loop()), [0])]
    start = time.monotonic()
    out = pool.run(pool.context(), code, 60.0, 5000, 4.0)
    assert out.killed and out.error == "deadline"
    assert [r["offers"] for r in out.results] == [[URL]]
    assert time.monotonic() - start < 4.0 + pool.STARTUP
    assert pool.deadline([(b"", [0] * 8)], 5.0) == pool.STARTUP + 8 * (5.0 + pool.SLACK)


def test_a_job_past_its_deadline_is_killed_and_counted(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "SLACK", -0.8)  # 1 s timeout, killed 0.2 s into each entry
    cfg = Shellcode(timeout=1.0)
    emu, bus, _took = run_emulator(cfg, tmp_path, [(conn(1), transcript(
        assemble(infinite_loop())))])
    assert emu.counters() == {"scanned": 1, "detected": 1, "emulated": 0, "dropped": 0,
                              "failed": 0, "killed": 1}
    assert emu.pending == 0 and not bus.named("emu.profile")


# ------------------------------------------------------------------ findings

def test_one_window_offers_a_bounded_number_of_urls() -> None:
    """A URLDownloadToFileA loop offered 4,999 URLs and a 10 MB profile per window."""
    out = pool.run(pool.context(), windows_of(assemble(url_flood())), 5.0, 5000, 10.0)
    [r] = out.results
    assert r["offers"][:2] == ["http://203.0.113.9/00000", "http://203.0.113.9/00001"]
    assert len(r["offers"]) == 16
    profile = r["profile"]
    assert len(profile) == 1001 and profile[-1] == {"call": "[cut]", "args": [4000],
                                                    "return": None}
    assert len(pickle.dumps(r)) < 200_000


def test_profile_arguments_are_cut_with_a_marker() -> None:
    from muscipula.capture.shellcode.worker import _profile

    trace = [{"call": "WinExec", "args": ["x" * 300, 5], "return": "0x20"}]
    [item] = _profile(trace, pool.Limits(profile_arg=256))
    assert item["args"] == ["x" * 256 + "[cut 44 chars]", 5]


def test_offers_and_services_are_capped_per_connection(tmp_path: Path) -> None:
    bus = Recorder()
    emu = Emulator.__new__(Emulator)
    emu.cfg, emu.bus, emu._reported = Shellcode(max_findings=5), bus, OrderedDict()
    emu.store = Store(tmp_path / "b", 1 << 20, 1 << 24)
    seen: Any = __import__("collections").Counter()
    for k in range(3):
        w = detect.Window(k * 100, bytes([k]) * 10, (0,))
        result = {"profile": [{"call": "connect", "args": [], "return": 0}],
                  "offers": [f"http://192.0.2.{k}/{i}" for i in range(9)],
                  "services": [f"bindshell://{k}{i}" for i in range(9)]}
        emu._report(conn(1), w, result, seen)
    offers = [f["url"] for f in bus.named("download.offer")]
    assert offers == [f"http://192.0.2.0/{i}" for i in range(5)]
    assert len(bus.named("emu.service")) == 5 and len(bus.named("emu.profile")) == 3


# ------------------------------------------------------------------ store, fairness, counters

def test_only_windows_that_proved_to_be_code_are_stored(tmp_path: Path) -> None:
    cfg = Shellcode(timeout=1.0)
    loop, code = assemble(infinite_loop()), assemble(download_exec(URL))
    emu, bus, _took = run_emulator(cfg, tmp_path, [(conn(1, "192.0.2.1"), transcript(loop)),
                                                   (conn(2, "192.0.2.2"), transcript(code))])
    assert len(bus.named("shellcode.detected")) == 2
    [stored] = bus.named("download.complete")
    assert stored["url"] == "shellcode://192.0.2.2/0"
    assert [p.name for p in (tmp_path / "binaries").iterdir() if p.is_file()] == [stored["md5"]]
    assert emu.counters()["emulated"] == 2


def test_pending_jobs_are_limited_per_source(tmp_path: Path) -> None:
    cfg = Shellcode(timeout=1.0, max_pending_per_source=2)
    shell = transcript(assemble(reverse_shell("192.0.2.1", 99)))
    jobs = [(conn(i, "198.51.100.66"), shell) for i in range(4)]
    jobs.append((conn(9, "198.51.100.77"), shell))
    emu, bus, _took = run_emulator(cfg, tmp_path, jobs)
    assert emu.dropped == 2 and emu.emulated == 3 and emu.pending == 0
    by_conn = sorted({c for n, c, _f in bus.incidents if n == "emu.service"})
    assert by_conn == [0, 1, 9]


def test_jobs_left_at_shutdown_are_counted(tmp_path: Path) -> None:
    """Queued jobs cancelled at shutdown were not counted and `pending` stayed high."""
    cfg = Shellcode(timeout=30.0)
    loop = transcript(assemble(infinite_loop()))
    jobs = [(conn(i, f"192.0.2.{i}"), loop) for i in range(4)]
    emu, _bus, took = run_emulator(cfg, tmp_path, jobs, grace=0.5)
    assert emu.pending == 0 and took < 5.0
    counts = emu.counters()
    assert counts["dropped"] == 4 and counts["emulated"] == 0
    assert set(counts) == {"scanned", "detected", "emulated", "dropped", "failed", "killed"}


# ------------------------------------------------------------------ identity

def test_the_emulated_machine_has_no_emulator_defaults() -> None:
    from muscipula.capture.shellcode.worker import _config

    text = json.dumps(_config(5.0, 5000)).lower()
    for word in ("speakeasy", "myarg", "10.1.2.3", "1111111111", "12-34-56"):
        assert word not in text, word
    mine = _config(5.0, 5000, {"hostname": "FILESRV02", "domain": "CORP", "user": "svc_bak"})
    assert (mine["hostname"], mine["domain"], mine["user"]["name"]) == (
        "FILESRV02", "CORP", "svc_bak")
    assert _config(5.0, 5000)["user"]["sid"] != mine["user"]["sid"]


def test_get_computer_name_answers_the_identity() -> None:
    """A URL built from GetComputerNameA carries the persona's hostname."""
    limits = pool.Limits(identity={"hostname": "FILESRV02"})
    out = pool.run(pool.context(), windows_of(assemble(computer_name_url())), 5.0, 5000, 10.0,
                   limits)
    assert out.results[0]["offers"] == ["http://FILESRV02"]
    out = pool.run(pool.context(), windows_of(assemble(computer_name_url())), 5.0, 5000, 10.0)
    [url] = out.results[0]["offers"]
    assert "speakeasy" not in url.lower() and len(url) > len("http://")


def test_a_connection_ending_after_close_is_dropped(tmp_path: Path) -> None:
    """Connections may end after the emulator closed (the engine waits for them only so
    long): their jobs are dropped, and nothing stays counted as pending."""
    bus = Recorder()
    store = Store(tmp_path / "binaries", 1 << 20, 1 << 24)

    async def main() -> Emulator:
        emu = Emulator(Shellcode(), store, bus)  # type: ignore[arg-type]
        await emu.close()
        emu.scan(conn(1), transcript(assemble(reverse_shell("192.0.2.7", 4444))))
        return emu

    emu = asyncio.run(main())
    assert emu.pending == 0 and not emu._per_source
    assert emu.counters()["detected"] == 1 and emu.counters()["dropped"] == 1


def test_the_machine_address_is_ipv4_and_names_resolve_elsewhere() -> None:
    from muscipula.capture.shellcode import _ipv4
    from muscipula.capture.shellcode.worker import _config

    assert _ipv4("192.0.2.5") == "192.0.2.5" and _ipv4("::ffff:192.0.2.5") == "192.0.2.5"
    assert _ipv4("2001:db8::5") is None and _ipv4("not an address") is None
    names = _config(5.0, 5000, {"hostname": "FILESRV02", "address": "192.0.2.5"})[
        "network"]["dns"]["names"]
    assert names["FILESRV02"] == "192.0.2.5"
    # a looked-up handler is never the attacked host itself (a connect-back would loop)
    assert names["default"] != "192.0.2.5" and names["default"].startswith("10.")


# ------------------------------------------------------------------ live scans

def test_live_and_final_looks_report_each_finding_once(tmp_path: Path) -> None:
    """Shellcode found while the connection lasts is emulated then; later looks take what
    came after (a second exploit in it is found there) and a window that ran to the end
    of what had come; its findings are reported once, the connection counted once."""
    bus = Recorder()
    store = Store(tmp_path / "binaries", 1 << 20, 1 << 24)
    first = assemble(download_exec(URL))
    second = assemble(reverse_shell("192.0.2.8", 4444))
    c = conn(1)

    async def main() -> Emulator:
        # three jobs of one source at once (each look's): all may wait
        emu = Emulator(Shellcode(max_pending_per_source=3), store, bus)  # type: ignore[arg-type]
        emu.scan(c, transcript(b"hello", first), live=True)
        emu.scan(c, transcript(b"hello", first, b"more plain bytes"), live=True)  # nothing new
        emu.scan(c, transcript(b"hello", first, b"more plain bytes", second))
        await emu.close()
        return emu

    emu = asyncio.run(main())
    # the first window ran to the end of what had come: looked at again, reported once
    assert [f["url"] for f in bus.named("download.offer")] == [URL]
    assert [f["url"] for f in bus.named("emu.service")] == ["connectbackshell://192.0.2.8:4444"]
    # the first window three times (it ran to the end of each look), the second once
    assert len(bus.named("shellcode.detected")) == 4 and len(bus.named("emu.profile")) == 4
    counts = emu.counters()
    assert counts["scanned"] == 1 and counts["detected"] == 1 and counts["emulated"] == 3
    assert not emu._looked  # forgotten at the connection's end


def test_live_scan_config_defaults() -> None:
    cfg = Shellcode()
    assert cfg.live_quiet == 1.0 and cfg.live_scans == 4


def _submitted(tmp_path: Path, *looks: tuple[bool, bytearray]) -> list[list[int]]:
    """The windows (their starts) each look hands to emulation."""
    store = Store(tmp_path / "binaries", 1 << 20, 1 << 24)
    emu = Emulator(Shellcode(), store, Recorder())  # type: ignore[arg-type]
    jobs: list[list[int]] = []
    emu._submit = lambda c, windows: jobs.append([w.start for w in windows])  # type: ignore[method-assign]
    for live, buf in looks:
        emu.scan(conn(1), buf, live=live)
    return jobs


def test_an_idiom_at_the_end_of_a_look_is_emulated_once(tmp_path: Path) -> None:
    code = b"A" * 100 + HIT + bytes(64 * 1024)  # a whole window: nothing cut
    jobs = _submitted(tmp_path, (True, transcript(code)),
                      (False, transcript(code, b"more")))
    assert jobs == [[0]]


def test_code_cut_by_a_pause_is_emulated_again_when_whole(tmp_path: Path) -> None:
    whole = assemble(reverse_shell("192.0.2.8", 4444))
    half = len(whole) // 2
    jobs = _submitted(tmp_path, (True, transcript(whole[:half])),
                      (False, transcript(whole[:half], whole[half:])))
    assert jobs == [[0], [0]]  # the first look's window ran to its end: looked at again
