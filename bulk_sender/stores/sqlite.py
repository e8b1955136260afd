"""The callback store in one SQLite file (the default backend).

Writes go through a :class:`~.sqlite_writer.GroupCommitter` (its answerless case: each job is
rows to insert); the delivery export attaches the store and the campaign's journal to a local
output file and runs :mod:`.sql`'s merge there (:mod:`.sqlite_delivery`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bulk_sender.delivery.events import Callback
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
_Writer = GroupCommitter[Sequence[Statement], None]


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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = connect(path)
            try:
                apply_schema(db, migrations.CALLBACKS, SQLITE, where=str(path), upgrade=False)
            except BaseException:
                db.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the callback store {path}: {exc}") from None
        writer: _Writer = GroupCommitter(path, db, insert_rows, what="the store")
        writer.start(name="store-writer")
        return cls(path, writer)

    async def save(self, callback: Callback) -> None:
        """Commit the callback's rows; return once they are on disk."""
        received = utc_now()
        statements: list[Statement] = [
            (_INSERTS[index], params) for index, params in sql.rows_of(callback, received)
        ]
        await self._writer.submit_soon(statements)

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
