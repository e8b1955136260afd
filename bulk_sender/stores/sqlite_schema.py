"""Creating and migrating a store's schema in an SQLite file (see :mod:`.migrations`)."""

from __future__ import annotations

import sqlite3
from typing import TypeVar

from bulk_sender.errors import StoreError
from bulk_sender.stores.migrations import Applied, Schema, pending

__all__ = ["apply_schema"]

D = TypeVar("D")


def apply_schema(
    db: sqlite3.Connection, schema: Schema[D], dialect: D, *, where: str, upgrade: bool
) -> Applied:
    """Bring ``db`` (autocommit mode, no transaction open) to ``schema``'s latest version in
    one ``BEGIN IMMEDIATE`` transaction: create a missing schema, run the migrations an older
    one lacks if ``upgrade`` (else refuse it), refuse a newer one. sqlite3 errors propagate."""
    db.execute("BEGIN IMMEDIATE")
    try:
        found = _found(db, schema, where)
        todo = pending(schema, found, where=where, upgrade=upgrade)
        for migration in todo:
            for statement in migration.statements(dialect):
                db.execute(statement)
            db.execute(schema.version_upsert, (str(migration.version),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return Applied(None if found is None else int(found), schema.latest)


def _found(db: sqlite3.Connection, schema: Schema[D], where: str) -> str | None:
    """The stored version; None for a new file. A file with other tables is not ours."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if schema.meta_table not in tables:
        if tables:
            raise StoreError(
                f"{where} is an SQLite file but not a bulk-sender {schema.what} (it has other "
                f"tables); point {schema.config_key} at a file of its own"
            )
        return None
    row = db.execute(schema.version_query).fetchone()
    return None if row is None else str(row[0])
