"""The callback store in one SQLite file (the default backend).

Writes go through a :class:`~.sqlite_writer.GroupCommitter` (its answerless case: each job is
rows to insert); the delivery export attaches the store and the campaign's journal to a local
output file and runs :mod:`.sql`'s merge there (:mod:`.sqlite_delivery`).

A status event goes in as one row of ``status_feed``, a view of the writer's connection alone
(``TEMP``: nothing of it is in the file) whose trigger inserts the event and its ids with the
same idempotent inserts as :mod:`.sql`'s. A batch of status events then commits as one
statement in autocommit mode: the writer thread takes the GIL back once per batch rather than
once per statement, while the file's write lock is held (see :mod:`.sqlite_writer`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bulk_sender.delivery.events import Callback, StatusEvent
from bulk_sender.errors import StoreError
from bulk_sender.model import utc_now
from bulk_sender.stores import migrations, sql
from bulk_sender.stores.sqlite_schema import apply_schema
from bulk_sender.stores.sqlite_writer import GroupCommitter, Statement, connect, insert_rows

__all__ = ["SQLITE", "SqliteCallbackStore"]

SQLITE: Final = sql.Dialect(
    key_type="INTEGER",
    serial_key="INTEGER PRIMARY KEY",
    without_rowid=" WITHOUT ROWID",
    mark="?",
)
_INSERTS: Final = sql.insert_statements(SQLITE)
_CHECKED: Final = sql.checked(SQLITE)
_FEED: Final = sql.Insert("status_feed", sql.FEED_COLUMNS, conflict="")
_Writer = GroupCommitter[Sequence[Statement], None]


def _feed_schema() -> list[str]:
    """The writer connection's ``status_feed`` view and its trigger (see the module docstring)."""
    events, ids = _INSERTS[0], _INSERTS[1]
    event_values = ", ".join(f"NEW.{column}" for column in events.columns)
    id_values = ", ".join(
        "m" if column == "message_id" else f"NEW.{column}" for column in ids.columns
    )
    each_id = " UNION ALL ".join(
        f"SELECT NEW.message_id{i} AS m" for i in range(1, sql.FEED_IDS + 1)
    )
    nulls = ", ".join(["NULL"] * len(_FEED.columns))
    return [
        "PRAGMA temp_store=MEMORY",
        f"CREATE TEMP VIEW status_feed ({', '.join(_FEED.columns)}) AS SELECT {nulls}",
        f"""CREATE TEMP TRIGGER status_feed_insert INSTEAD OF INSERT ON status_feed BEGIN
            INSERT INTO {events.table} ({", ".join(events.columns)}) VALUES ({event_values})
                ON CONFLICT {events.conflict};
            INSERT INTO {ids.table} ({", ".join(ids.columns)})
                SELECT {id_values} FROM ({each_id}) WHERE m IS NOT NULL
                ON CONFLICT {ids.conflict};
        END""",
    ]


def _statements(callback: Callback, received_at: str) -> list[Statement]:
    """The rows a callback adds: each status event as one ``status_feed`` row (one with more
    ids than the feed has columns for, as its own rows), each incoming message as its own."""
    found: list[Statement] = []
    for event in callback.statuses:
        row = sql.feed_row(event, received_at)
        if row is None:
            found.extend(_own_rows(event, received_at))
        else:
            found.append((_FEED, row))
    found.extend((_INSERTS[2], sql.incoming_row(m, received_at)) for m in callback.incoming)
    return found


def _own_rows(event: StatusEvent, received_at: str) -> list[Statement]:
    return [(_INSERTS[i], p) for i, p in sql.rows_of(Callback(statuses=(event,)), received_at)]


def _alone(db: sqlite3.Connection, jobs: list[Sequence[Statement]]) -> list[None] | None:
    """A batch of ``status_feed`` rows only, committed by one statement (autocommit); None for
    any other batch (incoming messages, the heartbeat) or one over the variable limit."""
    rows: list[tuple[object, ...]] = []
    for statements in jobs:
        for insert, params in statements:
            if insert is not _FEED:
                return None
            rows.append(params)
    most = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(_FEED.columns)
    if not rows or len(rows) > most:
        return None
    db.execute(_feed_statement(len(rows)), list(itertools.chain.from_iterable(rows)))
    return [None] * len(jobs)


@functools.lru_cache(maxsize=256)
def _feed_statement(rows: int) -> str:
    return _FEED.statement(rows)


def _create(path: Path) -> _Writer:
    """The store's write connection (the file and its schema created if need be) and writer."""
    what = "the callback store"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = connect(path, what=what)
        try:
            apply_schema(db, migrations.CALLBACKS, SQLITE, where=str(path), upgrade=False)
            for statement in _feed_schema():
                db.execute(statement)
            return GroupCommitter(path, db, insert_rows, what=what, alone=_alone)
        except BaseException:
            db.close()
            raise
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open {what} {path}: {exc}") from None


class SqliteCallbackStore:
    """A :class:`~bulk_sender.stores.base.CallbackStore` in the SQLite file ``path``."""

    def __init__(self, path: Path, writer: _Writer) -> None:
        self.path = path
        self._writer = writer

    def __repr__(self) -> str:
        return f"SqliteCallbackStore({self._writer!r})"

    @classmethod
    async def open(cls, path: Path) -> SqliteCallbackStore:
        """Open (creating if needed) the store at ``path`` and start its writer; a schema of
        another version is refused (:mod:`.migrations`)."""
        writer = await asyncio.to_thread(_create, path)  # it may wait for another's commit
        writer.start(name="store-writer")
        return cls(path, writer)

    async def save(self, callback: Callback) -> None:
        """Commit the callback's rows; return once they are on disk."""
        await self._writer.submit_soon(_statements(callback, utc_now()))

    async def check_writable(self) -> None:
        """Commit a heartbeat through the same writer as the callbacks."""
        await self._writer.submit_soon([(_CHECKED, ("checked_at", utc_now()))])

    async def export_deliveries(
        self, *, journal: Path, since: str, into: Path, rows: tuple[int, int] | None = None
    ) -> None:
        """Run the merge against ``journal`` into ``into`` (in a thread)."""
        from bulk_sender.stores.sqlite_delivery import export

        await asyncio.to_thread(
            export, store=self.path, journal=journal, since=since, into=into, rows=rows
        )

    async def close(self) -> None:
        """Commit what is queued and close the file."""
        await self._writer.stop()
