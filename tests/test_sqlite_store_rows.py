"""The SQLite callback store's two ways in (the ``status_feed`` view, the plain inserts) write
the same rows, and its committers queue on the file's lock."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import multiprocessing
import os
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_sender.delivery.events import Callback, DeliveryStatus, IncomingMessage, StatusEvent
from bulk_sender.errors import StoreError
from bulk_sender.stores import sql, sqlite_writer
from bulk_sender.stores.sqlite import SQLITE, SqliteCallbackStore
from bulk_sender.stores.sqlite_ledger import SqliteLedger
from bulk_sender.stores.sqlite_writer import connect, insert_rows, lock_path
from tests.strategies import status_events

NOW = "2026-11-24T10:00:01.000Z"
_TABLES = ("status_events", "status_ids", "incoming_messages")
_INSERTS = sql.insert_statements(SQLITE)

_IDS = st.lists(st.sampled_from(["A1", "A2", "wamid.A1", "wamid.A2", "B", "C"]), unique=True,
                min_size=0, max_size=5).map(tuple)  # fmt: skip
_INCOMING = st.builds(
    IncomingMessage,
    message_id=st.sampled_from(["in1", "in2", "in3"]),
    sender=st.just("919876543210"),
    at=st.just(NOW),
    type=st.just("text"),
    body=st.sampled_from(["STOP", "hi"]),
)


@st.composite
def _callbacks(draw: st.DrawFn) -> Callback:
    events = [
        dataclasses.replace(event, message_ids=draw(_IDS) or ("A1",))
        for event in draw(st.lists(status_events(), max_size=3))
    ]
    return Callback(statuses=tuple(events), incoming=tuple(draw(st.lists(_INCOMING, max_size=2))))


def _rows(path: Path) -> dict[str, set[tuple[object, ...]]]:
    """Every row of the store's tables but the arrival number and time (the store's clock)."""
    with sqlite3.connect(path) as db:
        found = {table: set(db.execute(f"SELECT * FROM {table}")) for table in _TABLES}
    found["status_events"] = {row[1:2] + row[3:] for row in found["status_events"]}
    found["incoming_messages"] = {row[:3] + row[4:] for row in found["incoming_messages"]}
    return found


def _reference(path: Path, callbacks: list[Callback]) -> None:
    """The rows written the plain way: every statement of ``sql.rows_of``."""
    db = connect(path)
    for statement in sql.schema(SQLITE):
        db.execute(statement)
    db.execute("BEGIN")
    insert_rows(db, [[(_INSERTS[i], p) for i, p in sql.rows_of(c, NOW)] for c in callbacks])
    db.execute("COMMIT")
    db.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(callbacks=st.lists(_callbacks(), max_size=8), together=st.booleans())
def test_the_store_writes_what_the_plain_inserts_write(
    callbacks: list[Callback], together: bool
) -> None:
    """Any callbacks (up to five ids an event, repeats, replies), saved one by one or at once:
    the same rows as the plain inserts of each event, its ids and each reply."""

    async def save(path: Path) -> None:
        store = await SqliteCallbackStore.open(path)
        try:
            if together:
                await asyncio.gather(*(store.save(c) for c in callbacks))
            else:
                for callback in callbacks:
                    await store.save(callback)
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as scratch:
        ours, plain = Path(scratch, "ours.db"), Path(scratch, "plain.db")
        asyncio.run(save(ours))
        _reference(plain, callbacks)
        assert _rows(ours) == _rows(plain)


def test_an_event_with_more_ids_than_the_feed_holds_keeps_them_all(tmp_path: Path) -> None:
    """Four ids (the feed has three columns): every one is stored, so any of them matches."""
    ids = ("A1", "A2", "A3", "A4")
    event = StatusEvent(message_ids=ids, status=DeliveryStatus.READ, at=NOW)

    async def save() -> None:
        store = await SqliteCallbackStore.open(tmp_path / "c.db")
        await store.save(Callback(statuses=(event,)))
        await store.close()

    asyncio.run(save())
    assert {row[0] for row in _rows(tmp_path / "c.db")["status_ids"]} == set(ids)


def test_a_commit_waits_while_another_writer_holds_the_files_lock(tmp_path: Path) -> None:
    """Another process's writer holds ``PATH-lock``: nothing is committed until it lets go,
    then the callback is."""
    path = tmp_path / "c.db"
    event = StatusEvent(message_ids=("A1",), status=DeliveryStatus.READ, at=NOW)

    async def run() -> None:
        store = await SqliteCallbackStore.open(path)
        holder = os.open(lock_path(path), os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)
        try:
            saved = asyncio.ensure_future(store.save(Callback(statuses=(event,))))
            done, _ = await asyncio.wait({saved}, timeout=0.5)
            assert not done
            assert _rows(path)["status_events"] == set()
        finally:
            fcntl.flock(holder, fcntl.LOCK_UN)
            os.close(holder)
        await saved
        assert len(_rows(path)["status_events"]) == 1
        await store.close()

    asyncio.run(run())


def test_a_symlink_where_the_lock_file_goes_is_refused(tmp_path: Path) -> None:
    """The lock file is never opened through a symlink: one StoreError naming it."""
    path = tmp_path / "c.db"
    lock_path(path).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match=r"cannot open the callback store .*c\.db-lock"):
        asyncio.run(SqliteCallbackStore.open(path))
    assert not (tmp_path / "elsewhere").exists()


def _open_together(start: threading.Barrier, path: str, ledger: bool) -> None:
    """A child process: wait for the others, open the file, close it; exit 1 on StoreError."""
    start.wait()
    opener = SqliteLedger.open if ledger else SqliteCallbackStore.open

    async def run() -> None:
        await (await opener(Path(path))).close()

    try:
        asyncio.run(run())
    except StoreError as exc:
        raise SystemExit(str(exc)) from None


@pytest.mark.parametrize("ledger", [False, True], ids=["callback store", "ledger"])
def test_a_new_file_opened_by_several_processes_at_once_opens_in_each(
    tmp_path: Path, ledger: bool
) -> None:
    """Three processes open one new file at the same moment, twenty times: each open succeeds
    (SQLite would answer "database is locked" at once to one switching it to WAL beside
    another)."""
    context = multiprocessing.get_context("fork")
    for round_ in range(20):
        start = context.Barrier(3)
        path = str(tmp_path / f"new-{round_}.db")
        openers = [
            context.Process(target=_open_together, args=(start, path, ledger)) for _ in range(3)
        ]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
        assert [opener.exitcode for opener in openers] == [0, 0, 0]


def _hold(path: Path) -> int:
    """Take the file's lock as another process's writer would; the descriptor to let go of."""
    holder = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(holder, fcntl.LOCK_EX)
    return holder


def test_a_writer_stopped_holding_the_lock_stops_no_other_for_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer holds the lock and never lets go (stopped with Ctrl-Z): the store still
    opens and commits once the wait for the lock is over, under SQLite's locks alone."""
    monkeypatch.setattr(sqlite_writer, "_LOCK_WAIT", 0.2)
    path = tmp_path / "c.db"
    asyncio.run(_save_one(path))  # the file exists, as a stopped writer's would
    holder = _hold(path)
    try:
        asyncio.run(_save_one(path, "A2"))
        assert len(_rows(path)["status_events"]) == 2
    finally:
        os.close(holder)


