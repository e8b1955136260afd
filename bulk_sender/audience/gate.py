"""The engine's side of the audience rules: screen the plan, take each message's slot, settle it.

Three calls, each cheap per message:

* :meth:`AudienceGate.screened` wraps the plan. For each batch it reads, in one query, what the
  ledger knows about the batch's recipients (opt-outs, their last message, sends within the
  rules' reach), one batch ahead of the loader, and holds back what a rule already holds back
  (``suppressed``), or quiet hours (``not_sent``): those never queue for a request or use up
  the rate. The rest go on, a ``warning`` added when the service window is ``warn``.
* :meth:`AudienceGate.take`, as a message's ``in_flight`` record is committed (after every
  wait): quiet hours again, then the ledger's atomic take (:meth:`~bulk_sender.stores.ledger.
  Ledger.take`), which checks the rules against everything committed by every process and
  records the send in the same transaction; :meth:`AudienceGate.took` reads its answer.
  Concurrent campaigns are serialised by the store, never here.
* :meth:`AudienceGate.settle` after the message's outcome: a message that may have reached the
  customer keeps its slot; one that provably did not (it never left, or Kaleyra answered that
  it did not take it) gives it back.

A rehearsal (``--sandbox``) reads the ledger but never writes it: it screens exactly as the real
send would, and takes nothing, so it can never hold back the real send. A dry run screens only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import numpy as np

from bulk_sender.audience.optout_files import OptOutList
from bulk_sender.audience.quiet import QuietHours, zone_names, zones_for
from bulk_sender.audience.rules import (
    Bounds,
    Clock,
    Facts,
    Held,
    Limits,
    OptOut,
    Rule,
    judge,
    screen_bounds,
    wall_clock_ms,
    window_warning,
)
from bulk_sender.audience.snapshot import Snapshot
from bulk_sender.input.campaign import Planned
from bulk_sender.model import Record, Status
from bulk_sender.record.carried import Carried
from bulk_sender.stores.ledger import Ledger, TakeRequest, recipient_key

__all__ = ["AudienceGate", "AudienceReport", "Rules"]

log = logging.getLogger("bulk_sender")
_EXAMPLES: Final = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """Everything the gate applies, read and checked before anything is sent."""

    limits: Limits
    quiet: QuietHours | None = None
    opt_out_files: tuple[OptOutList, ...] = ()


@dataclass(slots=True)
class AudienceReport:
    """What the rules did in this run: rows held back by rule, with example rows and reasons."""

    held: Counter[Rule] = field(default_factory=Counter)
    examples: dict[Rule, list[tuple[int, str]]] = field(default_factory=dict)
    window_warnings: int = 0
    #: POSIX ms: the earliest and latest moment a row held for quiet hours may be sent.
    quiet_from: int | None = None
    quiet_until: int | None = None

    def hold(self, rule: Rule, row: int, detail: str) -> None:
        """Count a row held back by ``rule``."""
        self.held[rule] += 1
        examples = self.examples.setdefault(rule, [])
        if len(examples) < _EXAMPLES:
            examples.append((row, detail))

    def quiet(self, until: int) -> None:
        """Note when a row held for quiet hours may go."""
        self.quiet_from = until if self.quiet_from is None else min(self.quiet_from, until)
        self.quiet_until = until if self.quiet_until is None else max(self.quiet_until, until)


class AudienceGate:
    """Applies :class:`Rules` and the ledger to one run; see the module docstring."""

    def __init__(
        self,
        rules: Rules,
        *,
        ledger: Ledger | None,
        campaign: int | None,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.rules = rules
        self._ledger = ledger
        #: The campaign's ledger id when this run writes the ledger; None: read only.
        self._campaign = campaign
        self._clock = clock
        self.report = AudienceReport()
        self._quiet_memo: dict[int, tuple[int, int | None]] = {}
        self._bounds_at: tuple[int, Bounds] = (-1, rules.limits.bounds(0))
        self._snapshot: Snapshot | None = None

    def __repr__(self) -> str:
        mode = "off" if self._ledger is None else "writes" if self.writes else "reads"
        return f"AudienceGate(ledger={mode}, rules={self.rules!r}, held={dict(self.report.held)})"

    @property
    def writes(self) -> bool:
        """Whether this run takes slots in the ledger (a real send with a ledger)."""
        return self._ledger is not None and self._campaign is not None

    # -- the loader's side -------------------------------------------------------------------

    async def screened(
        self, plan: AsyncGenerator[Sequence[Planned], None], *, carried: Carried | None = None
    ) -> AsyncGenerator[Sequence[Planned], None]:
        """``plan``'s batches, screened, each read one batch ahead of the one yielded."""
        pending: asyncio.Task[list[Planned]] | None = None
        ahead: asyncio.Task[list[Planned]] | None = None  # the next batch's, while one is yielded
        try:
            try:
                async for batch in plan:
                    ahead = asyncio.ensure_future(self.screen(_hold_carried(batch, carried)))
                    if pending is not None:
                        yield await pending
                    pending, ahead = ahead, None
            except Exception:
                # The plan broke (a file broken part-way, a planner killed): what it planned
                # before still goes on, as it would without the look-ahead.
                if pending is not None:
                    ready, pending = pending, None
                    yield await ready
                raise
            if pending is not None:
                yield await pending
                pending = None
        finally:
            for task in (pending, ahead):  # a failed screen's error is retrieved here, or shown
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            await plan.aclose()  # an early end (a crash) closes the plan now

    async def screen(self, batch: Sequence[Planned]) -> list[Planned]:
        """``batch`` with what the rules hold back now turned into final records (no body).

        Only the messages the ledger's screen returns, the opt-out files list, or quiet hours
        may hold are looked at one by one: the rest pass untouched.
        """
        now = self._clock()
        sendable = [index for index, item in enumerate(batch) if item.body is not None]
        numbers = [batch[index].record.to for index in sendable]
        found = await self._screen_ledger(batch, sendable, numbers, now)
        return self._applied(batch, sendable, numbers, found, now)

    def screen_snapshot(self, batch: Sequence[Planned]) -> list[Planned]:
        """:meth:`screen` against the snapshot :meth:`load_snapshot` read (a dry run), without
        an event loop: nothing waits."""
        assert self._snapshot is not None or self._ledger is None, "load_snapshot() first"
        now = self._clock()
        sendable = [index for index, item in enumerate(batch) if item.body is not None]
        numbers = [batch[index].record.to for index in sendable]
        found = {}
        if self._snapshot is not None and sendable:
            contents = [batch[index].content for index in sendable]
            bounds = screen_bounds(self.rules.limits, now)
            found = self._snapshot.screen(numbers, contents, bounds)
        return self._applied(batch, sendable, numbers, found, now)

    def _applied(
        self,
        batch: Sequence[Planned],
        sendable: list[int],
        numbers: list[str],
        found: dict[int, Facts],
        now: int,
    ) -> list[Planned]:
        """``batch`` with the holds of the ledger's screen (``found``, by position in
        ``sendable``), of the opt-out files and of quiet hours applied."""
        listed = self._listed(numbers)
        if self.rules.quiet is None:
            looked_at: Iterable[int] = sorted(found.keys() | listed.keys())
        else:
            looked_at = range(len(sendable))
        out = list(batch)
        # The screen counted a message's own earlier slot (a resume's) too: the facts are judged
        # here without it, so what it alone held back goes on, to its take.
        for position in looked_at:
            index = sendable[position]
            known = found.get(position)
            if position in listed and (known is None or known.opt_out is None):
                known = (known or Facts())._replace(opt_out=listed[position])
            out[index] = self._screened(batch[index], known, now)
        return out

    def _screened(self, item: Planned, known: Facts | None, now: int) -> Planned:
        """One message the rules may hold back: held, in quiet hours, warned, or as it was.

        ``known``: its facts if the ledger's screen or an opt-out file found it, else None.
        """
        held = None if known is None else self._judge(item, known, now)
        if held is not None:
            return self._suppressed(item, held)
        if self.rules.quiet is not None and (until := self._quiet_until(item, now)) is not None:
            return self._quiet(item, until)
        if self.rules.limits.window == "warn" and known is not None:
            return self._warned(item, known, now)
        return item

    async def _screen_ledger(
        self, batch: Sequence[Planned], sendable: list[int], numbers: list[str], now: int
    ) -> dict[int, Facts]:
        """The ledger's screen of the sendable messages: facts by position in ``sendable``."""
        if self._ledger is None or not sendable:
            return {}
        contents = [batch[index].content for index in sendable]
        bounds = screen_bounds(self.rules.limits, now)
        return await self._ledger.screen(numbers, contents, bounds)

    async def load_snapshot(self) -> None:
        """Read the ledger whole, as it is now, for :meth:`screen_snapshot` (a dry run: see
        :mod:`.snapshot`)."""
        if self._ledger is not None:
            limits = self.rules.limits
            self._snapshot = await self._ledger.snapshot(
                sends_since=self._clock() - limits.looks_back, incoming=limits.window != "off"
            )

    def _listed(self, numbers: list[str]) -> dict[int, OptOut]:
        """By position, the first opt-out file that lists the number (one search per file)."""
        listed: dict[int, OptOut] = {}
        if not self.rules.opt_out_files or not numbers:
            return listed
        array = np.array([number[1:] for number in numbers]).astype(np.int64)
        for opt_outs in self.rules.opt_out_files:
            for position in np.flatnonzero(opt_outs.contains(array)).tolist():
                listed.setdefault(position, OptOut(None, opt_outs.name))
        return listed

    def _judge(self, item: Planned, known: Facts, now: int) -> Held | None:
        """:func:`judge`, without the message's own earlier slot (a resume's)."""
        record = item.record
        if self._campaign is not None:
            own = (self._campaign, record.row, record.part)
            others = [s for s in known.sends if (s.campaign_id, s.row, s.part) != own]
            if len(others) != len(known.sends):
                known = known._replace(sends=others)
        limits = self.rules.limits
        return judge(limits, known, content=item.content, now=now, bounds=self._bounds(now))

    # -- the worker's side -------------------------------------------------------------------

    def take(self, item: Planned) -> Record | Awaitable[Facts | None] | None:
        """Just before ``item`` is sent: a record to write instead (``not_sent`` in quiet hours);
        None to send it (no slot to take: no ledger, or a rehearsal); or the ledger's take under
        way, whose answer goes to :meth:`took`. The take raises
        :class:`~bulk_sender.stores.ledger.StoreError` if the ledger cannot be written."""
        now = self._clock()
        if self.rules.quiet is not None and (until := self._quiet_until(item, now)) is not None:
            return self._quiet(item, until).record
        if self._ledger is None or self._campaign is None:
            return None
        record = item.record
        bounds = self._bounds_at[1] if self._bounds_at[0] == now else self._bounds(now)
        # Positional: a keyword NamedTuple costs as much again, once a message.
        request = TakeRequest(
            recipient_key(record.to), item.content, self._campaign, record.row, record.part, now,
            bounds,
        )  # fmt: skip
        return self._ledger.take(request)

    def took(self, item: Planned, facts: Facts | None) -> Record | None:
        """The take's answer: None, the slot is held (send); else the ``suppressed`` record."""
        if facts is None:
            return None
        now = self._clock()
        held = judge(self.rules.limits, facts, content=item.content, now=now)
        if held is None:  # the store saw something the facts read after it no longer show
            held = Held(Rule.CAP, "held back by the ledger: another campaign took the slot")
        return self._suppressed(item, held).record

    def _bounds(self, now: int) -> Bounds:
        """The rules' bounds at ``now`` (kept for the millisecond: many takes share one)."""
        if self._bounds_at[0] != now:
            self._bounds_at = (now, self.rules.limits.bounds(now))
        return self._bounds_at[1]

    def settle(self, item: Planned, *, reached: bool) -> None:
        """After ``item``'s last attempt: keep its slot if a request may have reached the
        customer, else give it back (queued; :meth:`close` commits it)."""
        if reached or self._ledger is None or self._campaign is None:
            return
        self._ledger.release_later(self._campaign, item.record.row, item.record.part)

    async def close(self) -> None:
        """Commit the settlements still queued and release the ledger."""
        if self._ledger is not None:
            await self._ledger.close()

    # -- making records ----------------------------------------------------------------------

    def _suppressed(self, item: Planned, held: Held) -> Planned:
        self.report.hold(held.rule, item.record.row, held.detail)
        record = item.record._replace(
            status=Status.SUPPRESSED, code=held.rule.value, error=held.detail
        )
        return Planned(record, None)

    def _quiet(self, item: Planned, until: int) -> Planned:
        quiet = self.rules.quiet
        assert quiet is not None
        zones = zone_names(zones_for(item.record.to))
        where = f"quiet hours ({quiet} in {zones}, the recipient's local time)"
        if until == _NEVER:
            detail = f"{where}: no time of day is outside them in every one of those zones"
        else:
            when = datetime.fromtimestamp(until / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
            detail = f"{where}: sent by the next run of the same command after {when}"
            self.report.quiet(until)
        self.report.hold(Rule.QUIET, item.record.row, detail)
        record = item.record._replace(status=Status.NOT_SENT, code=Rule.QUIET.value, error=detail)
        return Planned(record, None)

    def _warned(self, item: Planned, known: Facts, now: int) -> Planned:
        warning = window_warning(self.rules.limits, known.last_incoming, now=now)
        if warning is None:
            return item
        self.report.window_warnings += 1
        record = item.record
        joined = f"{record.warning}; {warning}" if record.warning else warning
        return Planned(record._replace(warning=joined), item.body, item.content)

    def _quiet_until(self, item: Planned, now: int) -> int | None:
        """When ``item`` may leave if it is in quiet hours now, else None (memo per minute)."""
        quiet = self.rules.quiet
        assert quiet is not None
        zones = zones_for(item.record.to)
        minute = now // 60_000
        memo = self._quiet_memo.get(id(zones))
        if memo is None or memo[0] != minute:
            opens = quiet.next_open(zones, minute * 60.0)
            until = None if opens == minute * 60.0 else _ms_or_never(opens)
            memo = (minute, until)
            self._quiet_memo[id(zones)] = memo
        return memo[1]


#: No moment within a week is outside quiet hours in every zone of the number.
_NEVER: Final = 2**62


def _ms_or_never(opens: float | None) -> int:
    return int(opens * 1000) if opens is not None else _NEVER


def _hold_carried(batch: Sequence[Planned], carried: Carried | None) -> Sequence[Planned]:
    """The ``--restart`` carry-over first, so its own reason is the one shown."""
    if carried is None:
        return batch
    out = list(batch)
    for index, item in enumerate(batch):
        if item.body is not None and (held := carried.hold(item.record)) is not None:
            out[index] = Planned(held, None)
    return out
