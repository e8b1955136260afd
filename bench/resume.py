"""Resume: from launching a resume to the server's first request, on a mostly-done campaign.

The state is made once per bench run: the large campaign is sent to a server that answers E110
(low balance) after all but ``resume_left`` messages, so the run stops (exit 3) with those rows
``not_sent``. Each measured resume works on a fresh copy of that state's files.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import orjson
from harness import UNLIMITED_RATE, Bench, expect, expect_count, progress, send_command
from procs import Measured, Server
from results import Row, median, spread
from workload import write_config

__all__ = ["resume", "resume_setup"]


def resume_setup(bench: Bench) -> tuple[Measured, Path]:
    """Send the large campaign to a server that answers E110 after all but ``resume_left``."""
    sizes = bench.sizes
    rows, left = sizes.large_rows, sizes.resume_left
    state = bench.fresh_dir("resume-state")
    with Server(logs=bench.logs, name="resume-e110-server", accept=rows - left) as server:
        config = write_config(bench.out / "config-resume-setup.toml", server.base_url)
        summary = bench.out / "resume-setup.summary.json"
        command = send_command(
            bench.campaign(rows), config, state / "results.csv", rate=UNLIMITED_RATE,
            concurrency=sizes.concurrency, extra=["--summary-json", str(summary)],
        )  # fmt: skip
        progress(f"resume: sending {rows - left:,} of {rows:,} rows to make the resume state")
        m = bench.run("resume", "resume-setup", command, also_busy=[server])
        expect(m, 3, "the resume set-up (stopped by E110)")
        expect_count(server.stats()["accepted"], rows - left, "messages accepted before E110")
    if summary.exists():
        statuses = orjson.loads(summary.read_bytes()).get("statuses", {})
        expect_count(statuses.get("not_sent", -1), left, "rows left not_sent by the set-up")
    progress(f"resume: set-up done in {m.wall:.0f} s ({(rows - left) / m.wall:,.0f} msg/s)")
    return m, state


def _same_destination(journal: Path, config: Path) -> None:
    """Point the copied journal at the resume server, as if the set-up's had come back on it.

    A journal refuses to resume against another destination than the one that accepted its
    messages; the set-up and the resume use two server processes on two ports.
    """
    from bulk_sender.config import load_settings

    url = load_settings(config).kaleyra.messages_url
    with contextlib.closing(sqlite3.connect(journal)) as db, db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'destination'", (url,))


def resume(bench: Bench, setup: Measured, state: Path) -> list[Row]:
    """Time from launching the resume to the server's first request, on copies of the state."""
    section, sizes = "resume", bench.sizes
    rows, left = sizes.large_rows, sizes.resume_left
    first: list[float] = []
    whole: list[float] = []
    with Server(logs=bench.logs, name="resume-server") as server:
        config = write_config(bench.out / "config-resume.toml", server.base_url)
        for i in range(sizes.repeat):
            run_dir = bench.fresh_dir(f"resume-{i}")
            for path in state.iterdir():
                shutil.copy2(path, run_dir / path.name)
            _same_destination(run_dir / "results.csv.journal", config)
            server.reset()
            command = send_command(
                bench.campaign(rows), config, run_dir / "results.csv",
                rate=UNLIMITED_RATE, concurrency=sizes.concurrency,
            )  # fmt: skip
            m = bench.run(section, f"resume-{i}", command, also_busy=[server])
            expect(m, 0, "the resume")
            stats = server.stats()
            expect_count(stats["accepted"], left, "requests of the resume")
            first.append(stats["first"] - m.started)
            whole.append(m.wall)
            progress(f"resume {i + 1}/{sizes.repeat}: first request after {first[-1]:.2f} s")
    done = rows - left
    return [
        Row(section=section, measure=f"{rows:,} rows, {done:,} done: launch -> first request (s)",
            value=f"{median(first):.2f} s", runs=spread(first, "{:.2f}"), target="<= 3 s",
            ok=median(first) <= 3),
        Row(section=section, measure=f"the whole resume process ({left:,} sent, results rewritten)",
            value=f"{median(whole):.1f} s", runs=spread(whole, "{:.1f}")),
        Row(section=section,
            measure=f"set-up: send {done:,} rows until E110, whole process (msg/s)",
            value=f"{done / setup.wall:,.0f}", runs="1 run"),
    ]  # fmt: skip