def test_opening_a_store_whose_lock_is_held_leaves_the_event_loop_free(tmp_path: Path) -> None:
    """Opening waits for the file's lock in a thread: the loop runs on meanwhile."""
    path = tmp_path / "c.db"
    holder = _hold(path)

    async def run() -> None:
        opening = asyncio.ensure_future(SqliteCallbackStore.open(path))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not opening.done()  # we are back on the loop while it waits for the lock
        fcntl.flock(holder, fcntl.LOCK_UN)
        await (await opening).close()

    try:
        asyncio.run(run())
    finally:
        os.close(holder)


def test_a_lock_file_that_may_not_be_opened_leaves_sqlites_locking_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rights to the lock file (another user's, in a store shared by a group): the store
    opens and commits all the same."""
    real_open = os.open

    def refuse_lock(name: object, *args: int) -> int:
        if str(name).endswith("-lock"):
            raise PermissionError(13, "Permission denied")
        return real_open(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refuse_lock)
    path = tmp_path / "c.db"
    asyncio.run(_save_one(path))
    assert len(_rows(path)["status_events"]) == 1
    assert not lock_path(path).exists()


@pytest.mark.parametrize("mode", [0o600, 0o664])
def test_the_lock_file_gets_the_databases_permissions(tmp_path: Path, mode: int) -> None:
    """As SQLite gives its -wal and -shm: a store shared by a group stays shared."""
    path = tmp_path / "c.db"
    asyncio.run(_save_one(path))
    lock_path(path).unlink()
    path.chmod(mode)
    asyncio.run(_save_one(path, "A2"))
    assert lock_path(path).stat().st_mode & 0o777 == mode


async def _save_one(path: Path, message_id: str = "A1") -> None:
    store = await SqliteCallbackStore.open(path)
    event = StatusEvent(message_ids=(message_id,), status=DeliveryStatus.READ, at=NOW)
    try:
        await store.save(Callback(statuses=(event,)))
    finally:
        await store.close()
