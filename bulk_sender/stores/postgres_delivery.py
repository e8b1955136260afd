"""The delivery export from a PostgreSQL callback store: fetch what a journal needs, merge
locally.

The campaign's journal is a local SQLite file and the merge's output must be one too
(:mod:`.sqlite_delivery`), so rather than ship the journal to the server, :func:`export` sends
the server only the slice's message ids and recipients (``COPY`` into temporary tables), takes
back the rows of the store that can matter to them (each id's events; events for those
recipients received since the campaign began; their customers' messages) into a local mirror
of the store's tables, and runs the very merge the SQLite backend runs on it. Both backends
therefore compute the same states by the same SQL; the server does one indexed join per table.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any, Final

from bulk_sender.stores import sql
from bulk_sender.stores.postgres import driver_errors, numbered, store_error
from bulk_sender.stores.sqlite import SQLITE
from bulk_sender.stores.sqlite_delivery import export as export_locally

__all__ = ["export"]

_FETCH: Final = 10_000
_EVENTS: Final = (
    "event_key", "received_at", "status", "status_rank", "event_at", "recipient", "ref",
    "ref1", "ref2", "code", "title", "detail", "failure_key",
)  # fmt: skip
_IDS: Final = ("message_id", "event_key", "status_rank", "event_at", "failure_key")
_INCOMING: Final = ("message_id", "sender", "sent_at", "received_at", "type", "body")
#: (table, columns, the rows of the store a slice needs; parameter: the campaign's start)
_COPIES: Final = (
    ("status_ids", _IDS, "FROM status_ids t JOIN pg_temp.j_ids j ON j.id = t.message_id"),
    (
        "status_events",
        _EVENTS,
        "FROM status_events t JOIN pg_temp.j_to j ON j.recipient = t.recipient"
        " WHERE t.received_at >= ?",
    ),
    ("incoming_messages", _INCOMING, "FROM incoming_messages t JOIN pg_temp.j_to j"
     " ON j.recipient = t.sender"),
)  # fmt: skip


async def export(
    pool: Any, url: str, *, journal: Path, since: str, into: Path, rows: tuple[int, int] | None
) -> None:
    """The delivery state of ``journal``'s messages (data rows ``rows``) into ``into``."""
    first, last = rows if rows is not None else (0, 2**62)
    ids, recipients = await asyncio.to_thread(_journal_keys, journal, first, last)
    mirror = into.with_name(into.name + ".store")
    try:
        db = await asyncio.to_thread(_create_mirror, mirror)
        try:
            await _fetch(pool, url, db, ids=ids, recipients=recipients, since=since)
        finally:
            db.close()
        await asyncio.to_thread(
            export_locally, store=mirror, journal=journal, since=since, into=into, rows=rows
        )
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            mirror.with_name(mirror.name + suffix).unlink(missing_ok=True)


def _journal_keys(journal: Path, first: int, last: int) -> tuple[list[str], list[str]]:
    """The slice's message ids, and its recipients as callbacks write them (no ``+``)."""
    uri = f"{journal.resolve().as_uri()}?mode=ro"
    span = (first, last)
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        ids = db.execute(
            "SELECT DISTINCT message_id FROM messages"
            " WHERE row BETWEEN ? AND ? AND message_id <> ''",
            span,
        ).fetchall()
        recipients = db.execute(
            'SELECT DISTINCT substr("to", 2) FROM messages WHERE row BETWEEN ? AND ?', span
        ).fetchall()
    return [i for (i,) in ids], [r for (r,) in recipients]


def _create_mirror(path: Path) -> sqlite3.Connection:
    """A scratch SQLite file with the store's tables (no journal, no fsync)."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    for statement in sql.schema(SQLITE):
        db.execute(statement)
    return db


async def _fetch(
    pool: Any, url: str, db: sqlite3.Connection, *, ids: list[str], recipients: list[str],
    since: str,
) -> None:  # fmt: skip
    """Copy the store's rows the slice needs into the mirror ``db``."""
    try:
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(
                'CREATE TEMPORARY TABLE j_ids (id TEXT COLLATE "C") ON COMMIT DROP;'
                ' CREATE TEMPORARY TABLE j_to (recipient TEXT COLLATE "C") ON COMMIT DROP'
            )
            await connection.copy_records_to_table("j_ids", records=[(i,) for i in ids])
            await connection.copy_records_to_table("j_to", records=[(r,) for r in recipients])
            await connection.execute("ANALYZE pg_temp.j_ids; ANALYZE pg_temp.j_to")
            for table, columns, source in _COPIES:
                names = ", ".join(f"t.{c}" for c in columns)
                query = numbered(f"SELECT {names} {source}")
                args = (since,) if "?" in source else ()
                insert = (
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})"
                )
                cursor = await connection.cursor(query, *args)
                while chunk := await cursor.fetch(_FETCH):
                    db.executemany(insert, [tuple(record) for record in chunk])
    except driver_errors() as exc:
        raise store_error(exc, url=url, doing="read the callback store") from None
