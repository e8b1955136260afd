"""Group commit for SQLite: one thread commits whatever is queued as one transaction.

Concurrent writers (the receiver's requests) each queue their statements and await the commit
of the batch that holds them, so the fsync that makes a commit durable is paid once per batch,
not once per request, as :mod:`bulk_sender.record.journal`'s writer does for the journal. The
database runs in WAL mode with ``synchronous=FULL``: a commit that returned survives a kill -9
and a power loss.

A failed commit fails only its own batch's writers (with :class:`StoreError`); the next batch
tries again, so a receiver answers 503 while the disk is full and recovers when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import queue
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bulk_sender.errors import StoreError
from bulk_sender.stores.sql import Insert

__all__ = ["GroupCommitWriter", "Statement", "connect"]

#: One row to insert: how, and its values.
Statement = tuple[Insert, tuple[object, ...]]
_Item = tuple[Sequence[Statement], "asyncio.Future[None] | None"]
_STOP: Final[_Item] = ((), None)
#: Writers per transaction at most: bounds a commit's latency under a flood.
_BATCH: Final = 4096


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, ``synchronous=FULL``."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class GroupCommitWriter:
    """Owns the write connection of one SQLite file; see the module docstring."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.committed = 0

    def __repr__(self) -> str:
        running = self._thread is not None
        return (
            f"GroupCommitWriter(path={str(self.path)!r}, running={running}, "
            f"batches={self.batches}, committed={self.committed})"
        )

    def start(self) -> None:
        """Start the writer thread; call inside the running loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    async def write(self, statements: Sequence[Statement]) -> None:
        """Commit ``statements`` (with whatever else is queued); return once durable."""
        if self._loop is None or self._thread is None:
            raise StoreError(f"the store {self.path} is closed")
        waiter = self._loop.create_future()
        self._queue.put((statements, waiter))
        await waiter

    async def stop(self) -> None:
        """Commit what is queued, end the thread and close the connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join)
        self._db.close()

    def _run(self) -> None:
        assert self._loop is not None
        while True:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            error = self._commit([item[0] for item in batch])
            waiters = [waiter for _, waiter in batch if waiter is not None]
            if waiters:
                self._loop.call_soon_threadsafe(_settle, waiters, error)
            if any(item is _STOP for item in batch):
                return

    def _commit(self, work: list[Sequence[Statement]]) -> StoreError | None:
        grouped: dict[Insert, list[tuple[object, ...]]] = {}
        for statements in work:
            for insert, params in statements:
                grouped.setdefault(insert, []).append(params)
        if not grouped:
            return None
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            for insert, rows in grouped.items():
                _insert_all(db, insert, rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            return StoreError(f"cannot write the store {self.path}: {exc}")
        self.batches += 1
        self.committed += len(work)
        return None


@functools.cache
def _statement(insert: Insert, rows: int) -> str:
    return insert.statement(rows)


def _insert_all(db: sqlite3.Connection, insert: Insert, rows: list[tuple[object, ...]]) -> None:
    """Insert ``rows`` in as few statements as the variable limit allows (sizes in powers of
    two, so a handful of statements are ever prepared)."""
    start, most = 0, insert.most_rows
    while start < len(rows):
        size = min(1 << (most.bit_length() - 1), 1 << ((len(rows) - start).bit_length() - 1))
        group = rows[start : start + size]
        db.execute(_statement(insert, size), list(itertools.chain.from_iterable(group)))
        start += size


def _settle(waiters: list[asyncio.Future[None]], error: StoreError | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
