"""The bulk-sender benchmark: ``python bench/run.py`` (``--quick`` for a smoke run).

Every figure is a whole process (interpreter start included), started from here and measured
from just before its fork to its reap; repeated measures alternate (A, B, A, B, ...) and the
table shows their median, every run's value beside it. Servers are ``fast_server.py`` in their
own processes on 127.0.0.1. Sections:

throughput     bulk-sender vs ``bare_loop.py`` (the loop a user would write instead) against
               the same server, same requests; bulk-sender with the audience ledger on against
               it off; one more bulk-sender run under py-spy
rate fidelity  achieved rate and busiest 1-second window, from the server's arrival times
latency-sized pace
               the same, with the default settings (requests in flight sized from the
               latency) against a server 300 ms away, and one whose latency goes from 100 to
               600 ms half-way; and a fixed pool of 32 (the old default) beside its peer
memory         peak RSS of ``send`` and ``--dry-run`` at two campaign sizes
preflight      ``--dry-run`` rows per second, also against a ledger that knows every recipient
resume         launch of a resume to the server's first request, on a campaign left with only
               a few rows to send (made once per bench run by a server that answers E110)
delivery       callbacks acknowledged per second by ``receive`` against a naive handler, and a
               ``report`` merging 3,000,000 callbacks into 1,000,000 rows (``delivery.py``)
ledger checks  the audience ledger on SQLite and on PostgreSQL: slots taken and committed per
               second by one sending process, and messages screened per second
               (``ledger_checks.py``)

Inputs and outputs go to ``bench/out/`` (git-ignored); ``--markdown PATH`` also writes the
table with the machine's description.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from delivery import callbacks_rows, merge_rows
from footprint import DryRuns, dry_runs, memory_rows, preflight_rows, small_send
from harness import (
    QUICK,
    REPO,
    SECTIONS,
    UNLIMITED_RATE,
    Bench,
    BenchError,
    Sizes,
    bare_command,
    bulk_sender,
    expect,
    progress,
    send_command,
)
from ledger_checks import ledger_check_rows
from pace import latency_sized_pace
from procs import BENCH_DIR, Measured, Server, run_measured
from rate_fidelity import rate_fidelity
from results import Row, machine_info, median, render_markdown, render_text, source_digest
from resume import resume, resume_setup
from throughput import throughput
from workload import write_config

__all__ = ["main"]


def guarded(bench: Bench, section: str, step: Callable[[], Any]) -> Any:
    """Run one step; on failure record an error row (details in the notes) and return None."""
    try:
        return step()
    except (BenchError, OSError, RuntimeError, KeyError, ValueError) as exc:
        progress(f"{section}: FAILED: {exc}")
        bench.rows.setdefault(section, []).append(
            Row(section=section, measure="error", value="FAILED (see notes)", ok=False)
        )
        bench.notes.append(f"- {section} FAILED: {type(exc).__name__}: {exc}")
        return None


def run_all(bench: Bench, only: frozenset[str]) -> None:
    """Run the sections asked for, in an order that makes the big resume state once."""

    def add(section: str, rows: list[Row] | None) -> None:
        if rows:
            bench.rows.setdefault(section, []).extend(rows)

    guarded(bench, "warm-up", lambda: warm_up(bench))
    if "throughput" in only:
        add("throughput", guarded(bench, "throughput", lambda: throughput(bench)))
    if "rate fidelity" in only:
        add("rate fidelity", guarded(bench, "rate fidelity", lambda: rate_fidelity(bench)))
    if "latency-sized pace" in only:
        pace = "latency-sized pace"
        add(pace, guarded(bench, pace, lambda: latency_sized_pace(bench)))
    dry: DryRuns | None = None
    if only & {"memory", "preflight"}:
        dry = guarded(bench, "preflight", lambda: dry_runs(bench))
    if dry is not None and "preflight" in only:
        add("preflight", preflight_rows(bench, dry))
    small = guarded(bench, "memory", lambda: small_send(bench)) if "memory" in only else None
    setup: tuple[Measured, Path] | None = None
    if only & {"memory", "resume"}:
        setup = guarded(bench, "resume", lambda: resume_setup(bench))
    if "memory" in only:
        add("memory", memory_rows(bench, dry, small, setup[0] if setup else None))
    if setup is not None and "resume" in only:
        add("resume", guarded(bench, "resume", lambda: resume(bench, *setup)))
    if "delivery" in only:
        add("delivery", guarded(bench, "delivery", lambda: callbacks_rows(bench)))
        add("delivery", guarded(bench, "delivery", lambda: merge_rows(bench)))
    if "ledger checks" in only:
        checks = "ledger checks"
        add(checks, guarded(bench, checks, lambda: ledger_check_rows(bench)))


def warm_up(bench: Bench) -> None:
    """Fill the bytecode cache: one small, unmeasured run of each kind of process."""
    rows = 200
    campaign = bench.campaign(rows)
    with Server(logs=bench.logs, name="warm-up-server") as server:
        config = write_config(bench.out / "config-warm-up.toml", server.base_url)
        out = bench.fresh_dir("warm-up") / "results.csv"
        commands = [
            send_command(campaign, config, out, rate=UNLIMITED_RATE, concurrency=8),
            [*bulk_sender(), "send", str(campaign), "--config", str(config), "--dry-run", "-q"],
            bare_command(server.base_url, rows, 8),
        ]
        for k, command in enumerate(commands):
            m = run_measured(f"warm-up-{k}", command, logs=bench.logs, env=bench.env, timeout=300)
            expect(m, 0, f"warm-up run {shlex.join(command)}")


def load_notes(bench: Bench) -> list[str]:
    """What else was running: the mean cores other processes kept busy, per section."""
    parts = [
        f"{section} {median(values):.2f} (max {max(values):.2f})"
        for section, values in bench.other_load.items()
    ]
    return [
        "- Other load: cores kept busy by processes other than the bench's own during its runs "
        "(median over the section's runs, from /proc/stat): " + "; ".join(parts) + ". The "
        "machine has two cores; anything well above 0 means the figures above are pessimistic."
    ]


METHOD_NOTES = (
    "- msg/s and rows/s are counts over whole-process wall time (fork to reap, interpreter "
    "start included). The median is shown; `runs` lists every run in the order run.",
    f'- "Unlimited" rate is `--rate {UNLIMITED_RATE}`: bulk-sender refuses `--rate 1000000` '
    "(`[sending] rate_per_second` must be at most 100,000; it exits 2).",
    "- Achieved rate = (requests - 1) / (last arrival - first arrival) at the server, on the "
    "server's monotonic clock; busiest window = most arrivals in any [t, t + 1 s).",
    '- Latency-sized pace: "default settings" is no `--concurrency` flag and no '
    "`concurrency` in the config, so the run sizes its requests in flight from the latency "
    "under the default ceiling (512); only `--rate` is set. The server's latency change is "
    'timed from its first request. "s lost" = (last arrival - first arrival) - (requests - 1)'
    " / rate: the time the run took beyond the rate's, which a longer run does not dilute. "
    "`--concurrency 32` (the default before the limit followed the latency) caps the limit at "
    "32 whatever the latency: a fixed pool.",
    "- The large `send`'s peak RSS comes from the resume set-up run: the same command on the "
    "same campaign, which sends all but `--resume-left` rows, stops on E110 and writes the "
    "results, so the large campaign is sent once per bench run. A dry run's peak RSS is the "
    "process's `ru_maxrss` (from `os.wait4`). A send of 20,000 rows or more plans its rows in "
    "a second process: its peak RSS is the sum of the sender's and the planning process's "
    "peaks, as the sender logs them on exit (`bulk_sender.finished peak_rss_mib=.. "
    "planner_peak_rss_mib=..`, from `getrusage`); `wait4` alone would give only the larger.",
    "- CPU per second of wall counts both processes: `wait4` includes the reaped planning "
    "process's CPU time.",
    "- Every measured process runs with a bytecode cache (`PYTHONPYCACHEPREFIX` under the "
    "bench's out directory, warmed by one unmeasured run of each kind first): this machine "
    "sets `PYTHONDONTWRITEBYTECODE=1`, under which the editable install would compile "
    "bulk_sender's source at every start, which an installed package never does.",
    "- Resume: launch = `time.monotonic()` just before the fork; first request = the server's "
    "`time.monotonic()` at its arrival (CLOCK_MONOTONIC is system-wide on Linux).",
)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Sizes]:
    """The flags, and the sizes they select."""
    parser = argparse.ArgumentParser(description="Benchmark bulk-sender; print a table.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (< 60 s)")
    parser.add_argument("--repeat", type=int, help="runs of each measure (default 3; quick 1)")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out", help="work files")
    parser.add_argument("--throughput-rows", type=int, help="default 60,000")
    parser.add_argument("--concurrency", type=int, help="for throughput/memory/resume (64)")
    parser.add_argument("--small-rows", type=int, help="smaller memory campaign (100,000)")
    parser.add_argument(
        "--large-rows", type=int, help="larger memory, preflight and resume campaign"
    )
    parser.add_argument("--resume-left", type=int, help="rows left to send on resume (1,000)")
    parser.add_argument(
        "--only", help=f"comma-separated sections to run (default all): {', '.join(SECTIONS)}"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    overrides = {
        "repeat": args.repeat,
        "throughput_rows": args.throughput_rows,
        "concurrency": args.concurrency,
        "small_rows": args.small_rows,
        "large_rows": args.large_rows,
        "resume_left": args.resume_left,
    }
    sizes = replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    if sizes.repeat < 1 or not 0 < sizes.resume_left < sizes.large_rows:
        parser.error("--repeat must be at least 1 and --resume-left between 1 and --large-rows")
    if sizes.small_rows == sizes.large_rows:
        parser.error("--small-rows and --large-rows must differ")
    return args, sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 if a run failed (a missed target is not a failure)."""
    args, sizes = parse_args(argv)
    only = frozenset(s.strip() for s in args.only.split(",")) if args.only else frozenset(SECTIONS)
    if unknown := only - set(SECTIONS):
        print(f"run.py: unknown sections {sorted(unknown)}; use {SECTIONS}", file=sys.stderr)
        return 2
    bench = Bench(sizes=sizes, out=args.out_dir.resolve())
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    started, sources = time.monotonic(), source_digest(REPO)
    run_all(bench, only)
    if source_digest(REPO) != sources:
        bench.notes.append(
            "- bulk_sender's sources changed while the benchmark ran (someone edited them), so "
            "these figures mix versions of the code; run it again on a quiet tree."
        )
    rows = [row for section in SECTIONS for row in bench.rows.get(section, [])]
    took = f"- The whole benchmark took {time.monotonic() - started:.0f} s."
    notes = [*bench.notes, *METHOD_NOTES, *load_notes(bench), took]
    print(render_text(rows))
    print()
    print("\n".join(notes))
    if bench.profile:
        print("\nProfile of one bulk-sender throughput run:")
        print("\n".join(bench.profile))
    if args.markdown is not None:
        profile = ["", "### Profile of one bulk-sender throughput run", "", "```", *bench.profile]
        document = render_markdown(
            rows,
            machine=machine_info(REPO),
            command=command,
            notes=notes + ([*profile, "```"] if bench.profile else []),
        )
        args.markdown.write_text(document, encoding="utf-8")
    failed = any(row.measure == "error" for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
