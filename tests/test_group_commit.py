"""The SQLite group committer both stores write through: batches, answers, failures, flushes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from bulk_sender.errors import StoreError
from bulk_sender.stores.sql import Insert
from bulk_sender.stores.sqlite_writer import GroupCommitter, Statement, connect, insert_rows

T = TypeVar("T")


class _Held:
    """A commit function that squares its jobs, holding its first batch until released, so
    what is queued meanwhile is sure to form the second batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[int]] = []

    def __call__(self, db: sqlite3.Connection, jobs: list[int]) -> list[int]:
        if not self.batches:
            self.entered.set()
            self.release.wait()
        self.batches.append(list(jobs))
        db.executemany("INSERT INTO t (v) VALUES (?)", [(job,) for job in jobs])
        return [job * job for job in jobs]


def _open(path: Path) -> sqlite3.Connection:
    db = connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER NOT NULL)")
    return db


def _with(
    path: Path,
    commit: Callable[[sqlite3.Connection, list[int]], Sequence[int] | None],
    body: Callable[[GroupCommitter[int, int]], Awaitable[T]],
) -> T:
    async def main() -> T:
        writer: GroupCommitter[int, int] = GroupCommitter(path, _open(path), commit, what="the t")
        writer.start()
        try:
            return await body(writer)
        finally:
            await writer.stop()

    return asyncio.run(main())


def _count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM t").fetchone()
    return int(count)


def test_jobs_queued_meanwhile_commit_together_and_each_gets_its_own_answer(
    tmp_path: Path,
) -> None:
    """Jobs queued while a commit runs form the next batch; each waiter gets its job's answer."""
    held = _Held()

    async def body(writer: GroupCommitter[int, int]) -> list[int]:
        first = writer.submit_soon(1)
        await asyncio.to_thread(held.entered.wait)
        rest = [writer.submit_soon(job) for job in (2, 3, 4)]
        held.release.set()
        return list(await asyncio.gather(first, *rest))

    assert _with(tmp_path / "t.db", held, body) == [1, 4, 9, 16]
    assert held.batches == [[1], [2, 3, 4]]
    assert _count(tmp_path / "t.db") == 4


def test_an_answerless_commit_answers_every_waiter_none(tmp_path: Path) -> None:
    """A commit function that returns None (no answers) still settles every waiter."""

    def commit(db: sqlite3.Connection, jobs: list[int]) -> None:
        db.executemany("INSERT INTO t (v) VALUES (?)", [(job,) for job in jobs])

    async def body(writer: GroupCommitter[int, int]) -> list[int | None]:
        return list(await asyncio.gather(*(writer.submit(job) for job in range(5))))

    assert _with(tmp_path / "t.db", commit, body) == [None] * 5
    assert _count(tmp_path / "t.db") == 5


def test_a_failed_commit_fails_only_its_batch_and_nothing_of_it_stays(tmp_path: Path) -> None:
    """A batch whose commit fails is rolled back whole, its waiters get StoreError naming the
    file, a job queued without a waiter is noted, and the next batch commits."""
    fail = [True]

    def commit(db: sqlite3.Connection, jobs: list[int]) -> list[int]:
        db.executemany("INSERT INTO t (v) VALUES (?)", [(job,) for job in jobs])
        if fail[0]:
            fail[0] = False
            raise sqlite3.OperationalError("disk I/O error")
        return jobs

    async def body(writer: GroupCommitter[int, int]) -> int:
        writer.submit_later(7)
        with pytest.raises(StoreError, match=r"cannot write the t .*: disk I/O error"):
            await writer.submit(1)
        assert writer.unawaited_failure is not None
        return await writer.submit(2)

    assert _with(tmp_path / "t.db", commit, body) == 2
    assert _count(tmp_path / "t.db") == 1


def test_flush_waits_for_jobs_queued_without_waiting(tmp_path: Path) -> None:
    """submit_later returns at once; flush returns once those jobs are committed."""
    held = _Held()

    async def body(writer: GroupCommitter[int, int]) -> int:
        writer.submit_later(1)
        await asyncio.to_thread(held.entered.wait)
        writer.submit_later(2)
        flushed = asyncio.ensure_future(writer.flush())
        held.release.set()
        await flushed
        return _count(tmp_path / "t.db")

    assert _with(tmp_path / "t.db", held, body) == 2


def test_a_stopped_committer_refuses_jobs(tmp_path: Path) -> None:
    """After stop, every way in raises StoreError saying the file is closed."""

    async def main() -> None:
        path = tmp_path / "t.db"
        writer: GroupCommitter[int, int] = GroupCommitter(path, _open(path), _Held(), what="the t")
        writer.start()
        await writer.stop()
        with pytest.raises(StoreError, match=r"the t .* is closed"):
            writer.submit_soon(1)
        with pytest.raises(StoreError, match="is closed"):
            writer.submit_later(1)
        with pytest.raises(StoreError, match="is closed"):
            await writer.flush()

    asyncio.run(main())


def test_rows_to_insert_are_merged_by_kind_into_few_statements(tmp_path: Path) -> None:
    """insert_rows (the callback store's commit) inserts every row of every job, in statements
    of power-of-two sizes within the variable limit."""
    db = _open(tmp_path / "t.db")
    executed: list[str] = []
    db.set_trace_callback(executed.append)
    insert = Insert("t", ("v",), "DO NOTHING")
    jobs: list[Sequence[Statement]] = [[(insert, (i,)), (insert, (100 + i,))] for i in range(5)]
    insert_rows(db, jobs)
    db.set_trace_callback(None)
    assert sorted(v for (v,) in db.execute("SELECT v FROM t")) == sorted(
        [*range(5), *range(100, 105)]
    )
    assert len(executed) == 2  # 10 rows: 8 + 2
    db.close()
