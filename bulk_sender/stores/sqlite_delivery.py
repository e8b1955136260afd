"""The merge's local output: one SQLite file with every matched message's delivery state.

:func:`export` attaches a campaign's journal (``j``) and a SQLite callback store (``cb``) to a
fresh output file (``out``) and runs :mod:`.sql`'s merge: the match by message id in one
ordered pass over the journal, then the fallback by recipient and refs for the accepted
messages still unmatched. :class:`DeliveryRows` reads the result back in (row, part) order,
which is the results file's order, so the report streams both side by side in constant memory.
Any backend's export writes this same table.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Generator
from pathlib import Path
from typing import Final, NamedTuple

from bulk_sender.delivery.events import FAILURES, RANK
from bulk_sender.errors import StoreError
from bulk_sender.stores import sql
from bulk_sender.stores.sqlite import SQLITE

__all__ = ["OUTPUT_SCHEMA", "DeliveryRow", "DeliveryRows", "create_output", "export"]

OUTPUT_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS out.delivery (
    row INTEGER NOT NULL,
    part INTEGER NOT NULL,
    status_rank INTEGER NOT NULL,
    delivered_at TEXT,
    read_at TEXT,
    updated_at TEXT,
    failed TEXT,
    not_sent TEXT,
    last_incoming TEXT,
    PRIMARY KEY (row, part)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS out.candidates (
    row INTEGER NOT NULL, part INTEGER NOT NULL, "to" TEXT NOT NULL, ref TEXT NOT NULL,
    ref1 TEXT NOT NULL, ref2 TEXT NOT NULL, event_key INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS out.candidate_keys (
    "to" TEXT NOT NULL, ref TEXT NOT NULL, ref1 TEXT NOT NULL, ref2 TEXT NOT NULL,
    messages INTEGER NOT NULL, PRIMARY KEY ("to", ref, ref1, ref2)
) WITHOUT ROWID;
"""
_CACHE_KIB: Final = 65_536
_FAILED_RANKS: Final = ", ".join(str(RANK[s]) for s in sorted(FAILURES))


def create_output(into: Path) -> sqlite3.Connection:
    """A connection with a fresh output file attached as ``out`` (a scratch file: no rollback
    journal, no fsync), holding its tables."""
    into.unlink(missing_ok=True)
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("ATTACH DATABASE ? AS out", (str(into),))
    db.execute("PRAGMA out.journal_mode=OFF")
    db.execute("PRAGMA out.synchronous=OFF")
    db.execute(f"PRAGMA out.cache_size=-{_CACHE_KIB}")
    db.executescript(OUTPUT_SCHEMA)
    return db


def export(
    *, store: Path, journal: Path, since: str, into: Path, rows: tuple[int, int] | None = None
) -> None:
    """Compute the delivery state of the journal's messages of data rows ``rows`` (first and
    last, inclusive; every row when None) into ``into`` (see the module docstring)."""
    first, last = rows if rows is not None else (0, 2**62)
    try:
        with contextlib.closing(_attached(store, journal, into)) as db:
            db.execute("BEGIN")
            db.execute(sql.match_by_id(SQLITE), (first, last))
            db.execute(sql.fallback_candidates(SQLITE), (since, first, last))
            if db.execute("SELECT 1 FROM out.candidates LIMIT 1").fetchone():
                db.execute(sql.candidate_keys())
                db.execute(sql.match_by_recipient())
            db.execute(sql.last_incoming())
            db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot merge the callbacks of {store} with {journal}: {exc}") from None


def _attached(store: Path, journal: Path, into: Path) -> sqlite3.Connection:
    """The output file as ``out``, with the journal as ``j`` and the store as ``cb``."""
    db = create_output(into)
    db.execute("ATTACH DATABASE ? AS j", (str(journal),))
    db.execute("ATTACH DATABASE ? AS cb", (str(store),))
    for schema in ("j", "cb"):
        db.execute(f"PRAGMA {schema}.cache_size=-{_CACHE_KIB}")
    return db


class DeliveryRow(NamedTuple):
    """One matched message's state as the merge left it (see :mod:`.sql`); a named tuple, as
    a million of them are read per report."""

    row: int
    part: int
    status_rank: int
    delivered_at: str | None
    read_at: str | None
    updated_at: str | None
    failed: str | None
    not_sent: str | None
    last_incoming: str | None


class DeliveryRows:
    """Reads an output file's ``delivery`` table in (row, part) order."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stream(self, *, failed_only: bool = False) -> Generator[DeliveryRow, None, None]:
        """The rows in (row, part) order (only failures, with ``failed_only``); close it when
        done early."""
        columns = ", ".join(("row", "part", *sql.STATE_COLUMNS, "last_incoming"))
        where = f" WHERE status_rank IN ({_FAILED_RANKS})" if failed_only else ""
        query = f"SELECT {columns} FROM delivery{where} ORDER BY row, part"
        make = DeliveryRow._make
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            for values in db.execute(query):
                yield make(values)
