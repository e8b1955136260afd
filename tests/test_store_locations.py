"""Store locations: PostgreSQL URLs beside paths, passwords kept out of the config and out of
every message, the optional driver, and its errors as one line each."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from bulk_sender.config import AudienceSettings, CallbacksSettings
from bulk_sender.errors import ConfigError, StoreError
from bulk_sender.stores import postgres
from bulk_sender.stores.locations import has_password, is_postgres, redacted, shown
from tests.postgres import PgServer, with_database

PASSWORD = "s3cr3t-pa55"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("postgresql://u@h/db", True),
        ("POSTGRES://h/db", True),
        ("/srv/callbacks.db", False),
        ("mysql://h/db", False),
        ("postgresql.db", False),
    ],
)
def test_a_postgres_location_is_told_by_its_scheme(location: str, expected: bool) -> None:
    """postgresql:// and postgres:// (any case) are PostgreSQL; paths and other schemes not."""
    assert is_postgres(location) is expected


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{PASSWORD}@db.internal:5432/bulk",
        f"postgresql://app@db.internal/bulk?password={PASSWORD}&sslmode=require",
        f"postgres://app:{PASSWORD}@h1:5432,h2:5433/bulk",
    ],
)
def test_redacted_hides_the_password_wherever_the_url_has_it(url: str) -> None:
    """User-info and ?password= passwords become ***; the rest stays readable."""
    assert has_password(url)
    assert PASSWORD not in redacted(url)
    assert "***" in redacted(url)
    assert "app" in redacted(url)
    assert shown(url) == redacted(url)


def test_a_url_without_a_password_and_a_path_are_shown_as_they_are() -> None:
    """Nothing to hide: the location is printed unchanged."""
    assert not has_password("postgresql://app@h/db?sslmode=require")
    assert (
        redacted("postgresql://app@h/db?sslmode=require") == "postgresql://app@h/db?sslmode=require"
    )
    assert shown("/srv/a b/callbacks.db") == "/srv/a b/callbacks.db"


def test_placeholders_are_numbered_outside_quotes_only() -> None:
    """Each ? becomes $1, $2...; a ? inside a string or a quoted name stays."""
    statement = """SELECT '?', "a?b", x FROM t WHERE a = ? AND b = 'it''s ?' AND c IN (?, ?)"""
    assert postgres.numbered(statement) == (
        """SELECT '?', "a?b", x FROM t WHERE a = $1 AND b = 'it''s ?' AND c IN ($2, $3)"""
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda url: CallbacksSettings(store=url),
        lambda url: AudienceSettings(ledger=url),
    ],
    ids=["store", "ledger"],
)
def test_a_password_in_the_config_file_is_refused_without_repeating_it(make: object) -> None:
    """A URL with a password in the file: a ConfigError that points at the environment."""
    with pytest.raises(ConfigError) as caught:
        make(f"postgresql://app:{PASSWORD}@h/db")  # type: ignore[operator]
    message = str(caught.value)
    assert PASSWORD not in message
    assert "_env" in message
    assert "PGPASSWORD" in message


def test_store_env_and_ledger_env_win_over_the_file() -> None:
    """The URL (password and all) comes from the variables the config names."""
    url = f"postgresql://app:{PASSWORD}@h/db"
    environ = {"CB_URL": url, "LEDGER_URL": url + "2"}
    callbacks = CallbacksSettings(store="/x/callbacks.db", store_env="CB_URL")
    audience = AudienceSettings(ledger="", ledger_env="LEDGER_URL")
    assert callbacks.location(environ) == url
    assert audience.enabled
    assert audience.ledger_location(environ) == url + "2"
    assert CallbacksSettings(store="/x/callbacks.db").location(environ) == "/x/callbacks.db"
    assert PASSWORD not in repr(callbacks) + repr(audience)


def test_an_unset_store_env_is_a_config_error_naming_the_variable() -> None:
    """store_env naming an empty or missing variable: one line naming it."""
    callbacks = CallbacksSettings(store_env="CB_URL")
    with pytest.raises(ConfigError, match="CB_URL is not set"):
        callbacks.location({})
    with pytest.raises(ConfigError, match="environment variable"):
        CallbacksSettings(store_env="not a name")


def test_a_missing_driver_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without asyncpg, a postgresql:// store says how to install it."""
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(StoreError) as caught:
        postgres.driver()
    assert "pip install 'bulk-sender[postgres]'" in str(caught.value)


def _open_error(url: str) -> str:
    async def run() -> None:
        pool = await postgres.connect_pool(url, doing="open the callback store")
        await pool.close()

    with pytest.raises(StoreError) as caught:
        asyncio.run(run())
    message = str(caught.value)
    assert "\n" not in message
    assert PASSWORD not in message
    return message


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    """A closed port: 'cannot be reached', the URL shown redacted."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = _open_error(f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/db")
    assert "cannot be reached" in message
    assert f"app:***@127.0.0.1:{port}/db" in message


def test_a_missing_database_and_a_refused_login_are_one_line_each(pg_server: PgServer) -> None:
    """The database does not exist / the role is refused: said plainly, never the password."""
    url = with_database(pg_server.admin_url, "no_such_database_here")
    assert "the database does not exist" in _open_error(url)
    nobody = pg_server.admin_url.replace("postgres@", f"nobody_here:{PASSWORD}@", 1)
    assert "refused the login" in _open_error(nobody)
