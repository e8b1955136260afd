"""The paced limiter and its two gates, on an event loop whose clock is virtual: no test sleeps
for real."""

from __future__ import annotations

import asyncio
import bisect
import math
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_sender.sending.limiter import PacedLimiter, bucket_size
from bulk_sender.sending.ratecontrol import RateController
from bulk_sender.sending.stats import RunStats

T = TypeVar("T")


#: Virtual time that passes in each turn of the loop, as a real clock would. Without it a
#: timer that aiolimiter schedules at "now" because of float rounding fires forever at the
#: same instant (a real loop busy-waits through it for a few nanoseconds).
TICK = 1e-9


class _VirtualSelector(selectors.SelectSelector):
    """A selector that, instead of blocking for ``timeout``, moves the loop's clock forward."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if timeout is None and not ready:
            raise RuntimeError("deadlock: every task waits and no timer is scheduled")
        self._loop.advance(max(timeout or 0.0, TICK))
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: a TICK per turn, and a jump to the next timer when idle."""

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Jump the clock forward."""
        self._now += seconds


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def paced(rate: float, **control: float) -> PacedLimiter:
    """A limiter at ``rate``, its controller built with ``control`` (call inside the loop)."""
    return PacedLimiter(RateController(target=rate, **control))


def steady(rate: float) -> PacedLimiter:
    """A limiter whose rate a 429 cannot change (its floor is its rate): holds only."""
    return paced(rate, floor=rate)


async def acquire_all(
    limiter: PacedLimiter, tasks: int, *, before: Callable[[], Awaitable[None]] | None = None
) -> list[float]:
    """Start ``tasks`` single admissions at once (after ``before``); their loop times, sorted."""
    loop = asyncio.get_running_loop()

    async def one() -> float:
        assert await limiter.admit()
        return loop.time()

    pending = [asyncio.ensure_future(one()) for _ in range(tasks)]
    if before is not None:
        await before()
    return sorted(await asyncio.gather(*pending))


async def acquire_for(
    rate: float, *, workers: int, horizon: float, departure: bool = False
) -> list[float]:
    """``workers`` tasks pass a gate in a loop until ``horizon``; the loop times of passing."""
    loop = asyncio.get_running_loop()
    limiter = paced(rate)
    gate = limiter.depart if departure else limiter.admit
    stamps: list[float] = []

    async def worker() -> None:
        while True:
            assert await gate()
            now = loop.time()
            if now >= horizon:
                return
            stamps.append(now)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return sorted(stamps)


def to_the_microsecond(results: list[tuple[bool, float]]) -> list[tuple[bool, float]]:
    """Gate results with their loop times rounded to the microsecond (the loop ticks by 1 ns)."""
    return [(passed, round(at, 6)) for passed, at in results]


def busiest_window(stamps: list[float], width: float = 1.0, *, start: float = 0.0) -> int:
    """The most acquisitions in any half-open window ``[t, t + width)`` with ``t >= start``."""
    times = [t for t in stamps if t >= start]
    return max((bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


# --------------------------------------------------------------------------- the fake clock


def test_virtual_loop_sleeps_without_waiting() -> None:
    """A 1000 s sleep on the virtual loop ends at loop time 1000 at once."""

    async def main() -> float:
        await asyncio.sleep(1000)
        return asyncio.get_running_loop().time()

    assert run_virtual(main) == pytest.approx(1000.0)


# --------------------------------------------------------------------------- bucket_size


@pytest.mark.parametrize(
    ("rate", "size"),
    [(0.1, 1), (1, 1), (50, 1), (99.9, 1), (100, 1), (199.9, 1), (200, 2), (1000, 10),
     (12345.6, 123)],
)  # fmt: skip
def test_bucket_size_examples(rate: float, size: int) -> None:
    """The bucket holds 1 % of a second's requests, at least one."""
    assert bucket_size(rate) == size


@given(rate=st.floats(min_value=0.01, max_value=1e6))
def test_bucket_size_is_at_most_one_percent(rate: float) -> None:
    """bucket_size(rate) == max(1, floor(rate / 100)): never more than 1 % of the rate."""
    size = bucket_size(rate)
    assert size == max(1, math.floor(rate / 100))
    assert size == 1 or size <= rate / 100


# --------------------------------------------------------------------------- pacing


def assert_paced(rate: float, stamps: list[float], horizon: float) -> None:
    """No 1 s window above rate + bucket, and at least 98 % of the rate over the horizon."""
    assert busiest_window(stamps) <= rate + bucket_size(rate)
    assert len(stamps) >= 0.98 * horizon * rate


