"""Delivery reports, measured: callbacks acknowledged per second, and the merge of a big store.

``python bench/delivery.py`` (``--quick`` for a smoke run) runs both; ``bench/run.py`` runs them
as its ``delivery`` section.

callbacks  ``bulk-sender receive`` (its default ``--workers``, or ``--workers N``) against
           ``naive_receiver.py`` (an ``aiohttp.web`` handler that commits each callback to
           SQLite on its own, with the same durability), each in its own process on a fresh
           store, in interleaved pairs (the order alternating), both loaded the same way:
           distinct v2 status callbacks over 128 keep-alive connections (with fewer, the
           receiver's batches are smaller and it pays for more commits), by ``wrk`` with
           ``callback_load.lua`` for 10 s when wrk is installed (``apt-get install wrk``), else
           by ``callback_load.py``, 20,000 callbacks (``--client`` chooses). Measured: callbacks
           answered 200 per second (each durably committed before its answer); the CPU each
           receiver (all its processes) and the load generator spent per callback; and how many
           cores the rest of the machine kept busy meanwhile (the machine is shared). Then
           the same receiver with its store on PostgreSQL (``BULK_SENDER_BENCH_POSTGRES``,
           default ``postgresql://postgres@127.0.0.1:5432/postgres``: a fresh database per run,
           dropped after); skipped, with a row saying so, without a server.
merge      ``bulk-sender report`` of a 1,000,000-row campaign against a store of 3,000,000
           status callbacks (three per message: sent/delivered/read, re-deliveries, failures
           with Meta's codes, Kaleyra's not-sent, and callbacks of other campaigns). The journal
           and the store are made directly (not measured); the measure is the whole ``report``
           process: the merge in SQL, the results file rewritten, the funnel. Wall time and
           peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from harness import QUICK, Bench, BenchError, Sizes, bulk_sender, expect, progress
from pg import PG_ENV, pg_database, pg_server
from procs import BENCH_DIR, machine_busy_seconds, process_cpu_seconds
from results import Row, median, render_text, spread
from workload import recipients, write_campaign, write_config

from bulk_sender.config import load_settings
from bulk_sender.delivery.events import Callback, DeliveryStatus, StatusEvent
from bulk_sender.input.campaign import Campaign
from bulk_sender.input.table import open_table
from bulk_sender.model import Record
from bulk_sender.record.journal import Journal, journal_path
from bulk_sender.stores import sql
from bulk_sender.stores.sqlite import SQLITE, SqliteCallbackStore

__all__ = ["DeliverySizes", "callbacks_rows", "main", "merge_rows"]

SECRET = "bench-callback-secret"
_PAIRS = 5


@dataclass(frozen=True, slots=True)
class DeliverySizes:
    """How big each delivery measure is."""

    callbacks: int = 20_000  #: per run, with the Python load generator
    connections: int = 128
    campaign_rows: int = 1_000_000
    store_callbacks: int = 3_000_000
    seconds: int = 10  #: per run, with wrk
    workers: int = 0  #: receive --workers (0: its default)
    #: pairs of callback runs (ours, naive); a full run takes at least five, as one pair's ratio
    #: moves by a tenth either way on this shared machine and the median of three by nearly as
    #: much
    pairs: int = _PAIRS

    @classmethod
    def of(cls, sizes: Sizes, *, workers: int = 0) -> DeliverySizes:
        """The quick sizes for ``bench/run.py --quick``, else the full ones."""
        if sizes == QUICK:
            return cls(2_000, 128, 10_000, 30_000, seconds=2, workers=workers, pairs=sizes.repeat)
        return cls(workers=workers, pairs=max(_PAIRS, sizes.repeat))


# --------------------------------------------------------------------------- callbacks per second


@dataclass(frozen=True, slots=True)
class LoadRun:
    """One load against one receiver."""

    rate: float  #: callbacks answered 200 per second
    server_us: float  #: CPU (all the receiver's processes and threads) per callback, in µs
    client_us: float  #: the load generator's CPU per callback, in µs
    other_cores: float  #: mean cores the rest of the machine kept busy meanwhile


def _server(command: Sequence[str], log: Path, marker: str) -> tuple[subprocess.Popen[str], str]:
    """Start a receiver process; its port from the first stdout line holding ``marker``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        env={**_env(), "BULK_SENDER_CALLBACK_SECRET": SECRET},
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if marker not in line:
        process.kill()
        raise BenchError(f"{command[1]} did not start; see {log}")
    if "http" in line:
        return process, line.split(" on ", 1)[1].split()[0].rsplit(":", 1)[1]
    return process, line.split()[1]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _tree_cpu(root: int) -> float:
    """CPU-seconds used so far by ``root`` and every live process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    total = 0.0
    for pid in parents:
        up = pid
        while up not in (root, 0, 1) and up in parents:
            up = parents[up]
        if up == root:
            with contextlib.suppress(OSError):
                total += process_cpu_seconds(pid)
    return total


def _client_command(client: str, port: str, sizes: DeliverySizes) -> list[str]:
    url = f"http://127.0.0.1:{port}/kaleyra/status"
    if client == "wrk":
        return ["wrk", "-t1", f"-c{sizes.connections}", f"-d{sizes.seconds}s", "--timeout", "30s",
                "-s", str(BENCH_DIR / "callback_load.lua"), url, "--", SECRET]  # fmt: skip
    return [sys.executable, str(BENCH_DIR / "callback_load.py"), "--url", url, "--count",
            str(sizes.callbacks), "--connections", str(sizes.connections), "--secret",
            SECRET]  # fmt: skip


def _load(server: int, port: str, sizes: DeliverySizes, client: str, log: Path) -> LoadRun:
    """Load the receiver (process ``server``) on ``port``; what it acknowledged, at what cost."""
    server_before, busy_before = _tree_cpu(server), machine_busy_seconds()
    mine_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        _client_command(client, port, sizes), capture_output=True, text=True, timeout=1800,
        check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    server_cpu = _tree_cpu(server) - server_before
    busy = machine_busy_seconds() - busy_before
    mine = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (mine.ru_utime + mine.ru_stime) - (mine_before.ru_utime + mine_before.ru_stime)
    log.write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"the load generator printed no result; see {log}")
    result = orjson.loads(lines[-1])
    acked = int(result["acked"])
    if result["other"] or result.get("socket_errors") or not acked:
        raise BenchError(
            f"{acked:,} callbacks acknowledged, {result['other']:,} refused; see {log}"
        )
    if client != "wrk" and acked != sizes.callbacks:
        raise BenchError(f"only {acked:,} of {sizes.callbacks:,} callbacks were acknowledged")
    return LoadRun(
        rate=acked / float(result["seconds"]), server_us=1e6 * server_cpu / acked,
        client_us=1e6 * client_cpu / acked,
        other_cores=max(0.0, (busy - server_cpu - client_cpu) / wall),
    )  # fmt: skip


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _ours(
    bench: Bench, run: int, sizes: DeliverySizes, client: str, store: str = "callbacks.db"
) -> LoadRun:
    name = "receive-pg" if "://" in store else "receive"
    work = bench.fresh_dir(f"{name}-{run}")
    config = write_config(work / "config.toml", "http://127.0.0.1:9")
    with config.open("a", encoding="utf-8") as handle:
        handle.write(f'\n[callbacks]\nstore = "{store}"\nport = 0\n')
    workers = ["--workers", str(sizes.workers)] if sizes.workers else []
    process, port = _server(
        [*bulk_sender(), "receive", "--config", str(config), *workers],
        bench.logs / f"{name}-{run}.err", "Receiving Kaleyra callbacks on",
    )  # fmt: skip
    try:
        return _load(process.pid, port, sizes, client, bench.logs / f"load-{name}-{run}.out")
    finally:
        _stop(process)


def _ours_on_postgres(
    bench: Bench, run: int, sizes: DeliverySizes, client: str, server: str
) -> LoadRun:
    """The receiver with its store in a fresh database of ``server``."""
    with pg_database(server, f"bulk_sender_bench_{os.getpid()}_{run}") as store:
        return _ours(bench, run, sizes, client, store)


def _naive(bench: Bench, run: int, sizes: DeliverySizes, client: str) -> LoadRun:
    work = bench.fresh_dir(f"naive-{run}")
    process, port = _server(
        [sys.executable, str(BENCH_DIR / "naive_receiver.py"), "--store",
         str(work / "naive.db"), "--secret", SECRET],
        bench.logs / f"naive-{run}.err", "PORT",
    )  # fmt: skip
    try:
        return _load(process.pid, port, sizes, client, bench.logs / f"load-naive-{run}.out")
    finally:
        _stop(process)


def load_client(choice: str = "auto") -> str:
    """``wrk`` (a C load generator: the receivers, not the client, are measured) when it is
    installed or asked for, else ``python`` (``callback_load.py``, which eats CPU the receivers
    need on a small machine)."""
    if choice == "wrk" and shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return choice


def callbacks_rows(bench: Bench, client: str = "auto", workers: int = 0) -> list[Row]:
    """Acknowledged callbacks per second, bulk-sender's receiver against the naive one, in
    interleaved pairs (the order alternating), with each side's CPU per callback and the load."""
    sizes, section = DeliverySizes.of(bench.sizes, workers=workers), "delivery"
    client = load_client(client)
    ours: list[LoadRun] = []
    naive: list[LoadRun] = []
    pg: list[LoadRun] = []
    server = pg_server()
    for run in range(sizes.pairs):
        if run % 2:
            ours.append(_ours(bench, run, sizes, client))
            naive.append(_naive(bench, run, sizes, client))
        else:
            naive.append(_naive(bench, run, sizes, client))
            ours.append(_ours(bench, run, sizes, client))
        if server is not None:
            pg.append(_ours_on_postgres(bench, run, sizes, client, server))
        progress(f"callbacks {run + 1}/{sizes.pairs}: ours {ours[-1].rate:,.0f}/s, "
                 f"naive {naive[-1].rate:,.0f}/s"
                 + (f", ours on PostgreSQL {pg[-1].rate:,.0f}/s" if pg else "")
                 + f", other load {ours[-1].other_cores:.1f} / "
                 f"{naive[-1].other_cores:.1f} cores")  # fmt: skip
    return [*_callback_table(section, sizes, client, ours, naive), *_pg_rows(section, pg, ours)]


