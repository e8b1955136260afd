"""Pure 429 adaptation: the sending rate the run should use now (AIMD, no I/O, no clock).

A 429 means Kaleyra thinks we are too fast. :class:`RateController` halves the rate (never
below ``floor``) and holds all sending off for the ``Retry-After``; a burst of 429s from
requests that were already in flight halves it only once (at most one halving per
``cooldown``), while a storm that goes on keeps halving it, once per ``cooldown``. After
``climb_after`` seconds without a 429 it climbs back by ``climb_step`` of the configured rate every
``climb_after`` seconds until it is at the configured rate again. Times are whatever monotonic
clock the caller passes in, which keeps this testable with plain numbers.

``current`` and ``hold_until`` are the run's only record of its rate and its hold: the limiter
(:mod:`bulk_sender.sending.limiter`) reads them, and the display reads the limiter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RateChange", "RateController"]


@dataclass(frozen=True, slots=True)
class RateChange:
    """A change of the run's sending rate, for the log and the progress display."""

    old: float
    new: float
    reason: str


@dataclass(slots=True, kw_only=True)
class RateController:
    """Additive-increase, multiplicative-decrease of the sending rate."""

    target: float
    floor: float = 0.5
    cooldown: float = 1.0
    climb_after: float = 2.0
    climb_step: float = 0.1
    current: float = field(init=False)
    hold_until: float = field(init=False, default=0.0)
    _last_throttle: float = field(init=False, default=float("-inf"))
    _last_change: float = field(init=False, default=float("-inf"))
    _last_decrease: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        if self.target <= 0 or self.floor <= 0:
            raise ValueError("target and floor rates must be positive")
        self.floor = min(self.floor, self.target)
        self.current = self.target

    def on_throttle(self, now: float, retry_after: float | None) -> RateChange | None:
        """A 429 arrived at ``now``: hold off, and halve the rate at most once per ``cooldown``."""
        self.hold_until = max(self.hold_until, now + (retry_after or 0.0))
        self._last_throttle = now
        if now - self._last_decrease < self.cooldown or self.current <= self.floor:
            return None
        self._last_decrease = now
        return self._set(max(self.floor, self.current / 2), now, "429 from Kaleyra")

    def on_clean(self, now: float) -> RateChange | None:
        """An answer that was not a 429 arrived at ``now``: climb back if it is time."""
        if self.current >= self.target:
            return None
        quiet = now - max(self._last_throttle, self._last_change)
        if quiet < self.climb_after:
            return None
        step = self.target * self.climb_step
        return self._set(min(self.target, self.current + step), now, "answers are clean again")

    def _set(self, rate: float, now: float, reason: str) -> RateChange:
        change = RateChange(self.current, rate, reason)
        self.current = rate
        self._last_change = now
        return change
