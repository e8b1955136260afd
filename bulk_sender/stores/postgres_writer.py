"""Group commit on PostgreSQL: concurrent writers share transactions, a few at a time.

Each writer (a receiver's request) queues its rows and awaits the commit of the transaction
that holds them. At most ``lanes`` transactions are in flight, each on a pooled connection;
each takes everything queued when it begins, so under load the batches grow and a commit (the
WAL flush that makes it durable, with the default ``synchronous_commit = on``) is paid once per
batch, while a lone callback still commits at once.

A batch inserts each table's rows in one statement (each column an array parameter, through
``unnest``: the same prepared statement whatever the batch's size), with the same ``ON
CONFLICT`` clause as :mod:`.sql`'s inserts. Rows go in a fixed order (table by table, each by
its key), so two transactions
inserting the same keys (a callback sent twice, to two receivers) wait for each other instead
of deadlocking; a deadlock or serialisation failure all the same is retried, since the whole
transaction rolled back. Any other failure fails only its own batch's writers
(:class:`StoreError`, so the receiver answers 503); the next batch tries again on a fresh
connection, so a server that comes back is used again without a restart.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, Final

from bulk_sender.errors import StoreError
from bulk_sender.stores.locations import redacted
from bulk_sender.stores.postgres import driver, driver_errors, numbered, store_error
from bulk_sender.stores.sql import Insert

__all__ = ["PgGroupCommitter", "Statement"]

#: One row to insert: how, and its values.
Statement = tuple[Insert, tuple[object, ...]]
_Item = tuple[Sequence[Statement], "asyncio.Future[None]"]
#: Writers per transaction at most: bounds a commit's latency under a flood.
_BATCH: Final = 4096
#: Tries of a transaction the server rolled back for a deadlock or a serialisation failure.
_TRIES: Final = 3


class PgGroupCommitter:
    """Commits queued rows through ``pool``; see the module docstring."""

    def __init__(self, pool: Any, url: str, *, lanes: int) -> None:
        self._pool = pool
        self._url = url
        self._lanes = lanes
        self._pending: list[_Item] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.batches = 0
        self.committed = 0

    def __repr__(self) -> str:
        return (
            f"PgGroupCommitter(url={redacted(self._url)!r}, lanes={self._lanes}, "
            f"running={self._running}, batches={self.batches}, committed={self.committed})"
        )

    async def write(self, statements: Sequence[Statement]) -> None:
        """Commit ``statements`` (with whatever else is queued); return once committed."""
        if self._closed:
            raise StoreError(f"the callback store {redacted(self._url)} is closed")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((statements, waiter))
        if self._running < self._lanes:
            self._running += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await waiter

    async def stop(self) -> None:
        """Refuse new writes and wait until everything queued is committed (or failed)."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                try:
                    error: BaseException | None = await self._commit([s for s, _ in batch])
                except BaseException as exc:  # a bug or a cancellation: no writer waits forever
                    _settle(batch, exc)
                    raise
                _settle(batch, error)
        finally:
            self._running -= 1

    async def _commit(self, work: list[Sequence[Statement]]) -> StoreError | None:
        grouped: dict[Insert, list[tuple[Any, ...]]] = {}
        for statements in work:
            for insert, params in statements:
                grouped.setdefault(insert, []).append(params)
        for rows in grouped.values():
            rows.sort(key=lambda row: (row[0], row[1]))
        retry = driver().exceptions.TransactionRollbackError
        for attempt in range(1, _TRIES + 1):
            try:
                await self._transaction(grouped, keep=retry)
            except retry as exc:
                if attempt == _TRIES:
                    return store_error(exc, url=self._url, doing="write the callback store")
                continue
            except driver_errors() as exc:
                return store_error(exc, url=self._url, doing="write the callback store")
            self.batches += 1
            self.committed += len(work)
            return None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _transaction(
        self, grouped: dict[Insert, list[tuple[Any, ...]]], *, keep: type[BaseException]
    ) -> None:
        """One transaction inserting ``grouped``. A connection that failed otherwise than by a
        rollback the server chose (``keep``) is closed, never handed out again: one the server
        ended while it sat in the pool can be left in a state asyncpg cannot use."""
        async with self._pool.acquire() as connection:
            try:
                async with connection.transaction():
                    for insert, rows in grouped.items():
                        await _insert_all(connection, insert, rows)
            except keep:
                raise
            except BaseException:
                connection.terminate()
                raise


def _settle(batch: list[_Item], error: BaseException | None) -> None:
    for _, waiter in batch:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


#: Columns that are not ``text``, by name (the others are).
_TYPES: Final = {"event_key": "bigint", "status_rank": "integer"}


@functools.cache
def _unnest(insert: Insert) -> str:
    """``insert`` for any number of rows in one statement, each column one array parameter,
    so each connection prepares it once and a batch is one round trip per table."""
    arrays = ", ".join(
        f"${n}::{_TYPES.get(column, 'text')}[]" for n, column in enumerate(insert.columns, 1)
    )
    return (
        f"INSERT INTO {insert.table} ({', '.join(insert.columns)}) "
        f"SELECT * FROM unnest({arrays}) ON CONFLICT {insert.conflict}"
    )


async def _insert_all(connection: Any, insert: Insert, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows``: one statement for them all; of an upsert's (:attr:`Insert.single`: the
    health check's heartbeat, which would update one row twice), the last alone."""
    if insert.single:
        await connection.execute(numbered(insert.statement(1)), *rows[-1])
        return
    await connection.execute(_unnest(insert), *map(list, zip(*rows, strict=True)))
