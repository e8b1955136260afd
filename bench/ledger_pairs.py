"""The audience ledger's cost alone: ``python bench/ledger_pairs.py --pairs 5``.

The same send (``bench/run.py``'s throughput campaign, unlimited rate) with the ledger off and
on, in pairs run back to back (which goes first alternates), against one ``fast_server.py``;
each ledger-on run starts from a fresh ledger, so every message's slot is taken and committed.
Prints each pair's msg/s, its ratio on / off by wall time and by CPU time (the sending process
and its planning process: less sensitive than wall time to what else the machine runs), the
other load, and the medians. Quicker than ``bench/run.py --only throughput``, which also runs
the bare loop and the tmpfs arm, and more pairs fit in the same time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from harness import UNLIMITED_RATE, Bench, Sizes, expect, expect_count, send_command
from procs import BENCH_DIR, Measured, Server
from workload import write_config


def _send(bench: Bench, server: Server, name: str, ledger: bool) -> Measured:
    directory = bench.fresh_dir(name)
    config = write_config(
        directory / "config.toml",
        server.base_url,
        ledger=directory / "ledger.db" if ledger else None,
    )
    rows = bench.sizes.throughput_rows
    command = send_command(
        bench.campaign(rows), config, directory / "results.csv", rate=UNLIMITED_RATE,
        concurrency=bench.sizes.concurrency,
    )  # fmt: skip
    server.reset()
    measured = bench.run("ledger pairs", name, command, also_busy=[server])
    expect(measured, 0, name)
    expect_count(server.stats()["accepted"], rows, f"requests {name} sent")
    return measured


def main() -> int:
    """Run the pairs; print them and their medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out")
    args = parser.parse_args()
    sizes = Sizes(throughput_rows=args.rows, concurrency=args.concurrency)
    bench = Bench(sizes=sizes, out=args.out_dir.resolve())
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}")
    walls: list[float] = []
    cpus: list[float] = []
    with Server(logs=bench.logs, name="ledger-pairs-server") as server:
        _send(bench, server, "ledger-pairs-warm-up", True)  # fills the bytecode cache
        for pair in range(args.pairs):
            first = pair % 2 == 1  # the ledger-on run goes first every other pair
            runs = {
                on: _send(bench, server, f"ledger-pairs-{pair}-{on}", on)
                for on in (first, not first)
            }
            off, on = runs[False], runs[True]
            walls.append(off.wall / on.wall)
            cpus.append(off.cpu / on.cpu)
            print(
                f"pair {pair + 1}: off {args.rows / off.wall:,.0f} msg/s, on "
                f"{args.rows / on.wall:,.0f} msg/s; on/off by wall {walls[-1]:.2f}, by CPU "
                f"{cpus[-1]:.2f}; other load {off.other_cores:.2f} / {on.other_cores:.2f} cores",
                flush=True,
            )
    print(
        f"median on/off: by wall {statistics.median(walls):.2f}x "
        f"({', '.join(f'{r:.2f}' for r in walls)}), by CPU {statistics.median(cpus):.2f}x "
        f"({', '.join(f'{r:.2f}' for r in cpus)})"
    )
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
