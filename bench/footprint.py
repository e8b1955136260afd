"""Memory and preflight: peak RSS of send and --dry-run at two sizes; dry-run rows per second.

The large ``send`` is not run here: the resume section's set-up is that run (it sends all but
``resume_left`` rows of the large campaign), and its peak RSS is reported with the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness import (
    UNLIMITED_RATE,
    Bench,
    BenchError,
    bulk_sender,
    expect,
    expect_count,
    progress,
    send_command,
)
from ledger_fill import fill_ledger, held_back
from procs import Measured, Server
from results import Row, median, spread
from workload import write_config

__all__ = ["DryRuns", "dry_runs", "memory_rows", "preflight_rows", "send_rss", "small_send"]


@dataclass(frozen=True, slots=True)
class DryRuns:
    """Every dry run, by campaign size; ``ledger``: the large one against a full ledger."""

    runs: dict[int, list[Measured]]
    ledger: list[Measured]


def dry_runs(bench: Bench) -> DryRuns:
    """``--dry-run`` of the small and the large campaign, and of the large one against a ledger
    that knows every one of its recipients (:mod:`ledger_fill`), alternated."""
    sizes = bench.sizes
    config = write_config(bench.out / "config-dry-run.toml", "http://127.0.0.1:9")
    ledger = fill_ledger(bench.out / "ledger-dry-run.db", sizes.large_rows)
    with_ledger = write_config(
        bench.out / "config-dry-run-ledger.toml", "http://127.0.0.1:9", ledger=ledger
    )
    runs: dict[int, list[Measured]] = {sizes.small_rows: [], sizes.large_rows: []}
    against: list[Measured] = []
    for i in range(sizes.repeat):
        for rows in runs:
            runs[rows].append(_dry_run(bench, rows, config, f"dry-run-{rows}-{i}"))
        m = _dry_run(bench, sizes.large_rows, with_ledger, f"dry-run-ledger-{i}")
        against.append(m)
        held = held_back(sizes.large_rows)
        if f"suppressed {held:,}" not in m.text():
            raise BenchError(f"the ledger-backed dry run did not hold back {held:,} rows")
    return DryRuns(runs, against)


def _dry_run(bench: Bench, rows: int, config: Path, name: str) -> Measured:
    command = [*bulk_sender(), "send", str(bench.campaign(rows)), "--config", str(config)]
    m = bench.run("preflight", name, [*command, "--dry-run", "-q"])
    expect(m, 0, f"bulk-sender --dry-run of {rows:,} rows")
    progress(f"preflight: {name}: {rows:,} rows in {m.wall:.1f} s")
    return m


def preflight_rows(bench: Bench, dry: DryRuns) -> list[Row]:
    """Rows per second of the dry runs."""
    rows = []
    large = bench.sizes.large_rows
    for count, runs in dry.runs.items():
        speed = [count / m.wall for m in runs]
        big = count == large
        rows.append(
            Row(section="preflight", measure=f"--dry-run of {count:,} rows: rows/s (whole process)",
                value=f"{median(speed):,.0f}", runs=spread(speed, "{:,.0f}"),
                target=">= 50,000" if big else "", ok=median(speed) >= 50_000 if big else None)
        )  # fmt: skip
    speed = [large / m.wall for m in dry.ledger]
    rows.append(
        Row(section="preflight", measure=f"--dry-run of {large:,} rows against a ledger that "
            f"knows all {large:,} recipients ({held_back(large):,} held back): rows/s",
            value=f"{median(speed):,.0f}", runs=spread(speed, "{:,.0f}"), target=">= 50,000",
            ok=median(speed) >= 50_000)
    )  # fmt: skip
    return rows


def small_send(bench: Bench) -> Measured:
    """One ``send`` of the small campaign against the fast server, for its peak RSS."""
    rows = bench.sizes.small_rows
    with Server(logs=bench.logs, name="memory-server") as server:
        config = write_config(bench.out / "config-memory.toml", server.base_url)
        out = bench.fresh_dir("memory-send") / "results.csv"
        command = send_command(
            bench.campaign(rows), config, out,
            rate=UNLIMITED_RATE, concurrency=bench.sizes.concurrency,
        )  # fmt: skip
        m = bench.run("memory", "memory-send", command, also_busy=[server])
        expect(m, 0, f"bulk-sender send of {rows:,} rows")
        expect_count(server.stats()["accepted"], rows, "requests bulk-sender sent")
    total, parts = send_rss(m)
    progress(f"memory: send of {rows:,} rows: peak RSS {total:.0f} MiB{parts}, {m.wall:.1f} s")
    return m


def memory_rows(
    bench: Bench, dry: DryRuns | None, small: Measured | None, large: Measured | None
) -> list[Row]:
    """Peak RSS of send and dry run at both sizes, and the large/small ratio."""
    s, big = bench.sizes.small_rows, bench.sizes.large_rows
    ratio_label = f"{_short(big)}/{_short(s)}"
    rows: list[Row] = []
    if small is not None and large is not None:
        (small_total, small_parts), (large_total, large_parts) = send_rss(small), send_rss(large)
        ratio = large_total / small_total
        rows += [
            Row(section="memory", measure=f"send {s:,} rows: peak RSS{small_parts} (1 run)",
                value=f"{small_total:.0f} MiB"),
            Row(section="memory",
                measure=f"send {big:,} rows: peak RSS{large_parts} (1 run: resume set-up)",
                value=f"{large_total:.0f} MiB", target="< 250 MiB", ok=large_total < 250),
            Row(section="memory", measure=f"send: peak RSS {ratio_label}", value=f"{ratio:.2f}x",
                target="<= 1.3x", ok=ratio <= 1.3),
        ]  # fmt: skip
    if dry is not None:
        small_rss = [m.max_rss_mib for m in dry.runs[s]]
        large_rss = [m.max_rss_mib for m in dry.runs[big]]
        ratio = median(large_rss) / median(small_rss)
        rows += [
            Row(section="memory", measure=f"--dry-run {s:,} rows: peak RSS",
                value=f"{median(small_rss):.0f} MiB", runs=spread(small_rss, "{:.0f}")),
            Row(section="memory", measure=f"--dry-run {big:,} rows: peak RSS",
                value=f"{median(large_rss):.0f} MiB", runs=spread(large_rss, "{:.0f}"),
                target="< 250 MiB", ok=median(large_rss) < 250),
            Row(section="memory", measure=f"--dry-run: peak RSS {ratio_label}",
                value=f"{ratio:.2f}x", target="<= 1.3x", ok=ratio <= 1.3),
        ]  # fmt: skip
    return rows


def send_rss(m: Measured) -> tuple[float, str]:
    """A send's peak RSS in MiB, with the planning process's added, and how it is made up.

    ``wait4`` reports the larger of the sender's and its reaped child's peaks, not their sum;
    the sender logs both exactly (``bulk_sender.finished peak_rss_mib=.. planner_peak_rss_mib=..``),
    so the sum of the two peaks is taken from there: an upper bound of the pair's peak at once.
    """
    found = _FINISHED.search(m.stderr.read_text(encoding="utf-8", errors="replace"))
    if found is None or found["planner"] is None:
        return m.max_rss_mib, ""
    own, planner = int(found["own"]), int(found["planner"])
    return float(own + planner), f" (sender {own} + planning process {planner})"


_FINISHED = re.compile(
    r"bulk_sender\.finished .*?peak_rss_mib=(?P<own>\d+)(?: planner_peak_rss_mib=(?P<planner>\d+))?"
)


def _short(n: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return f"{n:,}"
