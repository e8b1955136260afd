"""Group commit for SQLite: one thread commits whatever is queued as one transaction.

Concurrent writers (the receiver's requests, the sending workers' ledger takes) each queue a job
and await the commit of the batch that holds it, so the fsync that makes a commit durable is
paid once per batch, not once per job, as :mod:`bulk_sender.record.journal`'s writer does for
the journal. The batch's jobs are handed whole to the owner's ``commit`` function, inside the
transaction, so it can merge them into a few multi-row statements (the sqlite3 module lets go
of the GIL around every statement, and getting it back while the event loop is busy is what a
statement per job would mostly wait for). ``commit`` returns one answer per job, in order, or
None when its jobs have no answer (the callback store's rows: :func:`insert_rows`); the answers
of a batch reach the event loop in one call.

An owner may also pass ``alone(db, jobs)``: it commits a batch that one statement can do whole,
in autocommit mode (a write statement takes the write lock as it starts, as ``BEGIN IMMEDIATE``
does, and commits as it ends), and returns its answers, or None to go the usual way. One
statement instead of three is two fewer hand-overs of the GIL from the event loop's thread,
which on a busy machine cost more than the statement.

A job may also be queued without waiting (:meth:`GroupCommitter.submit_later`); :meth:`flush`
waits for everything queued before it. The database runs in WAL mode with ``synchronous=FULL``:
a commit that returned survives a kill -9 and a power loss. A failed commit fails only its own
batch's waiters (with :class:`StoreError`); the next batch tries again, so a receiver answers
503 while the disk is full and recovers when it is not.

Several processes may write the same file (``receive --workers``, two sends on one ledger).
SQLite alone would serialise them, but a writer that finds the file locked polls for it with
sleeps of 1 to 100 ms, and meanwhile its batch, and every request waiting on it, waits too. So
the committers of one file also take turns on an ``flock`` of a file beside it (``PATH-lock``),
which a waiting writer tries again after 20 µs, then 40, ... up to 0.5 ms: it gets the file
within a fraction of a millisecond of the last writer's commit. The lock is only a faster
hand-over, never what makes the writes safe (SQLite's own locks, waiting up to 30 s, do that,
as for any other program writing the file): a writer that cannot have it within 5 s (another
was stopped holding it: Ctrl-Z, a debugger) goes on without it, and a lock file it may not
open (a store shared by a group, another user's lock file) or a file system without ``flock``
leaves SQLite's locking alone. The lock file gets the database file's permissions, as SQLite
gives its ``-wal`` and ``-shm``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import itertools
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Generic, TypeVar

from bulk_sender.errors import StoreError
from bulk_sender.stores.sql import Insert

__all__ = ["FileLock", "GroupCommitter", "Statement", "connect", "insert_rows", "lock_path"]

Job = TypeVar("Job")
Answer = TypeVar("Answer")
#: One row to insert: how, and its values.
Statement = tuple[Insert, tuple[object, ...]]
#: Jobs per transaction at most: bounds a commit's latency under a flood.
_BATCH: Final = 4096
_BUSY_SECONDS: Final = 30.0


def lock_path(path: Path) -> Path:
    """The file beside the database whose ``flock`` queues its committers."""
    return path.with_name(path.name + "-lock")


_LOCK_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
#: How long a writer waits for the file's lock before it goes on without it.
_LOCK_WAIT: Final = 5.0
_FIRST_PAUSE, _LONGEST_PAUSE = 0.00002, 0.0005
#: Why a lock file may not be openable where the database still is writable: no rights to it
#: (another user's, in a store shared by a group), a read-only place.
_NO_LOCK_FILE: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class FileLock:
    """The ``flock`` of ``PATH-lock`` that the writers of one SQLite file take turns on; see the
    module docstring. A symlink where the lock file goes is refused (:class:`StoreError`)."""

    def __init__(self, path: Path, what: str) -> None:
        self._fd = _open_lock(path, what)

    def acquire(self) -> bool:
        """Take the lock, trying again with growing pauses for up to 5 s; False: go on without
        it (it was not to be had, or cannot be on this file system)."""
        if self._fd is None:
            return False
        pause, deadline = _FIRST_PAUSE, 0.0
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            except OSError:
                return False
            else:
                return True
            now = time.monotonic()
            if not deadline:
                deadline = now + _LOCK_WAIT
            elif now >= deadline:
                return False
            time.sleep(pause)
            pause = min(2 * pause, _LONGEST_PAUSE)

    def release(self) -> None:
        """Let the next writer have the file."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (which lets go of the lock, if held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _open_lock(path: Path, what: str) -> int | None:
    """The lock file, opened (created with the database's permissions if need be); None where
    it may not be opened."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode) & 0o666
    except OSError:
        mode = 0o644
    try:
        fd = os.open(lock_path(path), _LOCK_FLAGS, mode)
    except OSError as exc:
        if exc.errno in _NO_LOCK_FILE:
            return None
        raise StoreError(f"cannot open {what} {path}: {lock_path(path)}: {exc.strerror}") from None
    with contextlib.suppress(OSError):  # ours to set only if we own it; umask set it narrower
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, mode)
    return fd


def connect(
    path: Path, *, read_only: bool = False, what: str = "the database"
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, ``synchronous=FULL``;
    ``what`` names the file in errors."""
    if read_only:
        return sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
            check_same_thread=False, timeout=_BUSY_SECONDS,
        )  # fmt: skip
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=_BUSY_SECONDS)
    try:
        # Under the file's lock: SQLite does not wait for another connection that is switching
        # a new file to WAL at the same moment ("database is locked" at once), which two
        # processes opening a new store together would otherwise meet.
        lock = FileLock(path, what)
        try:
            lock.acquire()
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            lock.close()
        db.execute("PRAGMA synchronous=FULL")
    except BaseException:
        db.close()
        raise
    return db


