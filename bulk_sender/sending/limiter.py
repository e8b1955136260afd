"""The run's rate limit: one rate, two gates, one hold, and a stop that wakes every waiter.

The rate is the :class:`~bulk_sender.sending.ratecontrol.RateController`'s (``current``), and is
kept nowhere else: the limiter hands the controller every answer (:meth:`PacedLimiter.throttled`,
:meth:`PacedLimiter.answered`) and applies what it decides at once, to waiting requests too. The
``Retry-After`` hold is the controller's ``hold_until``, in loop time.

Every request passes two gates at that rate:

* :meth:`PacedLimiter.admit`, before its ``in_flight`` record is committed: it waits out the hold
  and for a slot. Every long wait happens here, while nothing on disk says the request left.
* :meth:`PacedLimiter.depart`, after the commit, just before the request leaves: a slot at the
  same rate again, so a slow group commit that lets many admitted rows go together cannot send
  them as a burst. It never waits out a hold: when one begins, it returns False and the row goes
  back to :meth:`~PacedLimiter.admit` (its ``not_sent`` record committed first). Its wait is
  the journal's doing, never the server's: rows reach it spaced by admission at the same rate,
  so it is about one bucket's time (``bucket / rate``: one token interval below 200/s, 10 ms
  above); rows that a stalled commit lets go together wait about as long as the stall, and
  never more than ``concurrency / rate``. (Measured at 1,000/s on the project's two-core
  machine under load: 6 to 11 ms at the median, 135 ms at worst.)

Each gate is an aiolimiter leaky bucket holding 1 % of a second's requests (at least one):
``AsyncLimiter(rate, 1)`` would let ``rate`` requests through at once, and the promise to the
user's account is that no 1-second window carries more than ``rate`` requests. In any window of
one second at most ``rate + bucket`` acquisitions pass a gate: within 1 % of the rate. A rate
change replaces both buckets and wakes every waiter, which queues again on the new one.

:meth:`PacedLimiter.stop` wakes every waiter, and from then on both gates return False at once.
Create the limiter inside the running loop.
"""

from __future__ import annotations

import asyncio
import math

from aiolimiter import AsyncLimiter

from bulk_sender.sending.ratecontrol import RateChange, RateController

__all__ = ["PacedLimiter", "bucket_size"]

_ADMISSION, _DEPARTURE = 0, 1


def bucket_size(rate: float) -> int:
    """Requests the bucket may hold at ``rate`` per second: 1 % of a second's worth, at least 1."""
    return max(1, math.floor(rate / 100))


def _bucket(rate: float) -> AsyncLimiter:
    size = bucket_size(rate)
    return AsyncLimiter(size, size / rate)


class PacedLimiter:
    """Pass :meth:`admit` before a request's ``in_flight`` commit and :meth:`depart` after it."""

    def __init__(self, control: RateController) -> None:
        self._loop = asyncio.get_running_loop()
        self._control = control
        self._buckets = (_bucket(control.current), _bucket(control.current))
        self._wake: asyncio.Future[None] = self._loop.create_future()
        self._stopped = False

    def __repr__(self) -> str:
        return (
            f"PacedLimiter(rate={self.rate!r}, bucket={bucket_size(self.rate)!r}, "
            f"hold_until={self._control.hold_until!r}, stopped={self._stopped!r})"
        )

    @property
    def rate(self) -> float:
        """The rate requests pass at now (the controller's)."""
        return self._control.current

    def throttled(self, retry_after: float | None) -> RateChange | None:
        """A 429 arrived now: hold everything for ``retry_after``, perhaps halve the rate."""
        now = self._loop.time()
        change = self._control.on_throttle(now, retry_after)
        if change is not None or self._control.hold_until > now:
            self._wake_all(rate_changed=change is not None)
        return change

    def answered(self) -> RateChange | None:
        """Another answer arrived now: climb back towards the configured rate if it is time."""
        if self._control.current >= self._control.target:
            return None  # the usual case, without reading the clock
        change = self._control.on_clean(self._loop.time())
        if change is not None:
            self._wake_all(rate_changed=True)
        return change

    def stop(self) -> None:
        """Wake every waiter; from now on both gates return False at once."""
        self._stopped = True
        self._wake_all()

    async def admit(self) -> bool:
        """Wait out any hold, then for a slot; False (at once) if the run stops first."""
        return await self._pass(_ADMISSION, wait_out_hold=True)

    async def depart(self) -> bool:
        """Wait for a slot; False (at once) if the run stops or a hold begins first."""
        return await self._pass(_DEPARTURE, wait_out_hold=False)

    async def _pass(self, gate: int, *, wait_out_hold: bool) -> bool:
        while not self._stopped:
            delay = self._control.hold_until - self._loop.time()
            if delay > 0:
                if not wait_out_hold:
                    return False
                await asyncio.wait((self._wake,), timeout=delay)
                continue
            wake, bucket = self._wake, self._buckets[gate]
            if bucket.has_capacity():
                await bucket.acquire()  # returns at once: there is capacity
                return True
            await self._slot(bucket, wake)
            if not wake.done():
                return True
            # A stop, a hold or a new rate while waiting: look again (a slot taken from the
            # old bucket is simply spent).
        return False

    async def _slot(self, bucket: AsyncLimiter, wake: asyncio.Future[None]) -> None:
        """Wait for a slot in ``bucket``, or for ``wake``, whichever comes first."""
        slot = self._loop.create_task(bucket.acquire())
        try:
            await asyncio.wait((slot, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not slot.done():
                slot.cancel()

    def _wake_all(self, *, rate_changed: bool = False) -> None:
        if rate_changed:
            rate = self._control.current
            self._buckets = (_bucket(rate), _bucket(rate))
        self._wake.set_result(None)
        self._wake = self._loop.create_future()
