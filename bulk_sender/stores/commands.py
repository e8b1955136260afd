"""The ``db upgrade`` subcommand: create or migrate the callback store and the ledger.

``bulk-sender db upgrade [--config PATH]`` brings every store the config names (the callback
store, if the config has ``[callbacks]`` or its default file exists; the audience ledger unless
``[audience] ledger`` is empty), SQLite files and PostgreSQL
databases alike, to this bulk-sender's schema version (:mod:`.migrations`), and prints for each
what it found and did. Exit codes: 0 done; 2 a config error; 3 a store that cannot be opened or
migrated (nothing of that store changed: each migrates in one transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from bulk_sender.config import CallbacksSettings, load_settings
from bulk_sender.errors import ExitCode, StoreError
from bulk_sender.stores import migrations
from bulk_sender.stores.locations import is_postgres, shown
from bulk_sender.stores.migrations import Applied, Schema

__all__ = ["add_parser", "run", "upgrade_store"]

D = TypeVar("D")
#: A store's dialects: SQLite's, PostgreSQL's.
Dialects = tuple[D, D]


def add_parser(commands: Any) -> None:
    """Add ``db`` (with ``upgrade``) to the CLI's subparsers."""
    db = commands.add_parser("db", help="create or upgrade the callback store and the ledger")
    actions = db.add_subparsers(dest="db_command", required=True)
    up = actions.add_parser("upgrade", help="bring both stores to this version's schema")
    up.add_argument(
        "--config", type=Path, default=Path("config.toml"), help="default: ./config.toml"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``db upgrade``: print one line per store."""
    from bulk_sender.stores import postgres, sqlite, sqlite_ledger

    settings = load_settings(args.config)
    callbacks = settings.callbacks or CallbacksSettings.beside(args.config)
    targets: list[tuple[str, Schema[Any], Dialects[Any]]] = []
    if settings.callbacks is not None or Path(callbacks.store).exists():
        dialects = (sqlite.SQLITE, postgres.CALLBACKS)
        targets.append((callbacks.location(), migrations.CALLBACKS, dialects))
    if settings.audience.enabled:
        ledger = (sqlite_ledger.SQLITE, postgres.LEDGER)
        targets.append((settings.audience.ledger_location(), migrations.LEDGER, ledger))
    if not targets:
        print("no store to upgrade: the config has no [callbacks] and [audience] ledger is off")
    for location, schema, pair in targets:
        applied = asyncio.run(upgrade_store(location, schema, pair, upgrade=True))
        print(f"{schema.what} {shown(location)}: {applied.describe()}", flush=True)
    return ExitCode.OK


async def upgrade_store(
    location: str, schema: Schema[D], dialects: Dialects[D], *, upgrade: bool
) -> Applied:
    """Create or (``upgrade``) migrate the store of ``schema`` at ``location``, whose SQLite
    and PostgreSQL dialects are ``dialects``."""
    if is_postgres(location):
        from bulk_sender.stores import postgres

        pool = await postgres.connect_pool(location, doing=f"open the {schema.what}", max_size=1)
        try:
            return await postgres.ensure_schema(
                pool, location, schema, dialects[1], upgrade=upgrade
            )
        finally:
            await pool.close()
    return await asyncio.to_thread(_upgrade_sqlite, Path(location), schema, dialects[0], upgrade)


def _upgrade_sqlite(path: Path, schema: Schema[D], dialect: D, upgrade: bool) -> Applied:
    from bulk_sender.stores.sqlite_schema import apply_schema
    from bulk_sender.stores.sqlite_writer import connect

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(connect(path, what=f"the {schema.what}")) as db:
            return apply_schema(db, schema, dialect, where=str(path), upgrade=upgrade)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the {schema.what} {path}: {exc}") from None
