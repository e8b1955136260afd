"""The benchmark smoke run: `python bench/run.py --quick` works end to end; no speed asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECTIONS = (
    "throughput",
    "rate fidelity",
    "latency-sized pace",
    "memory",
    "preflight",
    "resume",
    "delivery",
    "ledger checks",
)


@pytest.mark.slow
def test_quick_bench_runs_every_section(tmp_path: Path) -> None:
    """The quick benchmark exits 0 and prints a table with a row for every section."""
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--out-dir", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("\n\n", 1)[0]
    assert table.splitlines()[0].split()[:2] == ["section", "measure"]
    for section in SECTIONS:
        assert any(line.startswith(section) for line in table.splitlines()), section
