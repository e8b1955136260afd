"""Throughput: bulk-sender against the bare aiohttp loop, alternated; one run under py-spy.

Both send the same requests (the bodies are checked byte for byte, and the server counts the
bytes it received) to the same ``fast_server.py``; msg/s is messages over whole-process wall
time, and the ratio is taken pair by pair, each pair measured back to back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import profiling
from bare_loop import body as bare_body
from harness import (
    UNLIMITED_RATE,
    Bench,
    BenchError,
    bare_command,
    expect,
    expect_count,
    progress,
    send_command,
)
from procs import Measured, Server, run_measured
from results import Row, median, spread
from workload import BODY_TEXT, RETAILER_ID, recipients, write_config

__all__ = ["check_same_bodies", "profile_run", "throughput"]

#: RAM-backed; a run with its journal here shows what the journal's fsyncs cost.
TMPFS = Path("/dev/shm")


def check_same_bodies(count: int = 20) -> None:
    """Fail unless bare_loop.py builds byte-for-byte the bodies bulk-sender builds."""
    from bulk_sender.sending.payload import Fields, build_body

    for person in recipients(count):
        ours = build_body(
            Fields(
                to=person.to,
                body_text=BODY_TEXT.format(first_name=person.first_name),
                thumbnail_product_retailer_id=RETAILER_ID,
                ref=person.ref,
                ref1=person.ref1,
                wa_source="api",
            )
        )
        if bare_body(person) != ours:
            raise BenchError(f"bare_loop.py builds another body than bulk-sender for {person.to}")


def throughput(bench: Bench) -> list[Row]:
    """bulk-sender vs the bare loop, alternated; then one bulk-sender run under py-spy."""
    sizes = bench.sizes
    n, conc = sizes.throughput_rows, sizes.concurrency
    check_same_bodies()
    campaign = bench.campaign(n)
    bulk: list[Measured] = []
    bare: list[Measured] = []
    tmpfs: list[Measured] = []
    ledger: list[Measured] = []
    with Server(logs=bench.logs, name="throughput-server") as server:
        config = write_config(bench.out / "config-throughput.toml", server.base_url)
        bytes_sent: set[int] = set()
        for i in range(sizes.repeat):
            out = bench.fresh_dir(f"throughput-{i}") / "results.csv"
            command = send_command(campaign, config, out, rate=UNLIMITED_RATE, concurrency=conc)
            bulk.append(_one_run(bench, server, f"bulk-sender {i + 1}", command, bytes_sent))
            ledger.append(_ledger_run(bench, server, campaign, i, bytes_sent))
            command = bare_command(server.base_url, n, conc)
            bare.append(_one_run(bench, server, f"bare loop {i + 1}", command, bytes_sent))
            if TMPFS.is_dir():
                with tempfile.TemporaryDirectory(dir=TMPFS, prefix="bulk-sender-bench-") as tmp:
                    out = Path(tmp) / "results.csv"
                    command = send_command(
                        campaign, config, out, rate=UNLIMITED_RATE, concurrency=conc
                    )
                    name = f"bulk-sender on tmpfs {i + 1}"
                    tmpfs.append(_one_run(bench, server, name, command, bytes_sent))
        if len(bytes_sent) != 1:
            raise BenchError(f"bulk-sender and the bare loop sent different bytes: {bytes_sent}")
        bench.profile = profile_run(bench, server, campaign, config)
    return [*_rows(n, conc, bulk, bare, tmpfs), *_ledger_rows(n, bulk, ledger)]


def _ledger_run(
    bench: Bench, server: Server, campaign: Path, i: int, bytes_sent: set[int]
) -> Measured:
    """The same send with the audience ledger on: a fresh ledger, so nothing is held back,
    every message's slot taken (and committed) before it leaves."""
    directory = bench.fresh_dir(f"throughput-ledger-{i}")
    config = write_config(
        directory / "config.toml", server.base_url, ledger=directory / "ledger.db"
    )
    command = send_command(
        campaign, config, directory / "results.csv", rate=UNLIMITED_RATE,
        concurrency=bench.sizes.concurrency,
    )  # fmt: skip
    return _one_run(bench, server, f"bulk-sender with the ledger {i + 1}", command, bytes_sent)


def _ledger_rows(n: int, bulk: list[Measured], ledger: list[Measured]) -> list[Row]:
    rate = [n / m.wall for m in ledger]
    ratios = [b.wall / a.wall for a, b in zip(ledger, bulk, strict=True)]
    return [
        Row(section="throughput", measure=f"bulk-sender send with the audience ledger on, "
            f"{n:,} rows: msg/s", value=f"{median(rate):,.0f}", runs=spread(rate, "{:,.0f}")),
        Row(section="throughput", measure="ratio ledger on / ledger off (pairs run back to back)",
            value=f"{median(ratios):.2f}x", runs=spread(ratios, "{:.2f}"), target=">= 0.8x",
            ok=median(ratios) >= 0.8),
    ]  # fmt: skip


