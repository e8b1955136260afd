"""The run's rate limit: an aiolimiter leaky bucket with a small bucket, whose rate can change.

``AsyncLimiter(rate, 1)`` would let a burst of ``rate`` requests through at once; the promise to
the user's account is that no 1-second window carries more than ``rate`` requests, so the
bucket holds only ``rate / 100`` requests (at least one) and drains at ``rate`` per second. In
any window of one second at most ``rate + bucket`` acquisitions happen: within 1 % of the rate.

A rate change replaces the bucket and wakes every waiter queued on the old one, which queues
again on the new one, so a change of rate applies at once to requests already waiting. A hold
(``Retry-After``) blocks every acquisition until it has passed. Create it inside the running loop.
"""

from __future__ import annotations

import asyncio
import math

from aiolimiter import AsyncLimiter

__all__ = ["PacedLimiter", "bucket_size"]


def bucket_size(rate: float) -> int:
    """Requests the bucket may hold at ``rate`` per second: 1 % of a second's worth, at least 1."""
    return max(1, math.floor(rate / 100))


class PacedLimiter:
    """Acquire before every HTTP request, retries included."""

    def __init__(self, rate: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._hold_until = 0.0
        self._bucket = self._make(rate)
        self._changed: asyncio.Future[None] = self._loop.create_future()
        self.rate = rate

    def __repr__(self) -> str:
        return f"PacedLimiter(rate={self.rate!r}, bucket={self._bucket!r})"

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on (including for requests already waiting)."""
        if rate != self.rate:
            self.rate = rate
            self._bucket = self._make(rate)
            self._changed.set_result(None)
            self._changed = self._loop.create_future()

    def hold(self, until: float) -> None:
        """Let nothing through before loop time ``until``."""
        self._hold_until = max(self._hold_until, until)

    async def acquire(self) -> None:
        """Wait for the hold to pass and for a slot at the current rate."""
        while True:
            delay = self._hold_until - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            bucket = self._bucket
            if bucket.has_capacity():
                await bucket.acquire()  # returns at once: there is capacity
            elif not await self._wait_for_slot(bucket):
                continue  # the rate changed while waiting: queue on the new bucket
            if bucket is self._bucket and self._loop.time() >= self._hold_until:
                return

    async def _wait_for_slot(self, bucket: AsyncLimiter) -> bool:
        """Wait for a slot in ``bucket`` unless the rate changes first; True if acquired."""
        slot = self._loop.create_task(bucket.acquire())
        try:
            await asyncio.wait((slot, self._changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not slot.done():
                slot.cancel()
        return slot.done() and not slot.cancelled() and slot.exception() is None

    @staticmethod
    def _make(rate: float) -> AsyncLimiter:
        size = bucket_size(rate)
        return AsyncLimiter(size, size / rate)
