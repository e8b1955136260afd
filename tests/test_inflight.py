"""The in-flight limit follows rate x latency, under the ceiling (pure, plain-number clock)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_sender.sandbox.server import Sandbox
from bulk_sender.sending.inflight import InflightSizer
from tests.conftest import CliRunner, Run, write_config, write_csv


def _fed(sizer: InflightSizer, latency: float, n: int = 256) -> None:
    for _ in range(n):
        sizer.observe(latency)


def test_start_assumes_a_far_away_api() -> None:
    """Before any answer, 500/s is sized for 300 ms: 189 in flight (500 x 0.3 x 1.25 + 1)."""
    sizer = InflightSizer(ceiling=1000)
    assert sizer.start(500) == 189


def test_latency_up_raises_the_limit() -> None:
    """From 100 ms to 600 ms at 500/s the limit goes from 64 to 376."""
    sizer = InflightSizer(ceiling=1000)
    sizer.start(500)
    _fed(sizer, 0.1)
    first = sizer.resize(0.0, 500)
    assert first is not None and first.new == 64
    _fed(sizer, 0.6)
    second = sizer.resize(1.0, 500)
    assert second is not None
    assert (second.old, second.new, second.capped) == (64, 376, False)


def test_latency_down_lowers_the_limit() -> None:
    """A server that speeds up from 600 ms to 20 ms needs only a handful in flight."""
    sizer = InflightSizer(ceiling=1000)
    _fed(sizer, 0.6)
    sizer.resize(0.0, 200)
    assert sizer.limit == 151
    _fed(sizer, 0.02)
    sizer.resize(1.0, 200)
    assert sizer.limit == 6


def test_a_lower_rate_after_a_429_needs_fewer() -> None:
    """Halving the rate at the same latency roughly halves the limit."""
    sizer = InflightSizer(ceiling=1000)
    _fed(sizer, 0.3)
    sizer.resize(0.0, 1000)
    assert sizer.limit == 376
    sizer.resize(1.0, 500)
    assert sizer.limit == 189


def test_the_ceiling_binds_and_says_so() -> None:
    """At 300 ms, 500/s wants 189 in flight; a ceiling of 64 caps it and reports it capped."""
    sizer = InflightSizer(ceiling=64)
    _fed(sizer, 0.3)
    change = sizer.resize(0.0, 500)
    assert change is not None
    assert (change.new, change.wanted, change.capped) == (64, 189, True)
    assert sizer.capped


def test_the_percentile_ignores_a_rare_slow_answer() -> None:
    """One slow answer in a hundred does not size the run for it (p90)."""
    sizer = InflightSizer(ceiling=1000)
    _fed(sizer, 0.1, 99)
    sizer.observe(5.0)
    sizer.resize(0.0, 100)
    assert sizer.limit == 14


def _sent(sizer: InflightSizer, start: float, n: int, every: float) -> list[int]:
    """``n`` requests leaving ``every`` seconds apart from ``start``: their tickets."""
    return [sizer.sent(start + i * every) for i in range(n)]


def test_latency_up_is_seen_in_flight_before_any_slow_answer() -> None:
    """Sized for 100 ms at 500/s (64), 64 requests that have not come back after 0.2 s say the
    latency is at least their age: the limit grows with it, with no answer in between."""
    sizer = InflightSizer(ceiling=1000)
    _fed(sizer, 0.1)
    sizer.resize(5.0, 500)
    assert sizer.limit == 64
    _sent(sizer, 5.0, 64, 0.002)  # all 64 out by 5.126 s; the slow server answers none yet
    assert sizer.resize(5.1, 500) is None  # 0.088 s: within what 100 ms already covers
    change = sizer.resize(5.2, 500)
    # The 7th oldest of 64 (the oldest tenth's youngest) left at 5.012: 0.188 s in flight.
    assert change is not None and change.new == math.ceil(500 * 0.188 * 1.25) + 1 == 119
    assert sizer.resize(5.4, 500) is not None and sizer.limit == 244  # 0.388 s
    assert sizer.latency == pytest.approx(0.1)  # the answers' own figure did not move


def test_latency_down_is_not_held_up_by_what_is_in_flight() -> None:
    """A server that speeds up from 600 ms to 20 ms: requests just sent are young, and the
    limit falls to what the fast answers need."""
    sizer = InflightSizer(ceiling=1000)
    _fed(sizer, 0.6)
    sizer.resize(0.0, 200)
    assert sizer.limit == 151
    _sent(sizer, 1.0, 4, 0.005)
    _fed(sizer, 0.02)
    sizer.resize(1.015, 200)
    assert sizer.limit == 6


def test_an_answered_request_no_longer_counts_in_flight() -> None:
    """Once a request has landed its age no longer sizes the limit; its latency does."""
    sizer = InflightSizer(ceiling=1000, window=4)
    _fed(sizer, 0.1, 4)
    ticket = sizer.sent(0.0)
    sizer.resize(1.0, 100)
    assert sizer.limit == 126  # 1 s in flight
    assert sizer.landed(ticket, 1.0) == 1.0
    _fed(sizer, 0.1, 4)  # and a window of fast answers since
    sizer.resize(1.1, 100)
    assert sizer.limit == 14


def test_a_429_while_large_needs_fewer_even_with_old_requests_in_flight() -> None:
    """At 1,000/s with 400 requests 0.5 s in flight the limit is large; a 429 halves the rate,
    and the limit halves with it."""
    sizer = InflightSizer(ceiling=2000)
    _fed(sizer, 0.3)
    _sent(sizer, 0.0, 400, 0.0)
    sizer.resize(0.5, 1000)
    assert sizer.limit == math.ceil(1000 * 0.5 * 1.25) + 1 == 626
    sizer.resize(0.55, 500)
    assert sizer.limit == math.ceil(500 * 0.55 * 1.25) + 1 == 345


def test_ages_in_flight_never_pass_the_ceiling_nor_claim_it_binds() -> None:
    """Requests 5 s in flight would want 3,126 at 500/s: the ceiling holds the limit, which is
    capped, but the answers (100 ms) say the ceiling is enough: no note to raise it."""
    sizer = InflightSizer(ceiling=512)
    _fed(sizer, 0.1)
    _sent(sizer, 0.0, 50, 0.0)
    change = sizer.resize(5.0, 500)
    assert change is not None and (change.new, change.wanted, change.capped) == (512, 3126, True)
    assert not sizer.binds(500)


def test_one_request_that_hangs_among_many_does_not_count() -> None:
    """One request hanging for 20 s among 50 young ones: the age read at the percentile is a
    young one's, as one slow answer among many does not size the run (p90)."""
    sizer = InflightSizer(ceiling=1000)
    _fed(sizer, 0.1)
    sizer.sent(0.0)
    _sent(sizer, 19.95, 50, 0.001)
    sizer.resize(20.0, 500)
    assert sizer.limit == 64


