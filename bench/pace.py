"""Latency-sized pace: the rate, not a worker count, sets the pace against a slow server.

Each case sends with the default settings (no ``--concurrency``: the run sizes its requests in
flight from the latency, under the default ceiling) against a server ``300 ms`` away, or one
that answers in 100 ms and then, half-way through the run, in 600 ms. A case with
``concurrency`` set is the fixed pool a user got before (the old default, 32), measured beside
its default-settings peer so the difference shows. The achieved rate and the busiest second
come from the server's arrival times, as in the rate-fidelity section.
"""

from __future__ import annotations

from contextlib import ExitStack

import orjson
from harness import Bench, PaceCase, progress, send_command
from procs import Server
from rate_fidelity import paced_send
from results import Row, median, spread
from workload import write_config

__all__ = ["latency_sized_pace"]

SECTION = "latency-sized pace"


def _server(bench: Bench, k: int, case: PaceCase) -> Server:
    later = () if case.later_latency is None else ((case.switch_after, case.later_latency),)
    return Server(
        logs=bench.logs, name=f"pace-server-{k}", latency=case.latency, latency_after=later
    )


def _inflight_limit(summary: bytes) -> int | None:
    """The run's last in-flight limit, from its ``--summary-json``."""
    limit: int | None = orjson.loads(summary)["in_flight"]["limit"]
    return limit


def latency_sized_pace(bench: Bench) -> list[Row]:
    """Each case's achieved rate and busiest second; each fixed pool's gain over its peer."""
    cases = bench.sizes.pace_cases
    achieved: dict[PaceCase, list[float]] = {case: [] for case in cases}
    busiest: dict[PaceCase, list[float]] = {case: [] for case in cases}
    with ExitStack() as stack:
        servers = [stack.enter_context(_server(bench, k, case)) for k, case in enumerate(cases)]
        for i in range(bench.sizes.repeat):
            for k, (case, server) in enumerate(zip(cases, servers, strict=True)):
                config = write_config(bench.out / f"config-pace-{k}.toml", server.base_url)
                run = bench.fresh_dir(f"pace-{k}-{i}")
                command = send_command(
                    bench.campaign(case.rows), config, run / "results.csv",
                    rate=case.rate, concurrency=case.concurrency,
                    extra=["--summary-json", str(run / "summary.json")],
                )  # fmt: skip
                pace = paced_send(
                    bench, section=SECTION, name=f"pace-{k}-{i}", command=command,
                    server=server, rows=case.rows,
                )  # fmt: skip
                achieved[case].append(pace.achieved)
                busiest[case].append(pace.busiest)
                limit = _inflight_limit((run / "summary.json").read_bytes())
                progress(
                    f"{SECTION}: {case.label()} {i + 1}/{bench.sizes.repeat}: "
                    f"{pace.achieved:,.0f} msg/s ({100 * pace.achieved / case.rate:.1f} %), "
                    f"busiest second {100 * pace.busiest / case.rate:.1f} %, "
                    f"last in-flight limit {limit}"
                )
    rows: list[Row] = []
    for case in cases:
        rows += _case_rows(case, achieved[case], busiest[case])
    for case in cases:
        if case.concurrency is not None and (peer := _peer(case, cases)) is not None:
            rows.append(_gain_row(case, achieved[case], achieved[peer]))
    return rows


def _case_rows(case: PaceCase, achieved: list[float], busiest: list[float]) -> list[Row]:
    """Achieved rate and busiest second in % of the rate; targets for the default settings.

    Beside the achieved rate: the seconds the run took beyond ``(rows - 1) / rate``, which
    unlike the percentage does not shrink as the run grows longer.
    """
    got = [100 * a / case.rate for a in achieved]
    peak = [100 * b / case.rate for b in busiest]
    lost = max(0.0, median([(case.rows - 1) * (1 / a - 1 / case.rate) for a in achieved]))
    targeted = case.concurrency is None
    return [
        Row(section=SECTION, measure=f"{case.label()}: achieved rate, % of configured",
            value=f"{median(got):.1f} % ({median(achieved):,.0f} msg/s, {lost:.2f} s lost)",
            runs=spread(got, "{:.1f}"), target=">= 98 %" if targeted else "",
            ok=median(got) >= 98 if targeted else None),
        Row(section=SECTION, measure=f"{case.label()}: busiest 1 s window, % of configured",
            value=f"{median(peak):.1f} %", runs=spread(peak, "{:.1f}"),
            target="<= 102 %" if targeted else "", ok=median(peak) <= 102 if targeted else None),
    ]  # fmt: skip


def _peer(case: PaceCase, cases: tuple[PaceCase, ...]) -> PaceCase | None:
    """The default-settings case at the same rate against the same server, if there is one."""
    return next(
        (
            other
            for other in cases
            if other.concurrency is None
            and (other.rate, other.latency, other.later_latency)
            == (case.rate, case.latency, case.later_latency)
        ),
        None,
    )


def _gain_row(case: PaceCase, pool: list[float], peer: list[float]) -> Row:
    """The default settings' pace over the fixed pool's, run by run (they alternate)."""
    ratios = [p / f for p, f in zip(peer, pool, strict=True)]
    return Row(
        section=SECTION,
        measure=(
            f"rate {case.rate:g}/s, {case.server()}: msg/s with default settings / with "
            f"{case.settings()} ({median(peer):,.0f} / {median(pool):,.0f})"
        ),
        value=f"{median(ratios):.2f}x",
        runs=spread(ratios, "{:.2f}"),
    )
