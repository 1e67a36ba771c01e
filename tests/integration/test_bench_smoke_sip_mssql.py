"""`bench/run --quick sip mssql epmapper` runs end to end and prints every table (no timing
asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _rows(stdout: str, area: str) -> dict[str, str]:
    table = stdout.split(f"== {area} ==", 1)
    assert len(table) == 2, stdout
    lines = table[1].split("\n\n", 1)[0].splitlines()
    header = lines[1]
    for column in ("bare", "muscipula", "muscipula/bare"):
        assert column in header
    return {line.split(" (")[0]: line for line in lines[3:] if " (" in line}


def test_bench_quick_sip_mssql_and_epmapper_print_tables():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "run"), "--quick", "--no-peers",
                          "sip", "mssql", "epmapper"], capture_output=True, text=True,
                         timeout=110, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "benchmark failed" not in out.stdout
    expected = {
        "sip": ("OPTIONS/s, 32 in flight", "REGISTER digest logins/s, 32 in flight"),
        "mssql": ("failed logins/s, sequential", "failed logins/s, 50 concurrent",
                  "SELECT 1 batches/s, one connection"),
        "epmapper": ("ServerAlive2 calls/s, sequential", "ServerAlive2 calls/s, 50 concurrent"),
    }
    for area, titles in expected.items():
        rows = _rows(out.stdout, area)
        for title in titles:
            assert title in rows, f"missing row {title!r} in:\n{out.stdout}"
            bare, muscipula = rows[title].split(")", 1)[1].split()[:2]
            assert float(bare.replace(",", "")) > 0 and float(muscipula.replace(",", "")) > 0
        for title in ("incidents lost", "answered but not in logsql"):
            assert rows[title].split()[-3] == "0", f"{area}: {rows[title]}"
    assert "requests unanswered" not in out.stdout and "did not end in error" not in out.stdout
    assert "did not end in a ServerAlive2 answer" not in out.stdout
