"""The sending engine: a loader, a bounded queue and a pool of workers under one rate limit.

Data flows one way::

    plan (batches) -> loader task -> asyncio.Queue(2 x concurrency) -> N workers, each:
                        |  final records                                 in-flight slot
                        |  (invalid, duplicate)                          client.ready(): connection
                        |                                                limiter.admit()
                        |                                                journal: in_flight, awaited
                        v                                                limiter.depart()
                     journal  <----------------------------------------  POST, classify, decide
                                                                         journal: outcome, queued

The plan is one shape: an async generator of batches of planned messages, made in this process
(:mod:`bulk_sender.input.plan_inline`) or in a child (:mod:`bulk_sender.input.plan_process`).

Concurrency is bounded by the number of workers (``concurrency``), never by the client's pool
alone. Every attempt, retries included, passes the limiter's two gates
(:mod:`bulk_sender.sending.limiter`): admission before its ``in_flight`` record, where every
long wait happens (a ``Retry-After`` hold, the pace), and departure after it, at the same
rate, so journal latency cannot bunch requests into a burst. The request's connection is taken
(opened if need be) with its slot, before both gates, so that opening one can neither bunch
requests on their way to the server nor cost pace between the gates; a request not sent gives
it back unused. So
``in_flight`` is committed as
late as possible: between it and the request there is only the departure gate, whose wait is
bounded by the journal's own latency and which never waits out a hold (a hold that begins
meanwhile sends the row back to admission, ``not_sent`` again). A worker
commits the ``in_flight`` record (awaited) and queues the outcome without waiting: the journal
commits in queue order, so the outcome is on disk by the time the worker's next ``in_flight``
commit returns, before it sends anything else (and the run ends with a flush). For a
retryable outcome it commits ``not_sent`` before it waits to retry. So a crash leaves at most
``concurrency`` rows whose fate is unknown (one per worker), and never a row waiting for a
retry or a hold.

Audience rules (:mod:`bulk_sender.audience.gate`), when the run has them: the plan is screened
batch by batch before the loader (what a rule holds back is recorded, never queued); a
message's ledger slot is taken after admission, the last long wait, beside its ``in_flight``
record, and settled after its last attempt: kept if a request may have reached the customer,
else given back.

Stopping: an account-level answer, ``error_threshold`` failed rows in a row, a journal that
cannot be written, or :meth:`Engine.request_stop` (SIGINT/SIGTERM) set the stop reason and
wake every wait (both gates, the hold, a retry's backoff) at once. From then on no request
leaves: a worker checks after its last wait, before the request, and records the row
``not_sent`` instead. Requests already in flight finish and are recorded; every message not
sent yet, queued or still in the file, is recorded ``not_sent`` so the run's record is whole.

The in-flight limit (:class:`~bulk_sender.sending.inflight.InflightSizer`, applied to
:class:`~bulk_sender.sending.slots.InflightSlots`) is recomputed every 0.05 s by its own task:
from the answers' latencies and from the ages of the requests still in flight, so that a server
that slows down raises it before its slow answers come back.

A worker that fails with an unexpected exception (a bug; expected failures are all handled
above) is not a stop: the run ends at once with that exception, cancelling the other
workers, as a crash would. Its rows in flight are ``unknown`` to the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bulk_sender.config import CONCURRENCY_MAX, SendingSettings
from bulk_sender.errors import StoreError, TransportError
from bulk_sender.input.campaign import Planned
from bulk_sender.model import Record, Status, utc_now
from bulk_sender.record.carried import Carried
from bulk_sender.record.journal import Journal, JournalError
from bulk_sender.sending.client import Answer, Lease
from bulk_sender.sending.firstcontact import FirstContact
from bulk_sender.sending.garbled import GarbledAnswers
from bulk_sender.sending.inflight import InflightSizer
from bulk_sender.sending.limiter import PacedLimiter
from bulk_sender.sending.message_ids import RecentIds
from bulk_sender.sending.outcome import (
    MAY_HAVE_REACHED,
    Kind,
    Outcome,
    classify_answer,
    classify_failure,
)
from bulk_sender.sending.policy import Decision, Final, Retry, RetryPolicy
from bulk_sender.sending.ratecontrol import RateChange, RateController
from bulk_sender.sending.slots import InflightSlots
from bulk_sender.sending.stats import RunStats

__all__ = ["Engine", "Gate", "Plan", "Poster", "StopReason"]

log = logging.getLogger("bulk_sender")
_YIELD_EVERY = 128

#: What a run sends: batches of planned messages, arriving asynchronously.
Plan = AsyncGenerator[Sequence[Planned], None]


class Poster(Protocol):
    """What the engine needs from the HTTP client: a connection taken before the request's
    ``in_flight`` commit (:meth:`ready`), then the request on it, or the lease given back."""

    async def ready(self, lease: Lease | None = None) -> Lease: ...

    def give_back(self, lease: Lease) -> None: ...

    async def post(self, body: bytes, lease: Lease | None = None) -> Answer: ...


class Gate(Protocol):
    """What the engine needs from the audience rules (:class:`bulk_sender.audience.gate.
    AudienceGate`); the take raises :class:`~bulk_sender.stores.base.StoreError` when the ledger
    cannot be written."""

    def screened(self, plan: Plan, *, carried: Carried | None) -> Plan: ...

    def take(self, item: Planned) -> Record | Awaitable[object] | None: ...

    def took(self, item: Planned, answer: Any) -> Record | None: ...

    def settle(self, item: Planned, *, reached: bool) -> None: ...


@dataclass(slots=True)
class _AudienceSlot:
    """A message's slot in the audience ledger: whether it is taken, and whether a request for
    it may have reached the customer (then it is kept)."""

    taken: bool = False
    reached: bool = False


@dataclass(frozen=True, slots=True)
class StopReason:
    """Why a run stopped early; ``code``/``message`` come from Kaleyra where there is one."""

    kind: Literal[
        "account", "endpoint", "threshold", "answers", "signal", "cancelled", "journal", "ledger"
    ]
    code: str = ""
    message: str = ""


class Engine:
    """Sends a campaign's planned messages; one instance per run, created inside the loop."""

    def __init__(
        self,
        *,
        settings: SendingSettings,
        client: Poster,
        journal: Journal,
        stats: RunStats,
        gate: Gate | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._gate = gate
        self._client = client
        self._journal = journal
        self.stats = stats
        self._random = random_source
        self._policy = RetryPolicy(max_attempts=settings.max_attempts, delivery=settings.delivery)
        self._loop = asyncio.get_running_loop()
        self._limiter = PacedLimiter(RateController(target=settings.rate_per_second))
        stats.rate_source = self._limiter
        self._sizer = InflightSizer(ceiling=settings.concurrency, timeout=settings.timeout_seconds)
        self._slots = InflightSlots(self._sizer.start(settings.rate_per_second))
        stats.inflight_limit = self._slots.limit
        self._stopped = asyncio.Event()
        self.stop_reason: StopReason | None = None
        self._failed_in_a_row = 0
        self._first_contact = FirstContact.for_attempts(settings.max_attempts)
        self._garbled = GarbledAnswers()
        self._recent_ids = RecentIds()

    def __repr__(self) -> str:
        return (
            f"Engine(rate={self._limiter.rate!r}, concurrency={self._settings.concurrency!r}, "
            f"finished={self.stats.finished!r}, stop_reason={self.stop_reason!r})"
        )

    # -- stopping ----------------------------------------------------------------------------

    def request_stop(self, reason: StopReason) -> None:
        """Stop sending and wake every wait; the first reason given is the one reported."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.warning(
                "bulk_sender.stopping",
                extra={"event": "bulk_sender.stopping", "reason": reason.kind, "code": reason.code},
            )
        self._limiter.stop()
        self._slots.stop()
        self._stopped.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop has been requested."""
        return self.stop_reason is not None

    # -- running -----------------------------------------------------------------------------

    async def run(self, plan: Plan) -> StopReason | None:
        """Send everything ``plan`` yields; return why the run stopped early, if it did."""
        queue: asyncio.Queue[Planned | None] = asyncio.Queue(2 * self._settings.concurrency)
        workers = [
            asyncio.create_task(self._work(queue), name=f"worker-{i}")
            for i in range(self._settings.concurrency)
        ]
        if self._gate is not None:
            plan = self._gate.screened(plan, carried=self._journal.carried)
        loader = asyncio.create_task(self._load_all(plan, queue, len(workers)), name="loader")
        sizing = asyncio.create_task(self._follow_latency(), name="inflight-sizer")
        tasks = [loader, sizing, *workers]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                # A worker that fails (a bug: expected failures are handled where they happen)
                # ends the run at once; the loader would wait for it forever.
                if (failure := task.exception()) is not None:
                    raise failure
            # The workers end on the loader's last sentinels, so it is done too; its failure
            # (a file that breaks mid-way) surfaces after they finished what was queued.
            await loader
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._journal.flush()  # the last outcomes were queued, not awaited
        except JournalError as exc:
            self.request_stop(StopReason("journal", "JOURNAL", str(exc)))
        return self.stop_reason

    async def _load_all(
        self, plan: Plan, queue: asyncio.Queue[Planned | None], workers: int
    ) -> None:
        try:
            # An early end (a crash) closes the plan now, not at loop shutdown.
            async with contextlib.aclosing(plan):
                async for batch in plan:
                    await self._load(batch, queue)
        finally:
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # cancelled: the workers are too
                for _ in range(workers):
                    await queue.put(None)

    async def _load(self, batch: Sequence[Planned], queue: asyncio.Queue[Planned | None]) -> None:
        carried = self._journal.carried
        for n, item in enumerate(batch, 1):
            if item.body is None or self.stopping:
                self._record_later(item.record)
            elif carried is not None and (held := carried.hold(item.record)) is not None:
                self._record_later(held)
            else:
                await queue.put(item)
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _record_later(self, record: Record) -> None:
        """Record a message that will not be sent in this run (final, or ``not_sent``)."""
        record = record._replace(finished_at=utc_now())
        try:
            self._journal.write_later(record)
        except JournalError as exc:
            self.request_stop(StopReason("journal", "JOURNAL", str(exc)))
            return
        self._count(record)

    def _count(self, record: Record) -> None:
        """Count a message whose record is written, and log it at -v."""
        self.stats.record(record.status, record.code)
        if log.isEnabledFor(logging.DEBUG):
            _log_row(record)

    async def _work(self, queue: asyncio.Queue[Planned | None]) -> None:
        while (item := await queue.get()) is not None:
            try:
                await self._deliver(item)
            except JournalError as exc:
                self.request_stop(StopReason("journal", "JOURNAL", str(exc)))
            except StoreError as exc:  # its slot could not be taken: it stays not_sent
                self.request_stop(StopReason("ledger", "LEDGER", str(exc)))
                self._record_later(item.record)

    async def _deliver(self, item: Planned) -> None:
        """Send one message until it has a final status, or the run stops."""
        assert item.body is not None
        record = item.record
        attempts = record.attempts
        # The policy's two budgets: this row's attempts in this run that failed other than by
        # a 429, and those that got a 429.
        errors = throttles = 0
        last: Outcome | None = None
        audience = _AudienceSlot()
        while True:
            outcome = await self._send_once(item, attempts, last, audience)
            if outcome is None:  # held back, or the run stopped before it left: recorded
                self._settle(item, audience)
                return
            attempts += 1
            last = outcome
            audience.reached = audience.reached or last.kind in MAY_HAVE_REACHED
            if last.kind is Kind.THROTTLED:
                throttles += 1
                self._apply(self._limiter.throttled(last.retry_after))
            else:
                if last.kind is not Kind.SENT:
                    errors += 1
                self._apply(self._limiter.answered())
            decision = self._policy.decide(
                last, errors=errors, throttles=throttles, random=self._random()
            )
            if not isinstance(decision, Retry):
                self._finish(record, decision, last, attempts)
                self._settle(item, audience)
                return
            # Kaleyra did not act on it (or, at-least-once, the user accepts the risk): say so
            # before waiting, so a run killed during the wait sends it again on resume.
            await self._journal.write(_with_outcome(record, Status.NOT_SENT, last, attempts))
            self.stats.retries += 1
            await self._pause(decision.delay)

    async def _send_once(
        self, item: Planned, attempts: int, last: Outcome | None, audience: _AudienceSlot
    ) -> Outcome | None:
        """Take an in-flight slot, then send; None if the run stopped first or the audience
        rules held the message back (recorded then)."""
        if not await self._slots.acquire():
            self._record_later(_with_outcome(item.record, Status.NOT_SENT, last, attempts))
            return None
        try:
            return await self._send_in_slot(item, attempts, last, audience)
        finally:
            self._slots.release()

    async def _send_in_slot(
        self, item: Planned, attempts: int, last: Outcome | None, audience: _AudienceSlot
    ) -> Outcome | None:
        """Pass both gates and send; None if the run stopped first or the audience rules held
        the message back (the row is then recorded).

        ``in_flight`` is committed after every long wait: between it and the request there is
        only the departure gate, which gives up at a hold or a stop instead of waiting. The
        audience slot is taken in the same moment, committed beside the ``in_flight`` record
        (two files, two writers: one commit's latency, not two); the request leaves only once
        both are durable. A refused take leaves the row ``suppressed`` instead: until that is
        committed the journal holds it ``in_flight``, so a crash then leaves it ``unknown``,
        as a crash between the ``in_flight`` commit and the request always could.
        """
        record, body = item.record, item.body
        assert body is not None
        in_flight = record._replace(status=Status.IN_FLIGHT, attempts=attempts + 1)
        # The connection first, before both gates: opened after the departure gate it would
        # make the request reach the server late, bunched with later ones, and opened between
        # the gates its set-up time would be pace lost for good; before admission it overlaps
        # the pace's wait. Not sent (a stop, a hold, a refused take), it is given back unused.
        lease = await self._client.ready()
        try:
            while await self._limiter.admit():
                lease = await self._client.ready(lease)  # the same, unless the wait staled it
                if self.stopping:
                    break
                if not await self._commit_in_flight(item, in_flight, audience):
                    return None
                if await self._limiter.depart() and not self.stopping:
                    return await self._attempt(body, lease)
                if self.stopping:
                    break
                # A hold began while the row was being committed: it waits that out not_sent,
                # as a row waiting to retry does, never in flight.
                await self._journal.write(_with_outcome(record, Status.NOT_SENT, last, attempts))
        finally:
            self._client.give_back(lease)  # nothing to give back once it was posted on
        self._record_later(_with_outcome(record, Status.NOT_SENT, last, attempts))
        return None

    async def _commit_in_flight(
        self, item: Planned, in_flight: Record, audience: _AudienceSlot
    ) -> bool:
        """Commit ``in_flight``, and the audience slot beside it the first time; False if the
        audience rules held the message back (recorded)."""
        gate = self._gate
        taking = None if audience.taken or gate is None else gate.take(item)
        if isinstance(taking, Record):  # held back before anything was written
            self._record_later(taking)
            return False
        try:
            await self._journal.write(in_flight)
        except BaseException:
            if isinstance(taking, asyncio.Future):
                taking.cancel()  # stop waiting; a slot it took anyway is kept: the safe side
            raise
        held = None if taking is None or gate is None else gate.took(item, await taking)
        if held is not None:
            self._record_later(held)  # until committed, in_flight: unknown if we die
            return False
        audience.taken = True
        return True

    def _settle(self, item: Planned, audience: _AudienceSlot) -> None:
        """Keep or give back the message's ledger slot once its fate in this run is known."""
        if audience.taken and self._gate is not None:
            self._gate.settle(item, reached=audience.reached)

    def _finish(self, record: Record, decision: Decision, last: Outcome, attempts: int) -> None:
        """Record a row's final outcome (an account or endpoint error stops the run, the row
        not_sent)."""
        status = decision.status if isinstance(decision, Final) else Status.NOT_SENT
        if not isinstance(decision, Final):
            endpoint = last.kind is Kind.ENDPOINT  # the URL, TLS or proxy; else the account
            reason = StopReason("endpoint" if endpoint else "account", last.code, last.error)
            self.request_stop(reason)
        final = _with_outcome(record, status, last, attempts)
        # Queued, not awaited: this worker's next in_flight record, which it awaits before
        # its next request, is committed in the same batch or a later one, and the run
        # ends with a flush. So the outcome is on disk before the worker sends again.
        self._journal.write_later(final)
        self._count(final)
        self._watch_threshold(status, last)

    async def _attempt(self, body: bytes, lease: Lease) -> Outcome:
        started = self._loop.time()
        if self.stats.first_request_at is None:
            self.stats.first_request_at = started
        self.stats.last_request_at = started
        ticket = self._sizer.sent(started)  # its age in flight counts before its answer does
        try:
            answer = await self._client.post(body, lease)
        except TransportError as exc:
            outcome = classify_failure(exc)
        else:
            outcome = self._classified(answer)
        finally:
            latency = self._sizer.landed(ticket, self._loop.time())
        outcome = self._first_contact.judge(outcome)
        if self._garbled.judge(outcome):
            self.request_stop(StopReason("answers", outcome.code, outcome.error))
        self.stats.requests += 1
        self.stats.latency.add(latency)
        return outcome

    def _classified(self, answer: Answer) -> Outcome:
        """What ``answer`` means for its row."""
        outcome = classify_answer(answer.status, answer.body, retry_after=answer.retry_after)
        if (checked := self._recent_ids.judge(outcome)) is not outcome:
            answer.discard()  # out of step: the answer still due on it is this row's
            outcome = checked
        return outcome

    async def _follow_latency(self) -> None:
        """Resize the in-flight limit every ``every`` seconds, answers or not: when the server
        slows down, the requests already in flight say so before any answer does."""
        while True:
            await asyncio.sleep(self._sizer.every)
            self._resize()

    def _resize(self) -> None:
        """Follow the latency with the in-flight limit; say once if the ceiling holds it down."""
        rate = self._limiter.rate
        sizer = self._sizer
        change = sizer.resize(self._loop.time(), rate)
        if change is not None:
            self._slots.resize(change.new)
            self.stats.inflight_limit = change.new
        if self.stats.inflight_note or not sizer.binds(rate):
            return  # said already, or the ceiling (with or without headroom) is enough
        need = sizer.need(rate, sizer.latency)  # the answers' latency: an age may be one hang
        self.stats.inflight_note = (
            f"at {sizer.latency * 1000:,.0f} ms, {rate:g}/s needs about {need:,} in "
            f"flight; concurrency caps it at {sizer.ceiling:,} (set [sending] concurrency = "
            f"{min(need, CONCURRENCY_MAX):,})"
        )
        log.warning(
            "bulk_sender.concurrency_capped",
            extra={"event": "bulk_sender.concurrency_capped", "hint": self.stats.inflight_note},
        )

    async def _pause(self, delay: float) -> None:
        """Sleep before a retry, waking at once if the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), delay)

    # -- run-level reactions -------------------------------------------------------------------

    def _apply(self, change: RateChange | None) -> None:
        if change is None:
            return
        self.stats.rate_changes += 1
        log.warning(
            "bulk_sender.rate_changed",
            extra={
                "event": "bulk_sender.rate_changed",
                "old_rate": round(change.old, 3),
                "new_rate": round(change.new, 3),
                "reason": change.reason,
            },
        )

    def _watch_threshold(self, status: str, outcome: Outcome) -> None:
        if status == Status.SENT:
            self._failed_in_a_row = 0
        elif status == Status.FAILED:
            self._failed_in_a_row += 1
            limit = self._settings.error_threshold
            if limit and self._failed_in_a_row >= limit:
                self.request_stop(StopReason("threshold", outcome.code, outcome.error))


def _log_row(record: Record) -> None:
    log.debug(
        "bulk_sender.row",
        extra={
            "event": "bulk_sender.row",
            "row": record.row,
            "part": record.part,
            "to": record.to,
            "status": record.status,
            "code": record.code,
            "attempts": record.attempts,
            "message_id": record.message_id,
        },
    )


def _with_outcome(record: Record, status: str, outcome: Outcome | None, attempts: int) -> Record:
    """``record`` with a status, its attempts and the last answer, stamped now."""
    if outcome is None:
        return record._replace(status=status, attempts=attempts, finished_at=utc_now())
    return record._replace(
        status=status,
        attempts=attempts,
        finished_at=utc_now(),
        message_id=outcome.message_id or "",
        http_status=outcome.http_status,
        code=outcome.code,
        error=outcome.error,
        warning="; ".join(filter(None, (record.warning, outcome.warning))),
    )
