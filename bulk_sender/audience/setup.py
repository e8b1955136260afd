"""From ``[audience]`` settings to a run's gate: read the rules first, open the ledger in the loop.

:func:`read_rules` runs before anything is sent (an opt-out file that cannot be read stops the
run with exit 2, like a broken campaign file); :func:`open_gate` runs inside the sending loop
and opens the ledger, writable for a real send, read-only for a rehearsal (``--sandbox``) or a
dry run, which never create or change it. :class:`DryRunScreen` is the dry run's synchronous
way through the same gate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from bulk_sender.audience.gate import AudienceGate, Rules
from bulk_sender.audience.optout_files import read_opt_out_file
from bulk_sender.audience.quiet import parse_quiet_hours
from bulk_sender.audience.rules import HOUR_MS, Clock, Limits, wall_clock_ms
from bulk_sender.config import AudienceSettings
from bulk_sender.input.campaign import Planned
from bulk_sender.stores.ledger import Ledger, open_ledger

__all__ = ["DryRunScreen", "open_gate", "read_rules"]

T = TypeVar("T")
_DRY_RUN_BATCH: Final = 2048


def read_rules(
    settings: AudienceSettings, *, default_region: str | None, encoding: str | None = None
) -> Rules:
    """The rules of ``settings``, with the opt-out files read (raises InputFileError)."""
    cap = settings.frequency_cap
    uses_ledger = settings.enabled
    limits = Limits(
        repeat_ms=round(settings.repeat_guard_hours * HOUR_MS) if uses_ledger else 0,
        cap_messages=cap.messages if cap is not None and uses_ledger else 0,
        cap_ms=round(cap.hours * HOUR_MS) if cap is not None and uses_ledger else 0,
        window=settings.service_window if uses_ledger else "off",
    )
    quiet = parse_quiet_hours(settings.quiet_hours) if settings.quiet_hours.strip() else None
    files = tuple(
        read_opt_out_file(Path(name), default_region=default_region, encoding=encoding)
        for name in settings.opt_out_files
    )
    return Rules(limits=limits, quiet=quiet, opt_out_files=files)


async def open_gate(
    rules: Rules,
    settings: AudienceSettings,
    *,
    campaign: tuple[str, str] | None,
    clock: Clock = wall_clock_ms,
) -> AudienceGate | None:
    """The run's gate, or None when there is nothing to apply.

    ``campaign`` is ``(key, name)`` for a real send, which takes slots in the ledger under the
    campaign's key (its journal's own id); None for a rehearsal or a dry run (read only).
    """
    ledger: Ledger | None = None
    if settings.enabled:
        ledger = await open_ledger(settings.ledger_location(), read_only=campaign is None)
    if ledger is None and rules.quiet is None and not rules.opt_out_files:
        return None
    campaign_id = None
    if ledger is not None and campaign is not None:
        try:
            campaign_id = await ledger.register_campaign(*campaign)
        except BaseException:
            await ledger.close()
            raise
    return AudienceGate(rules, ledger=ledger, campaign=campaign_id, clock=clock)


class DryRunScreen:
    """The dry run's way through a read-only gate, from synchronous code (a context manager).

    An event loop runs in a thread of its own, for the gate's opening and closing and to read
    the ledger whole (:meth:`AudienceGate.load_snapshot`) from the moment of entering: enter
    before the long scan of the campaign file. The screening itself is synchronous, here.
    """

    def __init__(
        self, rules: Rules, settings: AudienceSettings, *, clock: Clock = wall_clock_ms
    ) -> None:
        self._rules = rules
        self._settings = settings
        self._clock = clock
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="audience-dry-run")
        self.gate: AudienceGate | None = None
        self._loaded: concurrent.futures.Future[None] | None = None

    def __enter__(self) -> DryRunScreen:
        """Open the gate; the ledger starts loading (in the background: enter early)."""
        self._thread.start()
        try:
            self.gate = self._run(
                open_gate(self._rules, self._settings, campaign=None, clock=self._clock)
            )
        except BaseException:
            self._stop()
            raise
        if self.gate is not None:
            self._loaded = asyncio.run_coroutine_threadsafe(self.gate.load_snapshot(), self._loop)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._loaded is not None:
                self._loaded.cancel()
                with contextlib.suppress(BaseException):
                    self._loaded.result()
            if self.gate is not None:
                self._run(self.gate.close())
        finally:
            self._stop()

    def screened(self, plan: Iterable[Planned]) -> Iterator[Planned]:
        """``plan`` with what the rules hold back turned into final records: screened here,
        against the ledger as read on entering, a batch at a time."""
        gate = self.gate
        if gate is None:
            yield from plan
            return
        if self._loaded is not None:
            self._loaded.result()
        for batch in _chunked(plan, _DRY_RUN_BATCH):
            yield from gate.screen_snapshot(batch)

    def pulled(self, source: AsyncGenerator[Sequence[Planned], None]) -> Iterator[Planned]:
        """The messages of ``source`` (the planning process's batches), pulled here from
        this object's loop: a dry run planned in a second process."""
        try:
            while (batch := self._run(_next_batch(source))) is not None:
                yield from batch
        finally:
            self._run(source.aclose())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _next_batch(
    source: AsyncGenerator[Sequence[Planned], None],
) -> Sequence[Planned] | None:
    return await anext(source, None)


def _chunked(plan: Iterable[Planned], size: int) -> Iterator[list[Planned]]:
    batch: list[Planned] = []
    for item in plan:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
