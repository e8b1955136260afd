"""Ledger checks per second, the audience ledger on PostgreSQL beside SQLite.

Two figures, each measured in a process of its own (``python bench/ledger_checks.py --worker
LOCATION``) through the :class:`~bulk_sender.stores.ledger.Ledger` calls a send makes, with
the repeat guard (24 h) and a frequency cap (2 in 24 h) on:

* **takes/s**: slots taken and committed per second by one sending process: ``takers``
  concurrent callers (a send's messages in flight), each awaiting its take before the next,
  every take a new recipient (each checked against the ledger, then recorded), the commits
  grouped as a send's are (durable: SQLite ``synchronous=FULL``, PostgreSQL
  ``synchronous_commit = on``);
* **screens/s**: messages screened per second (the preflight's read-only check), in batches
  of 2,048, against that ledger; a quarter of the numbers have a send in it and are held.

Runs alternate SQLite and PostgreSQL (a fresh file, a fresh database each run, dropped after).
``python bench/run.py --only "ledger checks"`` puts the rows in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from harness import QUICK, Bench, BenchError, progress
from pg import PG_ENV, pg_database, pg_server
from results import Row, median, spread

__all__ = ["ledger_check_rows"]

_FIRST = 919_800_000_000
_DAY = 24 * 3_600_000


@dataclass(frozen=True, slots=True)
class CheckSizes:
    """How many takes and concurrent takers; screened messages are four times the takes."""

    takes: int = 20_000
    takers: int = 64


def ledger_check_rows(bench: Bench) -> list[Row]:
    """Takes/s and screens/s on SQLite and on PostgreSQL, runs alternating."""
    sizes = CheckSizes(1_000, 64) if bench.sizes == QUICK else CheckSizes()
    server = pg_server()
    found: dict[str, list[dict[str, float]]] = {"SQLite": [], "PostgreSQL": []}
    for run in range(bench.sizes.repeat):
        found["SQLite"].append(
            _worker(bench, str(bench.fresh_dir(f"checks-{run}") / "l.db"), sizes)
        )
        if server is not None:
            found["PostgreSQL"].append(_on_postgres(bench, server, run, sizes))
        progress(f"ledger checks {run + 1}/{bench.sizes.repeat}: " + ", ".join(
            f"{name} {r[-1]['takes']:,.0f} takes/s, {r[-1]['screens']:,.0f} screens/s"
            for name, r in found.items() if r
        ))  # fmt: skip
    what = f"{sizes.takes:,} takes by {sizes.takers} concurrent takers"
    rows: list[Row] = []
    for name, runs in found.items():
        if not runs:
            rows.append(Row(section="ledger checks", measure=f"{name}: skipped",
                            value=f"no server ({PG_ENV})"))  # fmt: skip
            continue
        takes = [r["takes"] for r in runs]
        screens = [r["screens"] for r in runs]
        rows += [
            Row(section="ledger checks", measure=f"{name}: takes committed/s ({what})",
                value=f"{median(takes):,.0f}", runs=spread(takes, "{:,.0f}")),
            Row(section="ledger checks", measure=f"{name}: preflight screens/s "
                f"({4 * sizes.takes:,} messages, batches of 2,048)",
                value=f"{median(screens):,.0f}", runs=spread(screens, "{:,.0f}")),
        ]  # fmt: skip
    return rows


def _on_postgres(bench: Bench, server: str, run: int, sizes: CheckSizes) -> dict[str, float]:
    with pg_database(server, f"bulk_sender_bench_ledger_{os.getpid()}_{run}") as url:
        return _worker(bench, url, sizes)


def _worker(bench: Bench, location: str, sizes: CheckSizes) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", location, "--takes", str(sizes.takes),
               "--takers", str(sizes.takers)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=bench.sizes.timeout)
    if done.returncode != 0:
        raise BenchError(f"ledger checks on {location.split('?')[0]}: {done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


# --------------------------------------------------------------------------- the worker


async def _measure(location: str, takes: int, takers: int) -> dict[str, float]:
    from bulk_sender.audience.rules import Limits
    from bulk_sender.stores.ledger import TakeRequest, open_ledger

    ledger = await open_ledger(location)
    assert ledger is not None
    limits = Limits(repeat_ms=_DAY, cap_messages=2, cap_ms=_DAY)
    try:
        campaign = await ledger.register_campaign("bench", "bench.csv")

        async def taker(first: int) -> None:
            for i in range(first, takes, takers):
                now = time.time_ns() // 1_000_000
                request = TakeRequest(_FIRST + i, 7, campaign, i, 0, now, limits.bounds(now))
                if await ledger.take(request) is not None:
                    raise AssertionError("a take of a new recipient was refused")

        started = time.perf_counter()
        await asyncio.gather(*(taker(k) for k in range(takers)))
        took = time.perf_counter() - started
        numbers = [f"+{_FIRST + i}" for i in range(-3 * takes, takes)]
        bounds = limits.bounds(time.time_ns() // 1_000_000)
        started = time.perf_counter()
        held = 0
        for start in range(0, len(numbers), 2048):
            batch = numbers[start : start + 2048]
            held += len(await ledger.screen(batch, [7] * len(batch), bounds))
        screened = time.perf_counter() - started
        if held != takes:
            raise AssertionError(f"the screen held {held}, not {takes}")
    finally:
        await ledger.close()
    return {"takes": takes / took, "screens": len(numbers) / screened}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", required=True, help="the ledger's location (path or URL)")
    parser.add_argument("--takes", type=int, default=CheckSizes().takes)
    parser.add_argument("--takers", type=int, default=CheckSizes().takers)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_measure(args.worker, args.takes, args.takers))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
