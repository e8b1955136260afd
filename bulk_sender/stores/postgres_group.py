"""Group commit on PostgreSQL, with an answer for each job: one transaction a batch.

The PostgreSQL twin of :mod:`.sqlite_writer` (the same calls, so the ledger's two backends
read alike), on asyncio instead of a thread: each writer (a sending worker's take) queues a
job and awaits its own answer, which the owner's ``commit`` computes inside the transaction
that commits it. One transaction is in flight at a time, on a pooled connection; it takes
everything queued when it begins, so under load the batches grow and the commit (the WAL
flush that makes it durable, with PostgreSQL's default ``synchronous_commit = on``, which is
never changed here) is paid once per batch, not once per message.

A job may be queued without waiting (:meth:`PgGroupCommitter.submit_later`); :meth:`flush`
waits for everything queued before it. A deadlock or a serialisation failure rolls the whole
transaction back and is tried again; any other failure fails only its own batch's waiters with
a :class:`StoreError` (:func:`.postgres.store_error`: one line, no password), and the next
batch tries again on a fresh connection, so a server that comes back is used again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, TypeVar

from bulk_sender.errors import StoreError
from bulk_sender.stores.locations import redacted
from bulk_sender.stores.postgres import driver, driver_errors, store_error

__all__ = ["PgGroupCommitter"]

Job = TypeVar("Job")
Answer = TypeVar("Answer")
#: Jobs per transaction at most: bounds a commit's latency under a flood.
_BATCH: Final = 4096
#: Tries of a transaction the server rolled back for a deadlock or a serialisation failure.
_TRIES: Final = 3


class _Flush:
    """A marker job: answered once everything queued before it is committed."""


_FLUSH: Final = _Flush()


class PgGroupCommitter(Generic[Job, Answer]):
    """Commits queued jobs through ``pool``; see the module docstring.

    ``commit(connection, jobs)`` runs inside the transaction and returns one answer per job.
    ``what`` names the store in errors ("audience ledger").
    """

    def __init__(
        self,
        pool: Any,
        url: str,
        commit: Callable[[Any, list[Job]], Awaitable[Sequence[Answer]]],
        *,
        what: str,
    ) -> None:
        self._pool = pool
        self._url = url
        self._commit_jobs = commit
        self._what = what
        self._pending: list[tuple[Job | _Flush, asyncio.Future[Answer] | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        self.committed = 0
        #: The last failure of a batch nobody waited for (a queued job), if any.
        self.unawaited_failure: StoreError | None = None

    def __repr__(self) -> str:
        return (
            f"PgGroupCommitter(url={redacted(self._url)!r}, running={self._task is not None}, "
            f"batches={self.batches}, committed={self.committed})"
        )

    async def submit(self, job: Job) -> Answer:
        """Commit ``job`` (with whatever else is queued); return its answer once committed."""
        return await self.submit_soon(job)

    def submit_soon(self, job: Job) -> asyncio.Future[Answer]:
        """Queue ``job``; the future is its answer, set once committed (no task made)."""
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue(job, waiter)
        return waiter

    def submit_later(self, job: Job) -> None:
        """Queue ``job`` for the next commit without waiting (:meth:`flush` waits for it)."""
        self._queue(job, None)

    async def flush(self) -> None:
        """Wait until every job queued so far is committed."""
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue(_FLUSH, waiter)
        await waiter

    async def stop(self) -> None:
        """Refuse new jobs and wait until everything queued is committed (or failed)."""
        self._closed = True
        while self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _queue(self, job: Job | _Flush, waiter: asyncio.Future[Answer] | None) -> None:
        if self._closed:
            raise StoreError(f"the {self._what} {redacted(self._url)} is closed")
        self._pending.append((job, waiter))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="ledger-writer")

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                jobs = [job for job, _ in batch if not isinstance(job, _Flush)]
                try:
                    answers, error = await self._commit(jobs)
                except BaseException as exc:  # a bug or a cancellation: no writer waits forever
                    _settle(batch, [], exc)
                    raise
                if error is not None and any(w is None for _, w in batch):
                    self.unawaited_failure = error
                _settle(batch, answers, error)
        finally:
            self._task = None

    async def _commit(self, jobs: list[Job]) -> tuple[Sequence[Answer], StoreError | None]:
        if not jobs:
            return [], None
        retry = driver().exceptions.TransactionRollbackError
        doing = f"write the {self._what}"
        for attempt in range(1, _TRIES + 1):
            try:
                answers = await self._transaction(jobs, keep=retry)
            except retry as exc:
                if attempt == _TRIES:
                    return [], store_error(exc, url=self._url, doing=doing)
                continue
            except driver_errors() as exc:
                return [], store_error(exc, url=self._url, doing=doing)
            self.batches += 1
            self.committed += len(jobs)
            return answers, None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _transaction(self, jobs: list[Job], *, keep: type[BaseException]) -> Sequence[Answer]:
        """One transaction running ``jobs``. A connection that failed otherwise than by a
        rollback the server chose (``keep``) is closed, never handed out again: one the server
        ended while it sat in the pool can be left in a state asyncpg cannot use."""
        async with self._pool.acquire() as connection:
            try:
                async with connection.transaction():
                    return await self._commit_jobs(connection, jobs)
            except keep:
                raise
            except BaseException:
                connection.terminate()
                raise


def _settle(
    batch: Sequence[tuple[object, asyncio.Future[Answer] | None]],
    answers: Sequence[Answer],
    error: BaseException | None,
) -> None:
    """Hand each waiter its answer (jobs' answers in order; a flush gets None), or the error."""
    pending = iter(answers)
    for job, waiter in batch:
        answer = None if isinstance(job, _Flush) or error is not None else next(pending)
        if waiter is None or waiter.done():
            continue
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(answer)  # type: ignore[arg-type]
