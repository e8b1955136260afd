"""Schema versions on both backends: ``db upgrade`` creates and migrates, an open refuses an
older schema (naming the command) and a newer one."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bulk_sender.errors import StoreError
from bulk_sender.stores import migrations
from bulk_sender.stores.base import open_callback_store
from bulk_sender.stores.locations import is_postgres
from bulk_sender.stores.migrations import Migration, SchemaState, state_of
from bulk_sender.stores.sql import Dialect
from tests.conftest import CliRunner, LocationFactory, write_config
from tests.postgres import execute


def _run(location: str, *statements: str) -> list[tuple[object, ...]]:
    """Run SQL in the store at ``location``; the last statement's rows."""
    if is_postgres(location):
        return [tuple(row) for row in asyncio.run(execute(location, *statements))]
    with closing(sqlite3.connect(location)) as db:
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            rows = db.execute(statement).fetchall()
        db.commit()
        return rows


def _open(location: str) -> None:
    """Open (and close) the callback store as ``receive`` does."""

    async def run() -> None:
        await (await open_callback_store(location)).close()

    asyncio.run(run())


def _config(tmp_path: Path, store: str, ledger: str) -> Path:
    return write_config(
        tmp_path / "config.toml", "http://127.0.0.1:9", callbacks={"store": store},
        audience={"ledger": ledger},
    )  # fmt: skip


def test_the_schema_state_is_a_pure_decision() -> None:
    """No row, the same, an older, a newer or an unreadable version."""
    schema = migrations.CALLBACKS
    assert state_of(schema, None) is SchemaState.MISSING
    assert state_of(schema, str(schema.latest)) is SchemaState.CURRENT
    assert state_of(schema, str(schema.latest + 1)) is SchemaState.NEWER
    assert state_of(schema, "two") is SchemaState.NEWER
    assert state_of(schema, "0") is SchemaState.NEWER


def test_db_upgrade_creates_both_stores_then_finds_them_current(
    cli: CliRunner, tmp_path: Path, new_location: LocationFactory
) -> None:
    """A first run creates the callback store and the ledger; a second changes nothing."""
    store, ledger = new_location(), new_location()
    config = _config(tmp_path, store, ledger)
    first = cli("db", "upgrade", "--config", config)
    assert first.code == 0, first.err
    assert f"callback store {store}: created at version 1" in first.out
    assert f"audience ledger {ledger}: created at version 1" in first.out
    again = cli("db", "upgrade", "--config", config)
    assert again.out.count("already at version 1") == 2
    assert _run(store, "SELECT value FROM store_meta WHERE key = 'schema'") == [("1",)]
    assert _run(ledger, "SELECT value FROM ledger_meta WHERE key = 'schema'") == [("1",)]


def test_an_older_schema_is_refused_at_open_and_upgraded_by_the_command(
    cli: CliRunner, tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store at version 1 under a bulk-sender at 2: refused at open, naming `db upgrade`;
    `db upgrade` runs the migration, and the store opens."""
    _open(backend)
    assert _run(backend, "SELECT value FROM store_meta WHERE key = 'schema'") == [("1",)]
    with monkeypatch.context() as patched:
        v2: Migration[Dialect] = Migration(
            2, "more", lambda d: ["CREATE TABLE IF NOT EXISTS more_v2 (x INTEGER)"]
        )
        patched.setattr(
            migrations,
            "CALLBACKS",
            dataclasses.replace(
                migrations.CALLBACKS, migrations=(*migrations.CALLBACKS.migrations, v2)
            ),
        )
        with pytest.raises(StoreError) as caught:
            _open(backend)
        assert "older" in str(caught.value)
        assert "bulk-sender db upgrade --config" in str(caught.value)
        done = cli("db", "upgrade", "--config", _config(tmp_path, backend, ""))
        assert done.code == 0, done.err
        assert "upgraded from version 1 to 2" in done.out
        _open(backend)
        assert _run(backend, "SELECT COUNT(*) FROM more_v2") == [(0,)]


def test_a_newer_schema_is_refused_by_open_and_by_db_upgrade(
    cli: CliRunner, tmp_path: Path, backend: str
) -> None:
    """A store a later bulk-sender made: both refuse it, saying to upgrade bulk-sender."""
    _open(backend)
    _run(backend, "UPDATE store_meta SET value = '7' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="newer than this bulk-sender"):
        _open(backend)
    refused = cli("db", "upgrade", "--config", _config(tmp_path, backend, ""))
    assert refused.code == 3
    assert "newer than this bulk-sender" in refused.err


def test_an_sqlite_file_of_something_else_is_refused(tmp_path: Path) -> None:
    """A file with other tables is not taken over as a callback store."""
    other = tmp_path / "other.db"
    _run(str(other), "CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="not a bulk-sender callback store"):
        _open(str(other))


def test_without_callbacks_section_db_upgrade_creates_no_callback_store(
    cli: CliRunner, tmp_path: Path
) -> None:
    """No [callbacks] and no ledger: nothing to do, and no callbacks.db appears."""
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:9", audience={"ledger": ""})
    run = cli("db", "upgrade", "--config", config)
    assert (run.code, "no store to upgrade" in run.out) == (0, True)
    assert not (tmp_path / "callbacks.db").exists()
