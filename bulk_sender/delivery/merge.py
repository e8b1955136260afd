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
import threading
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from bulk_sender.delivery.funnel import FunnelCounter
from bulk_sender.delivery.parse import format_time
from bulk_sender.delivery.precedence import DeliveryState
from bulk_sender.errors import StoreError
from bulk_sender.model import Record
from bulk_sender.stores.base import open_callback_store, store_exists
from bulk_sender.stores.sqlite_delivery import DeliveryRow, DeliveryRows, create_output

__all__ = ["DeliveryColumns", "campaign_started", "merged", "merged_or_none"]

log = logging.getLogger("bulk_sender")

#: Callbacks received this long before a campaign's journal was created may still be its own
#: (the receiver's and the sender's clocks may differ).
CLOCK_SLACK: Final = timedelta(minutes=5)


_NONE: Final = DeliveryState()


class DeliveryColumns:
    """Each message's delivery columns, asked for in (row, part) order; counts the funnel."""

    def __init__(
        self,
        again: Callable[..., Generator[DeliveryRow, None, None]],
        rows: Iterator[DeliveryRow],
        counter: FunnelCounter,
    ) -> None:
        #: ``again(failed_only=True)`` reads the exported rows once more (for ``--failed``)
        self.again = again
        self._rows = rows
        self._next = next(rows, None)
        self.counter = counter

    def state(self, record: Record) -> DeliveryState:
        """The delivery state of ``record``'s message (the empty state without callbacks)."""
        row, part = record.row, record.part
        found = self._next
        while found is not None and (found.row < row or (found.row == row and found.part < part)):
            found = self._next = next(self._rows, None)
        if found is None or found.row != row or found.part != part:
            return _NONE
        # DeliveryRow's fields from status_rank to not_sent are DeliveryState's, in order.
        return DeliveryState(*found[2:8])

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


class _SlicedExport:
    """The store's export of a journal, slice by slice of rows, in a thread of its own.

    The report reads slice *n* while the store computes slice *n + 1* (SQLite lets go of the
    GIL while it works), so the merge in SQL costs little more than the results file takes to
    write. Each slice goes to a scratch file of its own.
    """

    def __init__(self, location: str, journal: Path, scratch: Path, *, slice_rows: int) -> None:
        self._location = location
        self._journal = journal
        self._scratch = scratch
        last = _last_row(journal)
        self.slices = [(a, min(a + slice_rows - 1, last)) for a in range(1, last + 1, slice_rows)]
        self._done = [threading.Event() for _ in self.slices]
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-export", daemon=True)

    def file(self, index: int) -> Path:
        """The scratch file of slice ``index``."""
        return self._scratch / f"delivery-{index}.db"

    def start(self) -> None:
        """Start exporting."""
        self._thread.start()

    def wait(self, index: int) -> Path:
        """Slice ``index``'s file, once exported (raises the export's error)."""
        self._done[index].wait()
        if self._error is not None:
            if isinstance(self._error, StoreError):
                raise self._error
            raise StoreError(f"cannot merge the callbacks: {self._error}") from self._error
        return self.file(index)

    def close(self) -> None:
        """Stop after the slice under way and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            asyncio.run(self._export_all())
        except BaseException as exc:  # handed to the reader by wait()
            self._error = exc
        finally:
            for done in self._done:
                done.set()

    async def _export_all(self) -> None:
        store = await open_callback_store(self._location)
        try:
            since = campaign_started(self._journal)
            for index, rows in enumerate(self.slices):
                if self._stop.is_set():
                    return
                await store.export_deliveries(
                    journal=self._journal, since=since, into=self.file(index), rows=rows
                )
                self._done[index].set()
        finally:
            await store.close()

    def rows(self, *, failed_only: bool = False) -> Generator[DeliveryRow, None, None]:
        """Every exported row, slice after slice, waiting for each."""
        for index in range(len(self.slices)):
            with contextlib.closing(
                DeliveryRows(self.wait(index)).stream(failed_only=failed_only)
            ) as rows:
                yield from rows


def _nothing(**_: object) -> Generator[DeliveryRow, None, None]:
    yield from ()


def _last_row(journal: Path) -> int:
    with contextlib.closing(sqlite3.connect(journal)) as db:
        row = db.execute("SELECT MAX(row) FROM messages").fetchone()
    return int(row[0] or 0)


#: Rows per slice of the export: small enough that reading starts soon, large enough that
#: each slice's fixed cost (attaching the files, the fallback's checks) stays negligible.
SLICE_ROWS: Final = 100_000


@contextlib.contextmanager
def merged(
    location: str,
    journal: Path,
    *,
    workdir: Path,
    counter: FunnelCounter | None = None,
    pipelined: bool = True,
) -> Iterator[DeliveryColumns]:
    """The delivery columns of ``journal``'s messages from the store at ``location``.

    A store that does not exist yet gives empty columns (no callback came). With
    ``pipelined`` the export runs beside the reading and an export error surfaces while the
    columns are read (as :class:`StoreError`); without, every slice is exported first, so any
    error is raised here. Scratch files live in a temporary directory under ``workdir``.
    """
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".delivery-") as scratch:
        if not store_exists(location):
            create_output(Path(scratch) / "empty.db").close()
            with contextlib.closing(DeliveryRows(Path(scratch) / "empty.db").stream()) as empty:
                yield DeliveryColumns(_nothing, empty, counter or FunnelCounter())
            return
        export = _SlicedExport(location, journal, Path(scratch), slice_rows=SLICE_ROWS)
        export.start()
        try:
            if not pipelined:
                for index in range(len(export.slices)):
                    export.wait(index)
            rows = export.rows()
            yield DeliveryColumns(export.rows, rows, counter or FunnelCounter())
        finally:
            export.close()


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
                columns = stack.enter_context(
                    merged(location, journal, workdir=journal.parent, pipelined=False)
                )
            except (StoreError, sqlite3.Error, OSError) as exc:
                log.warning(
                    "bulk_sender.delivery_not_merged",
                    extra={"event": "bulk_sender.delivery_not_merged", "error": str(exc)},
                )
        yield columns
