"""Rate fidelity: the achieved rate and the busiest second, from the server's arrival times."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from contextlib import ExitStack
from typing import NamedTuple

import orjson
from harness import Bench, RateCase, expect, expect_count, progress, send_command
from procs import Server
from results import Row, median, spread
from workload import write_config

__all__ = ["Pace", "busiest_window", "paced_send", "rate_fidelity"]


class Pace(NamedTuple):
    """What the server saw of one run."""

    achieved: float  # requests a second: (requests - 1) / (last arrival - first arrival)
    busiest: int  # the most requests in any 1-second window


def busiest_window(arrivals: Sequence[float], width: float = 1.0) -> int:
    """The most arrivals in any ``width``-second window [t, t + width)."""
    times = sorted(arrivals)
    return max(
        (bisect.bisect_left(times, t + width, lo=i) - i for i, t in enumerate(times)), default=0
    )


def paced_send(
    bench: Bench, *, section: str, name: str, command: Sequence[str], server: Server, rows: int
) -> Pace:
    """Run one send against ``server`` (reset first); its pace, from the server's arrivals.

    The arrival times are kept in ``logs/<name>.arrivals.json`` beside the run's output.
    """
    server.reset()
    m = bench.run(section, name, command, also_busy=[server])
    expect(m, 0, f"bulk-sender send ({name})")
    arrivals = server.stats(arrivals=True)["arrivals"]
    (bench.logs / f"{name}.arrivals.json").write_bytes(
        orjson.dumps({"launched": m.started, "arrivals": arrivals})
    )
    expect_count(len(arrivals), rows, "requests at the server")
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    return Pace(achieved=achieved, busiest=busiest_window(arrivals))


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
                out = bench.fresh_dir(f"rate-{k}-{i}") / "results.csv"
                command = send_command(
                    bench.campaign(case.rows), config, out,
                    rate=case.rate, concurrency=case.concurrency,
                )  # fmt: skip
                pace = paced_send(
                    bench, section=section, name=f"rate-{k}-{i}", command=command,
                    server=server, rows=case.rows,
                )  # fmt: skip
                achieved[case].append(100 * pace.achieved / case.rate)
                busiest[case].append(100 * pace.busiest / case.rate)
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