def test_a_request_that_hangs_counts_for_the_timeout_at_most() -> None:
    """While few are in flight a hanging request is the oldest tenth: its age counts, but never
    for more than the request timeout (10 s here), so 2/s waits for 26 at most, not 151."""
    sizer = InflightSizer(ceiling=1000, timeout=10.0)
    _fed(sizer, 0.1)
    sizer.sent(0.0)
    sizer.resize(60.0, 2)
    assert sizer.limit == math.ceil(2 * 10.0 * 1.25) + 1 == 26
    assert not sizer.binds(2)


@given(
    ceiling=st.integers(1, 2000),
    rate=st.floats(0.01, 5000),
    latencies=st.lists(st.floats(0.0, 120.0), min_size=1, max_size=50),
    departures=st.lists(st.floats(0.0, 1000.0), max_size=50),
    now=st.floats(0.0, 1000.0),
)
def test_the_limit_stays_between_floor_and_ceiling(
    ceiling: int, rate: float, latencies: list[float], departures: list[float], now: float
) -> None:
    """Whatever the rate, latencies and requests in flight, 1 <= floor <= limit <= ceiling."""
    sizer = InflightSizer(ceiling=ceiling)
    assert 1 <= sizer.start(rate) <= ceiling
    for latency in latencies:
        sizer.observe(latency)
    for departure in sorted(departures):
        sizer.sent(departure)
    sizer.resize(now, rate)
    assert 1 <= sizer.floor <= sizer.limit <= ceiling


def test_a_ceiling_below_one_is_refused() -> None:
    """A ceiling of 0 would send nothing: refused."""
    with pytest.raises(ValueError, match="ceiling"):
        InflightSizer(ceiling=0)


def _latency_campaign(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, *, rows: int, **sending: object
) -> Run:
    numbers = [f"+9198454{i:05d}" for i in range(rows)]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url, sending=dict(sending))
    run = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv", "-q")
    assert run.code == 0, run.err
    assert sorted(r.to for r in sandbox.accepted()) == sorted(numbers)
    return run


def test_a_slow_server_gets_more_requests_in_flight_than_a_fixed_pool(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """At 150/s against 500 ms the run keeps far more than the old 32 in flight, untold."""
    # About 75 in flight; the ceiling (512) would bind only if the latency seen grew past 3.4 s,
    # which a loaded machine's scheduling delays do not reach.
    sandbox.faults.latency = 0.5
    run = _latency_campaign(tmp_path, sandbox, cli, rows=300, rate_per_second=150, concurrency=512)
    assert sandbox.most_in_progress > 32
    assert "concurrency_capped" not in run.err


def test_a_binding_ceiling_is_said_once_with_the_figure_to_set(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Concurrency 8 at 200/s against 300 ms: never more than 8 at once, one log line, summary."""
    sandbox.faults.latency = 0.3
    run = _latency_campaign(tmp_path, sandbox, cli, rows=60, rate_per_second=200, concurrency=8)
    assert sandbox.most_in_progress <= 8
    assert run.err.count("bulk_sender.concurrency_capped") == 1
    assert re.search(r"200/s needs about \d+ in flight; concurrency caps it at 8", run.err)
    assert "the pace was held down by concurrency" in run.out


def test_binds_only_when_even_the_bare_need_is_over_the_ceiling() -> None:
    """Headroom alone over the ceiling is not a shortfall; rate x latency over it is."""
    sizer = InflightSizer(ceiling=100)
    _fed(sizer, 0.09)
    sizer.resize(0.0, 1000)  # needs 90, wants 114 with headroom: capped, but reaches the rate
    assert sizer.capped and not sizer.binds(1000)
    _fed(sizer, 0.2)
    sizer.resize(1.0, 1000)  # needs 200
    assert sizer.binds(1000)