class _Marker:
    """A job that is no job: a flush (answered once everything before it is committed) or the
    writer's stop."""


_FLUSH: Final = _Marker()
_STOP: Final = _Marker()


class GroupCommitter(Generic[Job, Answer]):
    """Owns the write connection of one SQLite file; see the module docstring.

    ``commit(db, jobs)`` runs inside the transaction; ``alone(db, jobs)``, if given, may commit
    the batch by itself first; ``what`` names the file in errors ("the ledger").
    """

    def __init__(
        self,
        path: Path,
        db: sqlite3.Connection,
        commit: Callable[[sqlite3.Connection, list[Job]], Sequence[Answer] | None],
        *,
        what: str,
        alone: Callable[[sqlite3.Connection, list[Job]], Sequence[Answer] | None] | None = None,
    ) -> None:
        self.path = path
        self._db = db
        self._commit_jobs = commit
        self._alone = alone
        self._what = what
        self._lock = FileLock(path, what)
        self._queue: queue.SimpleQueue[tuple[Job | _Marker, asyncio.Future[Answer] | None]]
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

    def start(self, *, name: str = "store-writer") -> None:
        """Start the writer thread; call inside the running loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def submit(self, job: Job) -> Answer:
        """Commit ``job`` (with whatever else is queued); return its answer once durable."""
        return await self.submit_soon(job)

    def submit_soon(self, job: Job) -> asyncio.Future[Answer]:
        """Queue ``job``; the future is its answer, set once it is durable (no task made)."""
        if self._thread is None or self._loop is None:
            raise self._closed()
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._queue.put((job, waiter))
        return waiter

    def submit_later(self, job: Job) -> None:
        """Queue ``job`` for the next commit without waiting (:meth:`flush` waits for it)."""
        if self._thread is None:
            raise self._closed()
        self._queue.put((job, None))

    async def flush(self) -> None:
        """Wait until every job queued so far is committed."""
        if self._thread is None or self._loop is None:
            raise self._closed()
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
        self._lock.close()

    def _closed(self) -> StoreError:
        return StoreError(f"{self._what} {self.path} is closed")

    def _run(self) -> None:
        assert self._loop is not None
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            batch = [get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < _BATCH:
                    batch.append(get_nowait())
            jobs: list[Job] = []
            waiters: list[asyncio.Future[Answer] | None] = []
            markers: list[asyncio.Future[Answer] | None] = []
            for job, waiter in batch:
                if isinstance(job, _Marker):
                    markers.append(waiter)
                else:
                    jobs.append(job)
                    waiters.append(waiter)
            answers, error = self._commit(jobs)
            if error is not None and None in waiters:
                self.unawaited_failure = error
            self._loop.call_soon_threadsafe(_settle, waiters, answers, error, markers)
            if any(job is _STOP for job, _ in batch):
                return

    def _commit(self, jobs: list[Job]) -> tuple[Sequence[Answer] | None, StoreError | None]:
        if not jobs:
            return None, None
        db = self._db
        queued = self._lock.acquire()
        try:
            answers = None if self._alone is None else self._alone(db, jobs)
            if answers is None:
                db.execute("BEGIN IMMEDIATE")
                answers = self._commit_jobs(db, jobs)
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            return None, StoreError(f"cannot write {self._what} {self.path}: {exc}")
        finally:
            if queued:
                self._lock.release()
        self.batches += 1
        self.committed += len(jobs)
        return answers, None


def _settle(
    waiters: list[asyncio.Future[Answer] | None],
    answers: Sequence[Answer] | None,
    error: StoreError | None,
    markers: list[asyncio.Future[Answer] | None],
) -> None:
    """Hand each waiter its job's answer (None for an answerless batch and for a flush), or the
    batch's error; one call per batch."""
    if error is not None:
        for waiter in waiters:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
    elif answers is None:
        for waiter in waiters:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # type: ignore[arg-type]
    else:
        for waiter, answer in zip(waiters, answers, strict=True):
            if waiter is not None and not waiter.done():
                waiter.set_result(answer)
    for waiter in markers:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # type: ignore[arg-type]


def insert_rows(db: sqlite3.Connection, jobs: list[Sequence[Statement]]) -> None:
    """The answerless ``commit`` of rows to insert: each job's statements, merged by kind into
    as few multi-row statements as the variable limit allows."""
    grouped: dict[Insert, list[tuple[object, ...]]] = {}
    for statements in jobs:
        for insert, params in statements:
            grouped.setdefault(insert, []).append(params)
    for insert, rows in grouped.items():
        _insert_all(db, insert, rows)


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
