"""The sandbox's side of delivery callbacks: it posts Kaleyra-style status callbacks.

For every message the sandbox accepts, :class:`CallbackEmitter` plans what Kaleyra and Meta
would report later, drawn from a :class:`CallbackMix`: ``sent``, then ``delivered``, then
``read``; or ``failed`` with one of Meta's codes (131047, 131026, 131049, 130429, 131050); or
Kaleyra's ``NOT-SENT``; or nothing at all. Each status is posted to the receiver in Kaleyra's
v2 shape after a random delay, sometimes out of order (its ``timestamp`` still says when it
happened) and sometimes twice, and is retried with backoff on anything but a 200, as a webhook
sender does, up to ``max_attempts``.

Time comes from a :class:`Clock`, so tests drive every delay with :class:`FakeClock` instead of
sleeping. The 202's ``message_id`` goes in ``extra_info.message_id``; ``statuses[].id`` and the
top-level ``message_id`` carry a WhatsApp-style id of its own, as Kaleyra's samples do, so the
receiver's matching by any of the three ids is exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import aiohttp
import orjson

from bulk_sender.config import CallbacksSettings, read_callback_secret

__all__ = [
    "DEFAULT_MIX",
    "IN_PROCESS_MIX",
    "CallbackEmitter",
    "CallbackMix",
    "Clock",
    "FakeClock",
    "RealClock",
    "emitter_for",
    "parse_mix",
]

log = logging.getLogger("bulk_sender")

SECRET_HEADER: Final = "X-Callback-Secret"
#: Outcomes a mix may name: a final status, one of Meta's failure codes, or "none".
OUTCOMES: Final = (
    "read", "delivered", "sent", "not_sent", "none", "131047", "131026", "131049", "130429",
    "131050",
)  # fmt: skip
_TITLES: Final[Mapping[str, tuple[str, str]]] = {
    "131047": (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    ),
    "131026": ("Message undeliverable", "Unable to deliver message."),
    "131049": (
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    "130429": ("Rate limit hit", "Cloud API message throughput has been reached."),
    "131050": (
        "Unable to deliver the message. This recipient has chosen to stop receiving "
        "marketing messages on WhatsApp from your business.",
        "",
    ),
}


class Clock(Protocol):
    """Where the emitter's time comes from."""

    def now(self) -> float:
        """Seconds since some fixed moment (monotonic)."""
        ...

    def wall(self) -> float:
        """Unix time, for the callbacks' ``timestamp``."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class RealClock:
    """The machine's clocks."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class FakeClock:
    """A clock that moves only when told: :meth:`advance` wakes whoever's time has come."""

    def __init__(self, wall: float = 1_764_000_000.0) -> None:
        self._now = 0.0
        self._wall0 = wall
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._slept: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now}, sleepers={len(self._sleepers)})"

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall0 + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self._now + seconds, self._seq, waiter))
        if self._slept is not None:
            self._slept.set()
        await waiter

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` and wake every sleeper whose time has come."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)

    @property
    def sleeping(self) -> int:
        """Sleepers not yet woken."""
        return sum(1 for *_, waiter in self._sleepers if not waiter.done())

    async def until_sleeping(self, count: int) -> None:
        """Wait until ``count`` tasks sleep on this clock."""
        self._slept = self._slept or asyncio.Event()
        while self.sleeping < count:
            self._slept.clear()
            await self._slept.wait()


_DEFAULT_WEIGHTS: Final[Mapping[str, float]] = {
    "read": 45, "delivered": 30, "sent": 4, "131047": 6, "131026": 4, "131049": 3,
    "130429": 1, "131050": 1, "not_sent": 3, "none": 3,
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackMix:
    """How often each outcome happens, and how callbacks travel.

    ``outcomes`` maps an outcome of :data:`OUTCOMES` to its weight; ``delay`` is the mean delay
    in seconds between one status and the next (``read`` takes five times as long);
    ``duplicate`` and ``reorder`` are the shares of messages whose callbacks are posted twice,
    or in reverse order.
    """

    outcomes: Mapping[str, float] = field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    delay: float = 2.0
    duplicate: float = 0.05
    reorder: float = 0.1

    def __post_init__(self) -> None:
        unknown = set(self.outcomes) - set(OUTCOMES)
        if unknown or not self.outcomes or any(w < 0 for w in self.outcomes.values()):
            raise ValueError(
                f"a callback mix names outcomes from {', '.join(OUTCOMES)} with weights >= 0"
            )
        if sum(self.outcomes.values()) <= 0 or self.delay < 0:
            raise ValueError("a callback mix needs a positive total weight and delay >= 0")


DEFAULT_MIX: Final = CallbackMix()
#: ``send --sandbox``'s mix: the same outcomes, quicker, so a demo's callbacks are in by its end.
IN_PROCESS_MIX: Final = CallbackMix(delay=0.3)


def parse_mix(text: str, *, delay: float = 2.0) -> CallbackMix:
    """``"read=50,delivered=30,131047=10,duplicate=0.1,reorder=0.2"`` as a mix."""
    weights: dict[str, float] = {}
    extra: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{item!r} is not NAME=NUMBER") from None
        (extra if name in ("duplicate", "reorder") else weights)[name.strip()] = number
    return CallbackMix(
        outcomes=weights or dict(DEFAULT_MIX.outcomes),
        delay=delay,
        duplicate=extra.get("duplicate", DEFAULT_MIX.duplicate),
        reorder=extra.get("reorder", DEFAULT_MIX.reorder),
    )


@dataclass(frozen=True, slots=True)
class _Post:
    """One callback to post: when (the clock's time) and its body."""

    at: float
    body: bytes


class CallbackEmitter:
    """Posts the status callbacks of accepted messages; see the module docstring."""

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        mix: CallbackMix = DEFAULT_MIX,
        clock: Clock | None = None,
        seed: int | None = None,
        max_attempts: int = 8,
        concurrency: int = 16,
    ) -> None:
        self.url = url
        self._secret = secret
        self.mix = mix
        self.clock: Clock = clock or RealClock()
        self._random = random.Random(seed)
        self._max_attempts = max_attempts
        self._concurrency = concurrency
        self._gate: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.planned = 0
        self.posted = 0
        self.retried = 0
        self.dropped = 0
        self._progress: asyncio.Event | None = None

    def __repr__(self) -> str:
        return (
            f"CallbackEmitter(url={self.url!r}, planned={self.planned}, posted={self.posted}, "
            f"retried={self.retried}, dropped={self.dropped}, pending={len(self._tasks)})"
        )

    async def start(self) -> None:
        """Open the HTTP session; call in the running loop."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._gate = asyncio.Semaphore(self._concurrency)
        self._progress = asyncio.Event()

    def accepted(self, *, message_id: str, to: str, refs: tuple[str, str, str]) -> None:
        """Plan the callbacks of a message the sandbox just accepted."""
        for post in self.plan(message_id=message_id, to=to, refs=refs):
            task = asyncio.get_running_loop().create_task(self._deliver(post))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def plan(self, *, message_id: str, to: str, refs: tuple[str, str, str]) -> list[_Post]:
        """The callbacks for one message (pure but for the random draws)."""
        rng, mix = self._random, self.mix
        names = list(mix.outcomes)
        outcome = rng.choices(names, weights=[mix.outcomes[n] for n in names])[0]
        steps = _STEPS.get(outcome, ["failed"] if outcome.isdigit() else [])
        start, wall = self.clock.now(), self.clock.wall()
        offset, posts = 0.0, []
        wamid = f"wamid.{message_id}"
        for step in steps:
            mean = mix.delay * (5 if step == "read" else 1)
            offset += rng.expovariate(1 / mean) if mean > 0 else 0.0
            code = outcome if outcome.isdigit() else ""
            body = _body(
                status=step, wamid=wamid, message_id=message_id, to=to, refs=refs,
                timestamp=int(wall + offset), code=code,
            )  # fmt: skip
            posts.append(_Post(start + offset, body))
        if len(posts) > 1 and rng.random() < mix.reorder:
            times = [p.at for p in posts]
            posts = [_Post(at, p.body) for at, p in zip(reversed(times), posts, strict=True)]
        if posts and rng.random() < mix.duplicate:
            again = rng.choice(posts)
            posts.append(_Post(again.at + rng.uniform(0, max(mix.delay, 0.01)), again.body))
        self.planned += len(posts)
        return posts

    async def _deliver(self, post: _Post) -> None:
        await self.clock.sleep(post.at - self.clock.now())
        for attempt in range(1, self._max_attempts + 1):
            if await self._post(post.body):
                self.posted += 1
                self._note_progress()
                return
            if attempt == self._max_attempts:
                break
            self.retried += 1
            self._note_progress()
            await self.clock.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
        self.dropped += 1
        self._note_progress()

    async def _post(self, body: bytes) -> bool:
        assert self._session is not None and self._gate is not None, "start() first"
        headers = {SECRET_HEADER: self._secret, "Content-Type": "application/json"}
        async with self._gate:
            try:
                async with self._session.post(self.url, data=body, headers=headers) as answer:
                    await answer.read()
                    return answer.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

    def _note_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()

    async def wait_until(self, done: Callable[[CallbackEmitter], bool]) -> None:
        """Wait until ``done(self)`` holds, checked after every post, retry or drop."""
        assert self._progress is not None, "start() first"
        while not done(self):
            self._progress.clear()
            await self._progress.wait()

    @property
    def pending(self) -> int:
        """Callbacks planned and not yet posted or dropped."""
        return len(self._tasks)

    async def drain(self, within: float) -> None:
        """Wait up to ``within`` seconds for every planned callback to be posted."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)

    async def stop(self) -> None:
        """Cancel what is still planned (counted as dropped) and close the session."""
        left = list(self._tasks)
        for task in left:
            task.cancel()
        for task in left:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.dropped += len(left)
        if self.dropped:
            log.warning(
                "bulk_sender.sandbox_callbacks_dropped",
                extra={
                    "event": "bulk_sender.sandbox_callbacks_dropped",
                    "callbacks": self.dropped,
                    "posted": self.posted,
                    "url": self.url,
                    "hint": "the receiver did not answer 200 in time; is bulk-sender receive "
                    "running there with the same secret?",
                },
            )
        if self._session is not None:
            await self._session.close()
            self._session = None


_STEPS: Final[Mapping[str, list[str]]] = {
    "read": ["sent", "delivered", "read"],
    "delivered": ["sent", "delivered"],
    "sent": ["sent"],
    "not_sent": ["not-sent"],
    "none": [],
}


def _body(
    *,
    status: str,
    wamid: str,
    message_id: str,
    to: str,
    refs: tuple[str, str, str],
    timestamp: int,
    code: str,
) -> bytes:
    """A status callback in Kaleyra's v2 shape."""
    entry: dict[str, object] = {
        "id": wamid,
        "status": status.upper(),
        "timestamp": str(timestamp),
        "recipient_id": to.lstrip("+"),
    }
    if code:
        title, details = _TITLES[code]
        entry["errors"] = [
            {"code": int(code), "title": title, "message": title,
             "error_data": {"details": details or title}},
        ]  # fmt: skip
    extra = {"message_id": message_id, "trace_id": f"trace-{message_id}", "waba_id": "1"}
    extra.update(
        {name: value for name, value in zip(("ref", "ref1", "ref2"), refs, strict=True) if value}
    )
    document = {
        "meta_object": {
            "value": {"messaging_product": "whatsapp", "statuses": [entry]},
            "field": "messages",
        },
        "extra_info": extra,
        "status": status,
        "message_id": wamid,
    }
    return orjson.dumps(document)


def emitter_for(
    callbacks: CallbacksSettings | None, environ: Mapping[str, str] | None = None
) -> CallbackEmitter | None:
    """``send --sandbox``'s emitter: posts to ``receive``'s address when ``[callbacks]`` is set."""
    if callbacks is None:
        return None
    secret = read_callback_secret(callbacks, environ)
    host = callbacks.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return CallbackEmitter(
        url=f"http://{host}:{callbacks.port}/kaleyra/status",
        secret=secret.reveal(),
        mix=IN_PROCESS_MIX,
        max_attempts=4,
    )
