"""Group commit for SQLite, with an answer for each writer: one thread, one transaction a batch.

Writers (the sending workers) each queue a job and await its own answer, which the thread
computes inside the transaction that commits it: the fsync that makes a commit durable is paid
once per batch, not once per job, as the journal's writer does. The batch's jobs are handed
whole to the owner's ``commit`` function, so it can merge them into a few multi-row statements
(the sqlite3 module lets go of the GIL around every statement, and getting it back while the
event loop is busy is what a statement per job would mostly wait for).

A job may also be queued without waiting (:meth:`GroupCommitter.submit_later`); :meth:`flush`
waits for everything queued before it. The database runs in WAL mode with ``synchronous=FULL``:
a commit that returned survives a kill -9 and a power loss. A failed commit fails only its own
batch's waiters (with :class:`~bulk_sender.stores.ledger.StoreError`); the next batch tries
again. Several processes may write the same file: ``BEGIN IMMEDIATE`` waits up to 30 s for
another's transaction to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Generic, TypeVar

from bulk_sender.errors import StoreError

__all__ = ["GroupCommitter", "connect"]

Job = TypeVar("Job")
Answer = TypeVar("Answer")
#: Jobs per transaction at most: bounds a commit's latency under a flood.
_BATCH: Final = 4096
_BUSY_SECONDS: Final = 30.0


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, ``synchronous=FULL``."""
    if read_only:
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
            check_same_thread=False, timeout=_BUSY_SECONDS,
        )  # fmt: skip
        return db
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=_BUSY_SECONDS)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class _Flush:
    """A marker job: answered once everything queued before it is committed."""


_FLUSH: Final = _Flush()
_STOP: Final = _Flush()


class GroupCommitter(Generic[Job, Answer]):
    """Owns the write connection of one SQLite file; see the module docstring.

    ``commit(db, jobs)`` runs inside the transaction and returns one answer per job, in order.
    """

    def __init__(
        self,
        path: Path,
        db: sqlite3.Connection,
        commit: Callable[[sqlite3.Connection, list[Job]], Sequence[Answer]],
    ) -> None:
        self.path = path
        self._db = db
        self._commit_jobs = commit
        self._queue: queue.SimpleQueue[tuple[Job | _Flush, asyncio.Future[Answer] | None]]
        self._queue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.committed = 0
        #: The last failure of a batch nobody waited for (a queued job), if any.
        self.unawaited_failure: StoreError | None = None

    def __repr__(self) -> str:
        return (
            f"GroupCommitter(path={str(self.path)!r}, running={self._thread is not None}, "
            f"batches={self.batches}, committed={self.committed})"
        )

    def start(self) -> None:
        """Start the writer thread; call inside the running loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    async def submit(self, job: Job) -> Answer:
        """Commit ``job`` (with whatever else is queued); return its answer once durable."""
        return await self.submit_soon(job)

    def submit_soon(self, job: Job) -> asyncio.Future[Answer]:
        """Queue ``job``; the future is its answer, set once it is durable (no task made)."""
        self._check_open()
        assert self._loop is not None
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._queue.put((job, waiter))
        return waiter

    def submit_later(self, job: Job) -> None:
        """Queue ``job`` for the next commit without waiting (:meth:`flush` waits for it)."""
        self._check_open()
        self._queue.put((job, None))

    async def flush(self) -> None:
        """Wait until every job queued so far is committed."""
        self._check_open()
        assert self._loop is not None
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._queue.put((_FLUSH, waiter))
        await waiter

    async def stop(self) -> None:
        """Commit what is queued, end the thread and close the connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put((_STOP, None))
            await asyncio.to_thread(thread.join)
        self._db.close()

    def _check_open(self) -> None:
        if self._loop is None or self._thread is None:
            raise StoreError(f"the ledger {self.path} is closed")

    def _run(self) -> None:
        assert self._loop is not None
        while True:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs = [job for job, _ in batch if not isinstance(job, _Flush)]
            answers, error = self._commit(jobs)
            if error is not None and any(w is None for j, w in batch if not isinstance(j, _Flush)):
                self.unawaited_failure = error
            self._loop.call_soon_threadsafe(_settle, batch, answers, error)
            if any(job is _STOP for job, _ in batch):
                return

    def _commit(self, jobs: list[Job]) -> tuple[Sequence[Answer], StoreError | None]:
        if not jobs:
            return [], None
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            answers = self._commit_jobs(db, jobs)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            return [], StoreError(f"cannot write the ledger {self.path}: {exc}")
        self.batches += 1
        self.committed += len(jobs)
        return answers, None


def _settle(
    batch: Sequence[tuple[object, asyncio.Future[Answer] | None]],
    answers: Sequence[Answer],
    error: StoreError | None,
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