@pytest.mark.parametrize("departure", [False, True], ids=["admission", "departure"])
@pytest.mark.parametrize("rate", [0.5, 1.0, 7.0, 50.0, 100.0, 250.0, 1000.0])
def test_pace_examples(rate: float, departure: bool) -> None:
    """At rate R, a 1 s window never carries more than R + bucket through either gate; 10 s
    carry >= 98 % of 10 R."""
    stamps = run_virtual(lambda: acquire_for(rate, workers=8, horizon=10.0, departure=departure))
    assert_paced(rate, stamps, 10.0)


@settings(max_examples=15, deadline=None)
@given(
    rate=st.floats(min_value=0.3, max_value=400.0),
    workers=st.integers(1, 40),
    departure=st.booleans(),
)
def test_pace_property(rate: float, workers: int, departure: bool) -> None:
    """For any rate, number of waiting tasks and gate, the pace holds on the virtual clock."""
    stamps = run_virtual(
        lambda: acquire_for(rate, workers=workers, horizon=10.0, departure=departure)
    )
    assert_paced(rate, stamps, 10.0)


def test_first_acquisitions_are_a_bucketful() -> None:
    """A fresh limiter lets exactly a bucketful through at once, then paces."""
    stamps = run_virtual(lambda: acquire_for(1000.0, workers=50, horizon=0.0005))
    assert len(stamps) == bucket_size(1000.0)


# --------------------------------------------------------------------------- rate changes


def test_set_rate_lower_slows_waiters_already_queued() -> None:
    """A slow-down applies to admissions already waiting, from the moment of the change."""

    async def main() -> list[float]:
        limiter = paced(10.0, floor=1.0, cooldown=0.0)

        async def slow_down() -> None:
            await asyncio.sleep(0.55)
            while limiter.rate > 1.0:  # 429s without Retry-After: 10 -> 5 -> ... -> 1
                limiter.throttled(None)

        return await acquire_all(limiter, 30, before=slow_down)

    stamps = run_virtual(main)
    before = [t for t in stamps if t < 0.55]
    assert len(before) == 6  # t = 0, 0.1, ..., 0.5 at 10/s
    assert busiest_window(stamps, start=0.55) <= 1 + bucket_size(1.0)
    # The 24 still waiting go at 1/s: the last one about 23 s after the change.
    assert stamps[-1] >= 0.55 + 22


def test_set_rate_higher_speeds_up_waiters_already_queued() -> None:
    """A speed-up applies to admissions already waiting."""

    async def main() -> list[float]:
        limiter = paced(100.0, floor=1.0, cooldown=0.0, climb_after=0.1, climb_step=1.0)
        while limiter.rate > 1.0:
            limiter.throttled(None)

        async def speed_up() -> None:
            await asyncio.sleep(0.5)
            assert limiter.answered() is not None
            assert limiter.rate == 100.0

        return await acquire_all(limiter, 10, before=speed_up)

    stamps = run_virtual(main)
    assert stamps[-1] < 1.5


def test_set_rate_to_the_same_rate_keeps_the_bucket() -> None:
    """An answer that changes no rate (at the target already) lets no new burst through."""

    async def main() -> list[float]:
        limiter = paced(1.0)

        async def same() -> None:
            await asyncio.sleep(0.5)
            assert limiter.answered() is None

        return await acquire_all(limiter, 4, before=same)

    assert run_virtual(main) == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-6)


def test_a_rate_change_applies_to_both_gates() -> None:
    """The two gates share one rate: after a 429 halves it, departures are paced at half too."""

    async def main() -> tuple[float, list[float]]:
        limiter = paced(10.0)
        limiter.throttled(None)
        loop = asyncio.get_running_loop()
        stamps = []
        for _ in range(6):
            assert await limiter.depart()
            stamps.append(loop.time())
        return limiter.rate, stamps

    rate, stamps = run_virtual(main)
    assert rate == 5.0
    assert stamps == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-6)


def test_repr_shows_rate() -> None:
    """The repr names the current rate and the bucket."""

    async def main() -> str:
        limiter = paced(5.0)
        limiter.throttled(None)
        return repr(limiter)

    text = run_virtual(main)
    assert text.startswith("PacedLimiter(rate=2.5, bucket=")


def test_run_stats_read_the_limiters_rate() -> None:
    """The run's figures show the limiter's rate as it changes: the rate is kept in one place."""

    async def main() -> list[float]:
        stats = RunStats(target_rate=8.0)
        seen = [stats.rate]
        stats.rate_source = limiter = paced(8.0)
        limiter.throttled(None)
        return [*seen, stats.rate, limiter.rate]

    assert run_virtual(main) == [8.0, 4.0, 4.0]


# --------------------------------------------------------------------------- hold


def test_hold_blocks_new_acquisitions_until_then() -> None:
    """Nothing is admitted before the hold's end; then a bucketful, then the pace."""

    async def main() -> list[float]:
        limiter = steady(100.0)
        limiter.throttled(5.0)
        return await acquire_all(limiter, 20)

    stamps = run_virtual(main)
    assert stamps[0] >= 5.0
    assert stamps[-1] == pytest.approx(5.0 + 19 / 100)


