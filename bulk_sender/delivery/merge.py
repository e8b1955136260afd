"""Joining a campaign's journal with the stored callbacks, for the results file.

:func:`merged` exports the delivery state of every message of a journal from the callback store
into a scratch SQLite file (in SQL, see :mod:`bulk_sender.stores.sql`) and yields a
:class:`DeliveryColumns`, which hands :func:`~bulk_sender.record.results.write_outputs` each
message's delivery columns in results order while a :class:`~.funnel.FunnelCounter` counts
them. Nothing proportional to the campaign is held in memory.

How a callback finds its message:

1. by id: any of the callback's ids (``statuses[].id``, ``extra_info.message_id``, the top-level
   ``message_id``) equal to the ``message_id`` of the 202 that accepted the message;
2. otherwise by recipient and refs: an accepted message that no callback matched by id, and a
   callback that matched no message of the campaign by id, with the same recipient, ``ref``,
   ``ref1`` and ``ref2``, received no earlier than 5 minutes before the campaign's journal was
   created, when those four name exactly one accepted message of the campaign. Give each
   campaign its own ``ref`` if your callbacks do not carry the 202's id.

Callbacks for messages no campaign knows are kept in the store, so one that arrived before the
journal had its message's id is matched by the next report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from bulk_sender.delivery.funnel import FunnelCounter
from bulk_sender.delivery.parse import format_time
from bulk_sender.delivery.precedence import DeliveryState
from bulk_sender.model import Record
from bulk_sender.stores.base import StoreError, open_callback_store, store_exists
from bulk_sender.stores.sqlite_delivery import DeliveryRow, DeliveryRows, create_output

__all__ = ["DeliveryColumns", "campaign_started", "merged", "merged_or_none"]

log = logging.getLogger("bulk_sender")

#: Callbacks received this long before a campaign's journal was created may still be its own
#: (the receiver's and the sender's clocks may differ).
CLOCK_SLACK: Final = timedelta(minutes=5)


class DeliveryColumns:
    """Each message's delivery columns, asked for in (row, part) order; counts the funnel."""

    def __init__(self, path: Path, rows: Iterator[DeliveryRow], counter: FunnelCounter) -> None:
        self.path = path  #: the scratch file with the ``delivery`` table
        self._rows = rows
        self._next = next(rows, None)
        self.counter = counter

    def state(self, record: Record) -> DeliveryState:
        """The delivery state of ``record``'s message (the empty state without callbacks)."""
        key = (record.row, record.part)
        while self._next is not None and (self._next.row, self._next.part) < key:
            self._next = next(self._rows, None)
        found = self._next
        if found is None or (found.row, found.part) != key:
            return DeliveryState()
        return DeliveryState(
            rank=found.status_rank,
            delivered_at=found.delivered_at,
            read_at=found.read_at,
            updated_at=found.updated_at,
            failed=found.failed,
            not_sent=found.not_sent,
        )

    def cells(self, record: Record) -> tuple[str, ...]:
        """The six delivery columns of ``record``'s message."""
        state = self.state(record)
        self.counter.add(record, state)
        return state.cells()


def campaign_started(journal: Path) -> str:
    """The earliest time a callback of this campaign can have been received (ISO-8601)."""
    with contextlib.closing(sqlite3.connect(journal)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'created_at'").fetchone()
    created = datetime.fromisoformat(row[0]) if row else datetime(2000, 1, 1, tzinfo=UTC)
    return format_time(created - CLOCK_SLACK)


async def _export(location: str, journal: Path, into: Path) -> None:
    store = await open_callback_store(location)
    try:
        await store.export_deliveries(journal=journal, since=campaign_started(journal), into=into)
    finally:
        await store.close()


@contextlib.contextmanager
def merged(
    location: str, journal: Path, *, workdir: Path, counter: FunnelCounter | None = None
) -> Iterator[DeliveryColumns]:
    """The delivery columns of ``journal``'s messages from the store at ``location``.

    A store that does not exist yet gives empty columns (no callback came). The scratch file
    lives in a temporary directory under ``workdir`` and is removed on exit.
    """
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".delivery-") as scratch:
        into = Path(scratch) / "delivery.db"
        if store_exists(location):
            asyncio.run(_export(location, journal, into))
        else:
            create_output(into).close()
        rows = DeliveryRows(into).stream()
        try:
            yield DeliveryColumns(into, rows, counter or FunnelCounter())
        finally:
            rows.close()


@contextlib.contextmanager
def merged_or_none(location: str | None, journal: Path) -> Iterator[DeliveryColumns | None]:
    """For ``send``: the delivery columns if a store is configured and exists, else None.

    A store that cannot be read is logged (``bulk_sender.delivery_not_merged``) and skipped:
    it must not cost the run its results file.
    """
    with contextlib.ExitStack() as stack:
        columns: DeliveryColumns | None = None
        if location is not None and store_exists(location):
            try:
                columns = stack.enter_context(merged(location, journal, workdir=journal.parent))
            except (StoreError, sqlite3.Error, OSError) as exc:
                log.warning(
                    "bulk_sender.delivery_not_merged",
                    extra={"event": "bulk_sender.delivery_not_merged", "error": str(exc)},
                )
        yield columns