def _pg_rows(section: str, pg: list[LoadRun], ours: list[LoadRun]) -> list[Row]:
    if not pg:
        return [Row(section=section, measure="receive, store on PostgreSQL (callbacks/s)",
                    value=f"skipped: no server or no driver ({PG_ENV})")]  # fmt: skip
    rates = [r.rate for r in pg]
    ratios = [a.rate / b.rate for a, b in zip(pg, ours, strict=True)]
    return [
        Row(section=section, measure="receive, store on PostgreSQL (same load): acknowledged "
            "callbacks/s", value=f"{median(rates):,.0f}", runs=spread(rates, "{:,.0f}")),
        Row(section=section, measure="receive on PostgreSQL / on SQLite (median of per-pair "
            "ratios)", value=f"{median(ratios):.2f}x", runs=spread(ratios, "{:.2f}")),
    ]  # fmt: skip


def _callback_table(
    section: str, sizes: DeliverySizes, client: str, ours: list[LoadRun], naive: list[LoadRun]
) -> list[Row]:
    rates, naive_rates = [r.rate for r in ours], [r.rate for r in naive]
    ratios = [a / b for a, b in zip(rates, naive_rates, strict=True)]
    what = (f"{sizes.seconds} s of" if client == "wrk" else f"{sizes.callbacks:,}") + (
        f" callbacks, {sizes.connections} connections, {client} client"
        + (f", --workers {sizes.workers}" if sizes.workers else "")
    )
    other = [r.other_cores for r in (*ours, *naive)]
    cpu = "CPU per callback, µs (server / load generator)"
    return [
        Row(section=section, measure=f"receive: acknowledged callbacks/s ({what})",
            value=f"{median(rates):,.0f}", runs=spread(rates, "{:,.0f}"), target=">= 5,000",
            ok=median(rates) >= 5_000),
        Row(section=section, measure="naive aiohttp handler, one SQLite commit each (callbacks/s)",
            value=f"{median(naive_rates):,.0f}", runs=spread(naive_rates, "{:,.0f}")),
        Row(section=section, measure="receive / naive (median of per-pair ratios)",
            value=f"{median(ratios):.2f}x", runs=spread(ratios, "{:.2f}"), target=">= 3x",
            ok=median(ratios) >= 3),
        Row(section=section, measure=f"receive: {cpu}",
            value=f"{median([r.server_us for r in ours]):.0f} / "
                  f"{median([r.client_us for r in ours]):.0f}",
            runs=spread([r.server_us for r in ours], "{:.0f}")),
        Row(section=section, measure=f"naive: {cpu}",
            value=f"{median([r.server_us for r in naive]):.0f} / "
                  f"{median([r.client_us for r in naive]):.0f}",
            runs=spread([r.server_us for r in naive], "{:.0f}")),
        Row(section=section, measure="other load on the machine meanwhile (busy cores)",
            value=f"{median(other):.1f}", runs=spread(other, "{:.1f}")),
    ]  # fmt: skip


