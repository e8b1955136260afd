"""In-flight slots: a limit that changes while the run goes on, and a stop that wakes all.

Ordered with events and the loop's own turns, never with sleeps.
"""

from __future__ import annotations

import asyncio

from bulk_sender.sending.slots import InflightSlots


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_holders_never_exceed_the_limit_and_a_release_admits_the_next() -> None:
    """Two slots: the third waits until one is given back."""

    async def main() -> None:
        slots = InflightSlots(2)
        assert await slots.acquire() and await slots.acquire()
        third = asyncio.ensure_future(slots.acquire())
        await _turns()
        assert not third.done()
        slots.release()
        assert await third
        assert slots.used == 2

    asyncio.run(main())


def test_a_higher_limit_admits_waiters_at_once_and_a_lower_one_lets_holders_finish() -> None:
    """Raising the limit wakes as many waiters as it has room for; lowering it admits none."""

    async def main() -> None:
        slots = InflightSlots(1)
        assert await slots.acquire()
        waiting = [asyncio.ensure_future(slots.acquire()) for _ in range(3)]
        await _turns()
        slots.resize(3)
        await _turns()
        assert [w.done() for w in waiting] == [True, True, False]
        slots.resize(1)
        slots.release()
        slots.release()
        await _turns()
        assert not waiting[2].done()  # 1 held, limit 1: no room
        slots.release()
        assert await waiting[2]

    asyncio.run(main())


def test_stop_wakes_every_waiter_with_false() -> None:
    """A stopping run never waits for a slot: waiters and later callers get False."""

    async def main() -> None:
        slots = InflightSlots(1)
        assert await slots.acquire()
        waiting = [asyncio.ensure_future(slots.acquire()) for _ in range(4)]
        await _turns()
        slots.stop()
        assert await asyncio.gather(*waiting) == [False] * 4
        assert not await slots.acquire()

    asyncio.run(main())


def test_a_cancelled_waiter_passes_its_wake_up_on() -> None:
    """A waiter woken and then cancelled does not swallow the room: the next one gets it."""

    async def main() -> None:
        slots = InflightSlots(1)
        assert await slots.acquire()
        first = asyncio.ensure_future(slots.acquire())
        second = asyncio.ensure_future(slots.acquire())
        await _turns()
        slots.release()  # wakes first ...
        first.cancel()  # ... which is cancelled before it runs
        await _turns()
        assert first.cancelled()
        assert await second

    asyncio.run(main())
