"""The PostgreSQL group committer against a scripted pool: retries what the server rolled back,
fails a batch it cannot commit as StoreError, and never leaves a writer waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bulk_sender.errors import StoreError
from bulk_sender.stores import postgres, sql
from bulk_sender.stores.postgres_writer import PgGroupCommitter

asyncpg = pytest.importorskip("asyncpg")

INSERT = sql.insert_statements(postgres.CALLBACKS)[2]
ROW = ("m1", "919876543210", "2026-11-24T10:00:00.000Z", "2026-11-24T10:00:01.000Z", "text", "hi")


class _Connection:
    def __init__(self, pool: _Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    def terminate(self) -> None:
        self._pool.terminated += 1

    async def execute(self, statement: str, *params: object) -> None:
        self._pool.statements.append(statement)
        if self._pool.failures:
            raise self._pool.failures.pop(0)


class _Pool:
    """Hands out one connection whose next statements raise ``failures`` in turn."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.statements: list[str] = []
        self.terminated = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Connection]:
        yield _Connection(self)


def _write(pool: Any) -> PgGroupCommitter:
    writer = PgGroupCommitter(pool, "postgresql://u:pw@h/db", lanes=1)

    async def run() -> None:
        try:
            await writer.write([(INSERT, ROW)])
        finally:
            await writer.stop()

    asyncio.run(run())
    return writer


def test_a_deadlock_is_retried_and_the_batch_commits() -> None:
    """The server rolled the transaction back (deadlock): it is run again, and commits."""
    deadlock = asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
    pool = _Pool([deadlock, deadlock])
    assert _write(pool).committed == 1
    assert len(pool.statements) == 3
    assert pool.terminated == 0


def test_a_lost_connection_fails_the_batch_as_store_error_without_the_password() -> None:
    """A connection that died: StoreError (a 503 for the receiver), one line, no password; the
    connection is closed, not handed out again."""
    pool = _Pool([asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")])
    with pytest.raises(StoreError) as caught:
        _write(pool)
    assert pool.terminated == 1
    assert "pw" not in str(caught.value)
    assert "postgresql://u:***@h/db" in str(caught.value)


def test_an_unexpected_error_reaches_the_writer_instead_of_hanging_it() -> None:
    """A bug below the writer is raised to the waiting writer (a 500), never a lost wake-up."""
    pool = _Pool([RuntimeError("a bug")])
    with pytest.raises(RuntimeError, match="a bug"):
        _write(pool)


def test_a_connection_asyncpg_cannot_use_is_a_503_and_is_closed() -> None:
    """A connection the server ended while it sat in the pool (InternalClientError): a
    StoreError, and the connection is closed so that the next batch gets a fresh one."""
    pool = _Pool([asyncpg.exceptions.InternalClientError("cannot switch to state 15")])
    with pytest.raises(StoreError, match="connection was lost"):
        _write(pool)
    assert pool.terminated == 1
