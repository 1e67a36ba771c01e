"""`bench/run --quick foundation` runs end to end and prints its table (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_foundation_prints_table():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "run"), "--quick", "--no-peers",
                          "foundation"], capture_output=True, text=True, timeout=110, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    table = out.stdout.split("== foundation ==", 1)
    assert len(table) == 2, out.stdout
    lines = table[1].splitlines()
    header = lines[1]
    for column in ("bare", "muscipula", "muscipula/bare"):
        assert column in header
    rows = {line.split(" (")[0]: line for line in lines[3:] if " (" in line}
    for title in ("incidents/s through bus -> logsql, zero lost",
                  "incidents/s through bus -> logsql + jsonlog, zero lost",
                  "blackhole accepts/s, 2,000 held",
                  "RSS per held idle connection, 2,000 held"):
        assert title in rows, f"missing row {title!r} in:\n{out.stdout}"
    for title, row in rows.items():
        if title.startswith(("incidents lost", "blackhole incidents lost")):
            assert row.split()[-3] == "0", f"incidents were lost: {row}"
    assert "benchmark failed" not in out.stdout
