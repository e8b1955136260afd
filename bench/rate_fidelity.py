"""Rate fidelity: the achieved rate and the busiest second, from the server's arrival times."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from contextlib import ExitStack

import orjson
from harness import Bench, RateCase, expect, expect_count, progress, send_command
from procs import Server
from results import Row, median, spread
from workload import write_config

__all__ = ["busiest_window", "rate_fidelity"]


def busiest_window(arrivals: Sequence[float], width: float = 1.0) -> int:
    """The most arrivals in any ``width``-second window [t, t + width)."""
    times = sorted(arrivals)
    return max(
        (bisect.bisect_left(times, t + width, lo=i) - i for i, t in enumerate(times)), default=0
    )


def rate_fidelity(bench: Bench) -> list[Row]:
    """Each case's achieved rate and busiest second, from the server's arrival times."""
    section, sizes = "rate fidelity", bench.sizes
    achieved: dict[RateCase, list[float]] = {case: [] for case in sizes.rate_cases}
    busiest: dict[RateCase, list[float]] = {case: [] for case in sizes.rate_cases}
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                Server(logs=bench.logs, name=f"rate-server-{k}", latency=case.latency)
            )
            for k, case in enumerate(sizes.rate_cases)
        ]
        for i in range(sizes.repeat):
            for k, (case, server) in enumerate(zip(sizes.rate_cases, servers, strict=True)):
                config = write_config(bench.out / f"config-rate-{k}.toml", server.base_url)
                server.reset()
                out = bench.fresh_dir(f"rate-{k}-{i}") / "results.csv"
                command = send_command(
                    bench.campaign(case.rows), config, out,
                    rate=case.rate, concurrency=case.concurrency,
                )  # fmt: skip
                m = bench.run(section, f"rate-{k}-{i}", command, also_busy=[server])
                expect(m, 0, f"bulk-sender send at {case.label()}")
                arrivals = server.stats(arrivals=True)["arrivals"]
                (bench.logs / f"rate-{k}-{i}.arrivals.json").write_bytes(
                    orjson.dumps({"launched": m.started, "arrivals": arrivals})
                )
                expect_count(len(arrivals), case.rows, "requests at the server")
                span = arrivals[-1] - arrivals[0]
                achieved[case].append(100 * (len(arrivals) - 1) / span / case.rate)
                busiest[case].append(100 * busiest_window(arrivals) / case.rate)
                progress(
                    f"rate fidelity: {case.label()} {i + 1}/{sizes.repeat}: "
                    f"{achieved[case][-1]:.1f} % achieved, busiest second {busiest[case][-1]:.1f} %"
                )
    rows = []
    for case in sizes.rate_cases:
        got, peak = median(achieved[case]), median(busiest[case])
        rows += [
            Row(section=section, measure=f"{case.label()}: achieved rate, % of configured",
                value=f"{got:.1f} %", runs=spread(achieved[case], "{:.1f}"), target=">= 98 %",
                ok=got >= 98),
            Row(section=section, measure=f"{case.label()}: busiest 1 s window, % of configured",
                value=f"{peak:.1f} %", runs=spread(busiest[case], "{:.1f}"), target="<= 102 %",
                ok=peak <= 102),
        ]  # fmt: skip
    return rows