def _one_run(
    bench: Bench, server: Server, name: str, command: list[str], bytes_sent: set[int]
) -> Measured:
    """Run one sender against a reset server; check it sent every message; note the bytes."""
    rows = bench.sizes.throughput_rows
    server.reset()
    m = bench.run("throughput", f"throughput-{name.replace(' ', '-')}", command, also_busy=[server])
    expect(m, 0, name)
    stats = server.stats()
    expect_count(stats["accepted"], rows, f"requests {name} sent")
    bytes_sent.add(stats["body_bytes"])
    progress(f"throughput: {name}/{bench.sizes.repeat}: {rows / m.wall:,.0f} msg/s")
    return m


def _rows(
    n: int, conc: int, bulk: list[Measured], bare: list[Measured], tmpfs: list[Measured]
) -> list[Row]:
    section = "throughput"
    return [*_main_rows(section, n, conc, bulk, bare), *_tmpfs_rows(section, n, tmpfs, bare)]


def _main_rows(
    section: str, n: int, conc: int, bulk: list[Measured], bare: list[Measured]
) -> list[Row]:
    bulk_rate = [n / m.wall for m in bulk]
    bare_rate = [n / m.wall for m in bare]
    ratios = [a / b for a, b in zip(bulk_rate, bare_rate, strict=True)]
    runs = f"{len(bulk)} run{'s' if len(bulk) > 1 else ''} each, alternated"
    return [
        Row(section=section, measure=f"bulk-sender send, {n:,} rows, concurrency {conc}: msg/s",
            value=f"{median(bulk_rate):,.0f}", runs=spread(bulk_rate, "{:,.0f}")),
        Row(section=section, measure=f"bare aiohttp loop, same {n:,} requests: msg/s",
            value=f"{median(bare_rate):,.0f}", runs=spread(bare_rate, "{:,.0f}")),
        Row(section=section, measure=f"ratio bulk-sender / bare ({runs})",
            value=f"{median(ratios):.2f}x", runs=spread(ratios, "{:.2f}"), target=">= 1.0x",
            ok=median(ratios) >= 1.0),
        Row(section=section, measure="CPU used per second of wall: bulk-sender / bare (cores)",
            value=f"{median([m.cpu / m.wall for m in bulk]):.2f} / "
            f"{median([m.cpu / m.wall for m in bare]):.2f}"),
    ]  # fmt: skip


def _tmpfs_rows(section: str, n: int, tmpfs: list[Measured], bare: list[Measured]) -> list[Row]:
    """The diagnostic arm: the same runs with results and journal in RAM, where fsync is free."""
    if not tmpfs:
        return []
    rate = [n / m.wall for m in tmpfs]
    ratios = [b.wall / a.wall for a, b in zip(tmpfs, bare, strict=True)]
    return [
        Row(section=section, measure=f"diagnostic: bulk-sender, --out on tmpfs ({TMPFS}: "
            "journal fsync costs nothing): msg/s", value=f"{median(rate):,.0f}",
            runs=spread(rate, "{:,.0f}")),
        Row(section=section, measure="diagnostic: ratio bulk-sender on tmpfs / bare",
            value=f"{median(ratios):.2f}x", runs=spread(ratios, "{:.2f}")),
    ]  # fmt: skip


def profile_run(bench: Bench, server: Server, campaign: Path, config: Path) -> list[str]:
    """One bulk-sender run under py-spy; the summary's lines (or why there is none)."""
    spy = profiling.py_spy()
    if spy is None:
        return ["No profile: py-spy is not installed (pip install py-spy into the venv)."]
    raw = bench.out / "profile.raw.txt"
    server.reset()
    out = bench.fresh_dir("throughput-profile") / "results.csv"
    command = send_command(
        campaign, config, out, rate=UNLIMITED_RATE, concurrency=bench.sizes.concurrency
    )
    m = run_measured(
        "throughput-profile",
        profiling.py_spy_command(spy, raw, command),
        logs=bench.logs,
        env=bench.env,
        timeout=bench.sizes.timeout,
    )
    if m.exit_code != 0 or not raw.exists():
        return [f"No profile: py-spy exited {m.exit_code}; see {m.stderr}."]
    rate = bench.sizes.throughput_rows / m.wall
    head = [
        f"py-spy {profiling.RATE} Hz, every thread of the sending process (not the planning "
        "process), idle time included; the profiled run took "
        f"{m.wall:.1f} s ({rate:,.0f} msg/s under the profiler). Raw stacks: {raw}."
    ]
    return head + profiling.summarise(raw).lines()