# --------------------------------------------------------------------------- the merge


_OUTCOMES = (("read", 60), ("delivered", 20), ("131047", 4), ("131026", 3), ("131049", 3),
             ("130429", 2), ("131050", 1), ("not_sent", 4), ("none", 3))  # fmt: skip
_PLANS = {
    "read": ("sent", "delivered", "read"),
    "delivered": ("sent", "delivered", "delivered"),
    "not_sent": ("not_sent", "not_sent", "not_sent"),
    "none": (),
}
_EXPECTED_READ_SHARE = 0.60


def _outcome(i: int) -> str:
    slot = (i * 37) % 100
    for name, weight in _OUTCOMES:
        if slot < weight:
            return name
        slot -= weight
    raise AssertionError(slot)


def _events(rows: int, total: int) -> Iterator[Callback]:
    """``total`` status events: three per message by its outcome; other campaigns' fill up."""
    made = 0
    for i, person in enumerate(recipients(rows)):
        outcome = _outcome(i)
        steps = _PLANS.get(outcome, ("sent", "failed", "failed"))
        for step, status in enumerate(steps):
            code = outcome if status == "failed" else ""
            yield _callback(f"A{i:09d}", f"wamid.{i}", status, i + 60 * step, person.to, code)
            made += 1
    other = 0
    while made < total:
        yield _callback(f"X{other:09d}", f"wamid.X{other}", "delivered", other, "+919999999999", "")
        made += 1
        other += 1


