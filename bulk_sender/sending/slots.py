"""The requests a run may have in flight at once: a counter whose limit can change.

Like an :class:`asyncio.Semaphore` whose size follows :class:`~bulk_sender.sending.inflight.
InflightSizer` while the run goes on: a lower limit lets the requests above it finish and
admits no new one until they have; a higher one wakes waiters at once. :meth:`stop` wakes
every waiter with False, so a stopping run never waits here.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["InflightSlots"]


class InflightSlots:
    """At most ``limit`` holders at once; see the module docstring."""

    __slots__ = ("_stopped", "_waiters", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._stopped = False

    def __repr__(self) -> str:
        return f"InflightSlots(limit={self.limit}, used={self.used}, waiting={len(self._waiters)})"

    async def acquire(self) -> bool:
        """Take a slot (waiting for one); False if the run stopped first."""
        while not self._stopped and self.used >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                else:
                    self._wake()  # it was woken: pass the room on to the next waiter
                raise
        if self._stopped:
            return False
        self.used += 1
        return True

    def release(self) -> None:
        """Give a slot back."""
        self.used -= 1
        self._wake()

    def resize(self, limit: int) -> None:
        """Change the limit; waiters take the new room at once."""
        self.limit = limit
        self._wake()

    def stop(self) -> None:
        """Wake every waiter; from now on :meth:`acquire` returns False at once."""
        self._stopped = True
        while self._waiters:
            self._settle(self._waiters.popleft())

    def _wake(self) -> None:
        room = self.limit - self.used
        while room > 0 and self._waiters:
            if self._settle(self._waiters.popleft()):
                room -= 1

    @staticmethod
    def _settle(waiter: asyncio.Future[None]) -> bool:
        if waiter.done():
            return False
        waiter.set_result(None)
        return True