def test_hold_blocks_waiters_already_queued() -> None:
    """A hold that begins while admissions wait on the bucket stops them too."""

    async def main() -> list[float]:
        limiter = steady(1.0)

        async def hold() -> None:
            await asyncio.sleep(2.5)
            limiter.throttled(3.5)

        return await acquire_all(limiter, 6, before=hold)

    stamps = run_virtual(main)
    assert not [t for t in stamps if 2.5 < t < 6.0]
    assert stamps[:3] == pytest.approx([0.0, 1.0, 2.0], abs=1e-6)
    assert stamps[3] >= 6.0
    assert busiest_window(stamps, start=6.0) <= 1 + bucket_size(1.0)


def test_hold_is_never_shortened() -> None:
    """A later hold that ends sooner does not shorten an earlier, longer one."""

    async def main() -> list[float]:
        limiter = steady(10.0)
        limiter.throttled(3.0)
        limiter.throttled(1.0)
        return await acquire_all(limiter, 1)

    assert run_virtual(main)[0] >= 3.0


def test_hold_in_the_past_changes_nothing() -> None:
    """A 429 without Retry-After holds nothing beyond now: admission is not delayed."""

    async def main() -> list[float]:
        await asyncio.sleep(10)
        limiter = steady(10.0)
        limiter.throttled(None)
        return await acquire_all(limiter, 1)

    assert run_virtual(main) == [pytest.approx(10.0)]


def test_departure_never_waits_out_a_hold() -> None:
    """During a hold the departure gate says no at once, so no row waits a hold in flight."""

    async def main() -> tuple[bool, float]:
        limiter = steady(10.0)
        limiter.throttled(60.0)
        passed = await limiter.depart()
        return passed, asyncio.get_running_loop().time()

    passed, at = run_virtual(main)
    assert not passed
    assert at == pytest.approx(0.0, abs=1e-6)


def test_a_hold_that_begins_wakes_departures_waiting_for_a_slot() -> None:
    """A row waiting at departure when a 429 with Retry-After arrives is let go at once, unsent."""

    async def main() -> list[tuple[bool, float]]:
        limiter = steady(1.0)
        loop = asyncio.get_running_loop()

        async def one() -> tuple[bool, float]:
            return await limiter.depart(), loop.time()

        waiting = [asyncio.ensure_future(one()) for _ in range(3)]
        await asyncio.sleep(0.5)
        limiter.throttled(60.0)
        return await asyncio.gather(*waiting)

    assert to_the_microsecond(run_virtual(main)) == [(True, 0.0), (False, 0.5), (False, 0.5)]


# --------------------------------------------------------------------------- stop


def test_stop_wakes_admissions_waiting_out_a_hold() -> None:
    """A stop during a 60 s hold ends every admission wait at once, with False."""

    async def main() -> list[tuple[bool, float]]:
        limiter = steady(100.0)
        loop = asyncio.get_running_loop()
        limiter.throttled(60.0)

        async def one() -> tuple[bool, float]:
            return await limiter.admit(), loop.time()

        waiting = [asyncio.ensure_future(one()) for _ in range(5)]
        await asyncio.sleep(2.0)
        limiter.stop()
        return await asyncio.gather(*waiting)

    assert to_the_microsecond(run_virtual(main)) == [(False, 2.0)] * 5


@pytest.mark.parametrize("departure", [False, True], ids=["admission", "departure"])
def test_stop_wakes_waiters_on_the_rate(departure: bool) -> None:
    """At 0.01/s (a slot every 100 s) a stop ends the waits for a slot at once, with False."""

    async def main() -> list[tuple[bool, float]]:
        limiter = paced(0.01)
        gate = limiter.depart if departure else limiter.admit
        loop = asyncio.get_running_loop()

        async def one() -> tuple[bool, float]:
            return await gate(), loop.time()

        waiting = [asyncio.ensure_future(one()) for _ in range(3)]
        await asyncio.sleep(5.0)
        limiter.stop()
        return await asyncio.gather(*waiting)

    assert to_the_microsecond(run_virtual(main)) == [(True, 0.0), (False, 5.0), (False, 5.0)]


def test_nothing_passes_after_a_stop() -> None:
    """Once stopped, both gates say no at once, with capacity to spare and no hold."""

    async def main() -> list[tuple[bool, float]]:
        limiter = paced(1000.0)
        limiter.stop()
        loop = asyncio.get_running_loop()
        return [(await limiter.admit(), loop.time()), (await limiter.depart(), loop.time())]

    assert to_the_microsecond(run_virtual(main)) == [(False, 0.0), (False, 0.0)]
