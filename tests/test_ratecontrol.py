"""The 429 rate controller, driven with plain float times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_sender.sending.ratecontrol import RateChange, RateController
from tests.strategies_http import rate_events


def controller(target: float = 100.0) -> RateController:
    """A controller with the documented defaults written out."""
    return RateController(target=target, floor=0.5, cooldown=1.0, climb_after=2.0, climb_step=0.1)


def test_starts_at_target_without_hold() -> None:
    """A new controller sends at the configured rate with no hold."""
    rc = controller()
    assert (rc.current, rc.hold_until) == (100.0, 0.0)


def test_429_halves_the_rate() -> None:
    """The first 429 halves the rate and reports the change."""
    rc = controller()
    assert rc.on_throttle(10.0, None) == RateChange(100.0, 50.0, "429 from Kaleyra")
    assert rc.current == 50.0


def test_burst_within_cooldown_halves_once() -> None:
    """429s answered within ``cooldown`` of the first are one signal: one halving."""
    rc = controller()
    changes = [rc.on_throttle(10.0 + k * 0.1, None) for k in range(10)]
    assert changes[0] is not None
    assert changes[1:] == [None] * 9
    assert rc.current == 50.0


def test_separate_429s_halve_again() -> None:
    """429s further apart than ``cooldown`` halve the rate each time."""
    rc = controller()
    for t in (0.0, 1.0, 2.0):
        rc.on_throttle(t, None)
    assert rc.current == 12.5


def test_sustained_429_storm_keeps_halving() -> None:
    """429s every 0.1 s for 5 s (no Retry-After) halve the rate about once per cooldown."""
    rc = controller()
    for k in range(50):
        rc.on_throttle(k * 0.1, None)
    assert rc.current <= 100.0 / 2**4


def test_never_below_floor() -> None:
    """However many 429s, the rate stops at ``floor`` and further 429s change nothing."""
    rc = controller(target=10.0)
    for t in range(20):
        rc.on_throttle(float(t), None)
    assert rc.current == 0.5
    assert rc.on_throttle(100.0, None) is None


def test_floor_above_target_is_the_target() -> None:
    """A floor above the target is lowered to the target: 429s cannot change the rate."""
    rc = RateController(target=0.2, floor=0.5)
    assert rc.floor == 0.2
    assert rc.on_throttle(0.0, 5.0) is None
    assert rc.current == 0.2


def test_target_must_be_positive() -> None:
    """A zero or negative target rate is refused."""
    with pytest.raises(ValueError):
        RateController(target=0.0)


def test_hold_until_is_now_plus_retry_after() -> None:
    """A 429 holds sending until now + Retry-After, and a later, shorter one never shortens it."""
    rc = controller()
    rc.on_throttle(10.0, 5.0)
    assert rc.hold_until == 15.0
    rc.on_throttle(11.0, 1.0)
    assert rc.hold_until == 15.0
    rc.on_throttle(12.0, 30.0)
    assert rc.hold_until == 42.0


def test_429_without_retry_after_holds_until_now() -> None:
    """A 429 without Retry-After sets no hold beyond now."""
    rc = controller()
    rc.on_throttle(7.0, None)
    assert rc.hold_until == 7.0


def test_hold_is_set_even_within_cooldown_and_at_floor() -> None:
    """A 429 that does not change the rate still extends the hold."""
    rc = RateController(target=0.5)
    rc.on_throttle(0.0, 1.0)
    rc.on_throttle(0.1, 9.0)
    assert rc.hold_until == 9.1


def test_clean_at_target_does_nothing() -> None:
    """Clean answers at the target rate change nothing."""
    rc = controller()
    assert rc.on_clean(1000.0) is None
    assert rc.current == 100.0


def test_climbs_only_after_climb_after_without_429() -> None:
    """After a 429, clean answers climb by climb_step * target only once climb_after has passed."""
    rc = controller()
    rc.on_throttle(0.0, None)
    assert rc.on_clean(1.0) is None
    assert rc.on_clean(1.99) is None
    assert rc.on_clean(2.0) == RateChange(50.0, 60.0, "answers are clean again")
    assert rc.on_clean(3.0) is None
    assert rc.on_clean(4.0) == RateChange(60.0, 70.0, "answers are clean again")


def test_a_429_restarts_the_quiet_period() -> None:
    """A 429 that does not halve (within cooldown) still postpones the climb."""
    rc = controller()
    rc.on_throttle(0.0, None)
    rc.on_throttle(0.9, None)
    assert rc.on_clean(2.0) is None
    assert rc.on_clean(2.9) is not None


def test_climb_never_passes_target() -> None:
    """The last climb step stops exactly at the target."""
    rc = RateController(target=10.0, climb_step=0.3)
    rc.on_throttle(0.0, None)
    for k in range(1, 10):
        rc.on_clean(2.0 * k)
    assert rc.current == 10.0


def test_storm_then_clean_returns_exactly_to_target() -> None:
    """A storm of 429s down to the floor, then clean answers: back to exactly the target."""
    rc = controller(target=37.3)
    t = 0.0
    for _ in range(200):
        rc.on_throttle(t, 0.5)
        t += 1.5
    assert rc.current == 0.5
    for _ in range(1000):
        t += 0.25
        rc.on_clean(t)
    assert rc.current == 37.3


@given(
    target=st.floats(min_value=0.01, max_value=10_000),
    floor=st.floats(min_value=0.01, max_value=10_000),
    step=st.floats(min_value=0.01, max_value=1.0),
    events=rate_events,
)
def test_rate_stays_between_floor_and_target(
    target: float, floor: float, step: float, events: list[tuple[float, bool, float | None]]
) -> None:
    """For any time-ordered 429s and clean answers, floor <= current <= target."""
    rc = RateController(target=target, floor=floor, climb_step=step)
    now = 0.0
    for gap, throttled, retry_after in events:
        now += gap
        change = rc.on_throttle(now, retry_after) if throttled else rc.on_clean(now)
        assert rc.floor <= rc.current <= rc.target
        if change is not None:
            assert change.new == rc.current
            assert change.new < change.old if throttled else change.new > change.old


@given(target=st.floats(min_value=0.5, max_value=10_000), events=rate_events)
def test_clean_answers_always_return_to_target(
    target: float, events: list[tuple[float, bool, float | None]]
) -> None:
    """Whatever happened before, enough clean answers over time bring back the exact target."""
    rc = RateController(target=target)
    now = 0.0
    for gap, throttled, retry_after in events:
        now += gap
        _ = rc.on_throttle(now, retry_after) if throttled else rc.on_clean(now)
    for _ in range(15):
        now += rc.climb_after * 1.25
        rc.on_clean(now)
    assert rc.current == target
