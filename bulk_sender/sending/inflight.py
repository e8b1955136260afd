"""Pure sizing of the requests in flight: enough to reach the rate at the observed latency.

By Little's law a run that sends ``rate`` requests a second, each taking ``latency`` seconds,
has ``rate x latency`` of them in flight on average. A fixed pool caps the pace at
``pool / latency`` whatever the rate says (32 requests at 300 ms: 107 a second), so the limit
follows the latency instead: ``ceil(rate x latency x headroom) + 1``, recomputed every
``every`` seconds (the caller's timer), never below ``floor`` and never above ``ceiling``
(the ``[sending] concurrency`` setting). A slower server raises it, a faster one lowers it,
and a lower rate after a 429 needs fewer. The limit is also the bound on rows left
``unknown`` by a crash.

The latency sized for is the larger of two figures:

* the ``percentile`` (p90) of the most recent ``window`` answers' latencies (before the first
  answer, :data:`ASSUMED_LATENCY`);
* the age of the requests still in flight, read at the same percentile: the age of the oldest
  tenth's youngest (the oldest of all while fewer than ten are in flight). A request in flight
  for 400 ms says the latency is at least 400 ms now, long before its answer does: a server
  that slows from 100 ms to 600 ms would otherwise hold the run to the old limit until the
  first slow answers came back, half a second later. Read at the percentile, not at the
  oldest, one request that hangs among many does not count, as one slow answer among many
  does not; and an age counts for ``timeout`` at most (no request outlives its timeout), so a
  request that hangs while few are in flight raises the limit to ``rate x timeout x
  headroom`` at most (and never past the ceiling), and only until it times out.

:meth:`InflightSizer.binds` (the ceiling holds the pace down) looks at the answers only: an age
may be a request that hangs, not a slow server. Times are whatever monotonic clock the caller
passes in.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ASSUMED_LATENCY", "InflightChange", "InflightSizer"]

#: What a new run assumes before its first answer: a far-away API, not a loopback one.
ASSUMED_LATENCY = 0.3


@dataclass(frozen=True, slots=True)
class InflightChange:
    """A new in-flight limit, what it would be without the ceiling, and the latency behind it."""

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
    #: Seconds between resizes: the caller calls :meth:`resize` this often.
    every: float = 0.05
    #: The requests' timeout in seconds: the most an age in flight counts for.
    timeout: float = math.inf
    limit: int = field(init=False)
    wanted: int = field(init=False)
    #: The answers' latency at the percentile, as last sized (0 before any answer).
    latency: float = field(init=False, default=0.0)
    #: The latency the limit was last sized for: the answers' or the ages', the larger.
    sized_for: float = field(init=False, default=ASSUMED_LATENCY)
    _latencies: deque[float] = field(init=False)
    #: When each request in flight left, by ticket, oldest first (a dict keeps that order).
    _sent: dict[int, float] = field(init=False, default_factory=dict)
    _tickets: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.ceiling < 1:
            raise ValueError("ceiling must be at least 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        self.floor = min(max(self.floor, 1), self.ceiling)
        self._latencies = deque(maxlen=self.window)
        self.limit = self.wanted = self.floor

    def start(self, rate: float) -> int:
        """The limit before any answer came back, assuming :data:`ASSUMED_LATENCY`."""
        self.wanted = self.need(rate, ASSUMED_LATENCY)
        self.limit = self._clamp(self.wanted)
        return self.limit

    def sent(self, now: float) -> int:
        """A request left at ``now``: its ticket, for :meth:`landed`."""
        ticket = self._tickets = self._tickets + 1
        self._sent[ticket] = now
        return ticket

    def landed(self, ticket: int, now: float) -> float:
        """The request of ``ticket`` ended at ``now`` (answered or failed): its latency, kept."""
        latency = now - self._sent.pop(ticket)
        self._latencies.append(latency)
        return latency

    def observe(self, latency: float) -> None:
        """Remember one request's latency in seconds."""
        self._latencies.append(latency)

    def resize(self, now: float, rate: float) -> InflightChange | None:
        """Recompute the limit for ``rate`` at ``now``; the change, if any."""
        if self._latencies:
            ordered = sorted(self._latencies)
            self.latency = ordered[min(len(ordered) - 1, int(len(ordered) * self.percentile / 100))]
        answered = self.latency if self._latencies else ASSUMED_LATENCY
        self.sized_for = max(answered, self._age(now))
        self.wanted = self.need(rate, self.sized_for)
        new = self._clamp(self.wanted)
        if new == self.limit:
            return None
        change = InflightChange(old=self.limit, new=new, wanted=self.wanted, latency=self.sized_for)
        self.limit = new
        return change

    @property
    def capped(self) -> bool:
        """Whether the ceiling holds the limit below what the rate needs right now."""
        return self.wanted > self.limit

    def binds(self, rate: float) -> bool:
        """Whether even without headroom the ceiling is below rate x the answers' latency: the
        pace suffers (an age in flight alone never says so)."""
        return rate * self.latency > self.ceiling

    def need(self, rate: float, latency: float) -> int:
        """Requests in flight that ``rate`` needs at ``latency``, headroom included."""
        return math.ceil(rate * latency * self.headroom) + 1

    def _age(self, now: float) -> float:
        """The age in flight at the percentile (see the module docstring), ``timeout`` at most."""
        count = len(self._sent)
        if not count:
            return 0.0
        place = math.ceil(count * (100 - self.percentile) / 100) - 1
        started = next(itertools.islice(self._sent.values(), place, None))
        return min(now - started, self.timeout)

    def _clamp(self, wanted: int) -> int:
        return max(self.floor, min(self.ceiling, wanted))
