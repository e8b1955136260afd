"""Pure retry policy: given an attempt's :class:`~bulk_sender.outcome.Outcome`, what next.

The rule of the product is *never send a recipient the same message twice because of us*, so
an outcome is retried only when the request cannot have been acted on, or Kaleyra said so:

* ``NOT_SENT_YET`` and ``SERVER_ERROR``: retried with exponential backoff and jitter while the
  row has made fewer than ``max_attempts`` such attempts; then the row is ``failed`` with the
  last code.
* ``THROTTLED`` (429/503): retried after ``Retry-After`` (or backoff). Throttled answers are
  about the account's pace, not the row, so they have their own budget of ``max_attempts``
  and do not use up the row's error budget. Out of budget: ``failed`` with the last code.
* ``AMBIGUOUS``: the request went out and its fate is unknown. ``unknown`` at once with
  ``delivery = "at-most-once"`` (the default); with ``"at-least-once"`` it is retried like a
  server error, and a row whose last attempt is still ambiguous ends ``unknown``.
* ``ROW_FAILED``: ``failed``, never retried. ``ACCOUNT`` and ``ENDPOINT``: the run stops.

Backoff for the *n*-th retry (n = 1, 2, ...) is "equal jitter"::

    cap   = min(max_delay, base_delay * 2 ** (n - 1))
    delay = cap / 2 + random * cap / 2            # random in [0, 1)

so the delay is never below half the exponential step and never above ``max_delay``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bulk_sender.config import Delivery
from bulk_sender.model import Status
from bulk_sender.sending.outcome import Kind, Outcome

__all__ = ["Decision", "Final", "Retry", "RetryPolicy", "Stop", "backoff"]


@dataclass(frozen=True, slots=True)
class Final:
    """The row is done with this status."""

    status: Status


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the row again after ``delay`` seconds (through the rate limiter again)."""

    delay: float


@dataclass(frozen=True, slots=True)
class Stop:
    """The account cannot send: stop the run."""


Decision = Final | Retry | Stop


def backoff(retry_number: int, random: float, *, base_delay: float, max_delay: float) -> float:
    """Equal-jitter exponential backoff for the ``retry_number``-th retry (1-based)."""
    exponent = max(retry_number - 1, 0)
    if base_delay <= 0:
        cap = 0.0
    elif exponent >= math.log2(max_delay / base_delay):  # also keeps 2**exponent from overflowing
        cap = max_delay
    else:
        cap = min(max_delay, base_delay * 2.0**exponent)
    return cap / 2 + random * cap / 2


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """What to do after an attempt; see the module docstring for the table."""

    max_attempts: int = 5
    delivery: Delivery = "at-most-once"
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.base_delay <= self.max_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")

    def decide(self, outcome: Outcome, *, errors: int, throttles: int, random: float) -> Decision:
        """Decide after an attempt.

        ``errors`` counts this row's attempts so far, *this one included*, that failed other
        than by a throttle (a row's attempts end at its first success, so these are all its
        non-throttled attempts); ``throttles`` counts those that were throttled. ``random`` is
        a number in [0, 1) for jitter.
        """
        kind = outcome.kind
        if kind is Kind.SENT:
            return Final(Status.SENT)
        if kind is Kind.ACCOUNT or kind is Kind.ENDPOINT:
            return Stop()
        if kind is Kind.ROW_FAILED:
            return Final(Status.FAILED)
        if kind is Kind.THROTTLED:
            if throttles >= self.max_attempts:
                return Final(Status.FAILED)
            if outcome.retry_after is not None:
                return Retry(outcome.retry_after)
            return Retry(self._backoff(throttles, random))
        if kind is Kind.AMBIGUOUS and self.delivery == "at-most-once":
            return Final(Status.UNKNOWN)
        if errors >= self.max_attempts:
            return Final(Status.UNKNOWN if kind is Kind.AMBIGUOUS else Status.FAILED)
        return Retry(self._backoff(errors, random))

    def _backoff(self, retry_number: int, random: float) -> float:
        return backoff(retry_number, random, base_delay=self.base_delay, max_delay=self.max_delay)