def _callback(mid: str, wamid: str, status: str, second: int, to: str, code: str) -> Callback:
    at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(1_764_000_000 + second // 100))
    event = StatusEvent(
        message_ids=(wamid, mid), status=DeliveryStatus(status), at=at, recipient=to[1:],
        code=code, title=f"error {code}" if code else "",
    )  # fmt: skip
    return Callback(statuses=(event,))


def _campaign_files(bench: Bench, sizes: DeliverySizes) -> tuple[Path, Path, Path]:
    """The campaign, config and results of the merge (made once, kept under bench/out)."""
    base = bench.out / f"merge-{sizes.campaign_rows}-{sizes.store_callbacks}"
    campaign = write_campaign(base / "campaign.csv", sizes.campaign_rows)
    config = write_config(base / "config.toml", "http://127.0.0.1:9")
    with config.open("a", encoding="utf-8") as handle:
        handle.write('\n[callbacks]\nstore = "callbacks.db"\n')
    results = base / "results.csv"
    ready = base / "ready"
    if not ready.exists():
        progress(f"merge: making a journal of {sizes.campaign_rows:,} messages and a store of "
                 f"{sizes.store_callbacks:,} callbacks (once)")  # fmt: skip
        _journal(campaign, config, results, sizes.campaign_rows)
        _store(base / "callbacks.db", sizes)
        ready.write_text("ok")
    return campaign, config, results


def _journal(campaign: Path, config: Path, results: Path, rows: int) -> None:
    settings = load_settings(config)
    identity = Campaign(open_table(campaign), settings.campaign).identity()
    path = journal_path(results)
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    journal = Journal.open(path, identity=identity, destination=settings.kaleyra.messages_url)
    journal.set_meta("rows", str(rows))
    journal.set_meta("input", str(campaign))
    journal.set_meta("created_at", "2025-11-24T00:00:00.000Z")
    journal.close()
    records = (
        Record(row=i + 1, to=p.to, status="sent", message_id=f"A{i:09d}", http_status=202,
               code="WA202", attempts=1, ref=p.ref, ref1=p.ref1,
               finished_at=time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                         time.gmtime(1_764_000_000 + i // 100)))
        for i, p in enumerate(recipients(rows))
    )  # fmt: skip
    marks = ", ".join("?" * len(Record._fields))
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA synchronous=OFF")
        with db:
            db.executemany(f"INSERT INTO messages VALUES ({marks})", records)


def _store(path: Path, sizes: DeliverySizes) -> None:
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)

    async def create() -> None:
        await (await SqliteCallbackStore.open(path)).close()

    asyncio.run(create())
    inserts = sql.insert_statements(SQLITE)
    one = {i: insert.statement(1) for i, insert in enumerate(inserts)}
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA synchronous=OFF")
        batch: dict[int, list[tuple[object, ...]]] = {0: [], 1: [], 2: []}
        for n, callback in enumerate(_events(sizes.campaign_rows, sizes.store_callbacks), 1):
            for index, params in sql.rows_of(callback, "2025-11-24T00:00:01.000Z"):
                batch[index].append(params)
            if n % 200_000 == 0 or n == sizes.store_callbacks:
                with db:
                    for index, rows in batch.items():
                        db.executemany(one[index], rows)
                batch = {0: [], 1: [], 2: []}


def merge_rows(bench: Bench) -> list[Row]:
    """``bulk-sender report`` of the big campaign: wall time and peak RSS."""
    sizes, section = DeliverySizes.of(bench.sizes), "delivery"
    _campaign, config, results = _campaign_files(bench, sizes)
    walls: list[float] = []
    rss: list[float] = []
    for run in range(bench.sizes.repeat):
        summary = results.with_name(f"summary-{run}.json")
        command = [*bulk_sender(), "report", str(results), "--config", str(config),
                   "--summary-json", str(summary)]  # fmt: skip
        m = bench.run(section, f"merge-{run}", command)
        expect(m, 0, "the report")
        funnel = orjson.loads(summary.read_bytes())["funnel"]
        read = funnel["read"] / sizes.campaign_rows
        if funnel["accepted"] != sizes.campaign_rows or abs(read - _EXPECTED_READ_SHARE) > 0.01:
            raise BenchError(f"the report's funnel is wrong: {funnel}")
        walls.append(m.wall)
        rss.append(m.max_rss_mib)
        progress(f"merge {run + 1}/{bench.sizes.repeat}: {m.wall:.1f} s, {m.max_rss_mib:.0f} MiB")
    what = f"{sizes.store_callbacks:,} callbacks into {sizes.campaign_rows:,} rows"
    return [
        Row(section=section, measure=f"report: merge {what}, whole process (s)",
            value=f"{median(walls):.1f} s", runs=spread(walls, "{:.1f}"), target="< 20 s",
            ok=median(walls) < 20),
        Row(section=section, measure=f"report: merge {what}, peak RSS (MiB)",
            value=f"{median(rss):.0f} MiB", runs=spread(rss, "{:.0f}"), target="< 300 MiB",
            ok=median(rss) < 300),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the delivery measures on their own; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--repeat", type=int, help="runs of each measure (default 3; quick 1)")
    parser.add_argument("--only", choices=("callbacks", "merge"), help="one of the two measures")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="the callbacks' load generator (auto: wrk when installed)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="receive --workers for the callbacks (default: receive's own)",
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.repeat:
        from dataclasses import replace

        sizes = replace(sizes, repeat=args.repeat)
    bench = Bench(sizes=sizes, out=args.out_dir.resolve())
    rows: list[Row] = []
    if args.only in (None, "callbacks"):
        rows += callbacks_rows(bench, args.client, args.workers)
    if args.only in (None, "merge"):
        rows += merge_rows(bench)
    print(render_text(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
