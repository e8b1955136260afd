"""Live figures of a run, cheap enough to update per message and to read from the display.

Latency percentiles come from a log-bucketed histogram (2 % wide buckets from 0.1 ms to 10
minutes), so a run of millions of requests keeps constant memory and the p50/p95/p99 it
reports are within 2 % of the exact values.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from bulk_sender.model import Status

__all__ = ["LatencyHistogram", "RateSource", "RunStats"]

_LOW = 1e-4
_RATIO = 1.02
_BUCKETS = int(math.log(600 / _LOW, _RATIO)) + 2


class LatencyHistogram:
    """Approximate percentiles of request latencies in seconds, in constant memory."""

    __slots__ = ("_counts", "count", "total")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        """Record one latency."""
        index = (
            0 if seconds <= _LOW else min(_BUCKETS - 1, int(math.log(seconds / _LOW, _RATIO)) + 1)
        )
        self._counts[index] += 1
        self.count += 1
        self.total += seconds

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0-100), or ``None`` with no data."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                return float(_LOW * _RATIO ** max(index - 0.5, 0))
        return None  # pragma: no cover - the loop always reaches rank


class RateSource(Protocol):
    """Where the rate the run sends at now is kept (the engine's limiter)."""

    @property
    def rate(self) -> float: ...


@dataclass(slots=True)
class RunStats:
    """Counters the engine updates and the display reads; all figures for this run only."""

    target_rate: float
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    rate_changes: int = 0
    first_request_at: float | None = None
    last_request_at: float = 0.0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: Set by the engine: the rate is read from there, never copied.
    rate_source: RateSource | None = field(default=None, repr=False)
    #: The requests that may be in flight now (sized from the latency, under ``concurrency``).
    inflight_limit: int = 0
    #: Set once if ``concurrency`` keeps the run below its rate: what it needs, what to set.
    inflight_note: str = ""

    @property
    def rate(self) -> float:
        """The rate the run sends at now; the configured one until sending starts."""
        return self.target_rate if self.rate_source is None else self.rate_source.rate

    @property
    def pace(self) -> float:
        """Requests per second between the first and the last request of the run."""
        if self.first_request_at is None or self.requests < 2:
            return 0.0
        span = self.last_request_at - self.first_request_at
        return (self.requests - 1) / span if span > 0 else 0.0

    @property
    def finished(self) -> int:
        """Messages that got a status in this run."""
        return sum(self.statuses.values())

    def record(self, status: str, code: str) -> None:
        """Count a message's status (and its code, unless it was sent)."""
        self.statuses[status] += 1
        if code and status != Status.SENT:
            self.codes[code] += 1
