"""Pure sizing of the requests in flight: enough to reach the rate at the observed latency.

By Little's law a run that sends ``rate`` requests a second, each taking ``latency`` seconds,
has ``rate x latency`` of them in flight on average. A fixed pool caps the pace at
``pool / latency`` whatever the rate says (32 requests at 300 ms: 107 a second), so the limit
follows the latency instead: ``ceil(rate x p90 x headroom) + 1`` over the most recent
``window`` latencies, recomputed at most every ``every`` seconds, never below ``floor`` and
never above ``ceiling`` (the ``[sending] concurrency`` setting). A slower server raises it, a
faster one lowers it, and a lower rate after a 429 needs fewer. The limit is also the bound on
rows left ``unknown`` by a crash. Times are whatever monotonic clock the caller passes in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["InflightChange", "InflightSizer"]

#: What a new run assumes before its first answer: a far-away API, not a loopback one.
ASSUMED_LATENCY = 0.3


@dataclass(frozen=True, slots=True)
class InflightChange:
    """A new in-flight limit, and what it would be without the ceiling."""

    old: int
    new: int
    wanted: int
    latency: float

    @property
    def capped(self) -> bool:
        """Whether the ceiling (``concurrency``) keeps the limit below what the rate needs."""
        return self.wanted > self.new


@dataclass(slots=True, kw_only=True)
class InflightSizer:
    """The in-flight limit for a rate and the recent latencies; see the module docstring."""

    ceiling: int
    floor: int = 4
    headroom: float = 1.25
    percentile: float = 90.0
    window: int = 256
    every: float = 0.05
    limit: int = field(init=False)
    wanted: int = field(init=False)
    #: The latency the limit was last sized for (the window's percentile; 0 before any).
    latency: float = field(init=False, default=0.0)
    _latencies: deque[float] = field(init=False)
    _last: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        if self.ceiling < 1:
            raise ValueError("ceiling must be at least 1")
        self.floor = min(max(self.floor, 1), self.ceiling)
        self._latencies = deque(maxlen=self.window)
        self.limit = self.wanted = self.floor

    def start(self, rate: float) -> int:
        """The limit before any answer came back, assuming :data:`ASSUMED_LATENCY`."""
        self.wanted = self._need(rate, ASSUMED_LATENCY)
        self.limit = self._clamp(self.wanted)
        return self.limit

    def observe(self, latency: float) -> None:
        """Remember one request's latency in seconds."""
        self._latencies.append(latency)

    def resize(self, now: float, rate: float) -> InflightChange | None:
        """Recompute the limit for ``rate`` (at most every ``every`` s); the change, if any."""
        if now - self._last < self.every or not self._latencies:
            return None
        self._last = now
        ordered = sorted(self._latencies)
        latency = ordered[min(len(ordered) - 1, int(len(ordered) * self.percentile / 100))]
        self.latency = latency
        self.wanted = self._need(rate, latency)
        new = self._clamp(self.wanted)
        if new == self.limit:
            return None
        change = InflightChange(old=self.limit, new=new, wanted=self.wanted, latency=latency)
        self.limit = new
        return change

    @property
    def capped(self) -> bool:
        """Whether the ceiling holds the limit below what the rate needs right now."""
        return self.wanted > self.limit

    def binds(self, rate: float) -> bool:
        """Whether even without headroom the ceiling is below rate x latency: the pace suffers."""
        return rate * self.latency > self.ceiling

    def _need(self, rate: float, latency: float) -> int:
        return math.ceil(rate * latency * self.headroom) + 1

    def _clamp(self, wanted: int) -> int:
        return max(self.floor, min(self.ceiling, wanted))
