"""A PostgreSQL server for the tests: one database per test run, one schema per store.

The server comes from ``BULK_SENDER_TEST_POSTGRES`` (a URL; default
``postgresql://postgres@127.0.0.1:5432/postgres``). :func:`start` creates a database of the
run's own (dropped by :meth:`PgServer.drop`), collated by ICU's ``en-US`` where the server
has ICU, so that a comparison that forgets ``COLLATE "C"`` orders differently and fails.
:meth:`PgServer.fresh_location` gives every store a schema of its own in it (a URL with
``?search_path=...``, which asyncpg passes on as a server setting): cheaper than a database
per test, and just as separate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

ENV: Final = "BULK_SENDER_TEST_POSTGRES"
DEFAULT: Final = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    """The server's URL the tests are given (any database on it)."""
    return os.environ.get(ENV, "").strip() or DEFAULT


def with_database(url: str, database: str) -> str:
    """``url`` naming the database ``database``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def execute(url: str, *statements: str) -> list[Any]:
    """Run ``statements`` on a connection of their own; the last one's rows."""
    import asyncpg

    connection = await asyncpg.connect(url, timeout=10)
    try:
        rows: list[Any] = []
        for statement in statements:
            rows = await connection.fetch(statement)
        return rows
    finally:
        await connection.close()


@dataclass
class PgServer:
    """The test run's own database on the test server."""

    admin_url: str  #: the server, as given (its own database: ``postgres``)
    database: str
    _schemas: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        """The run's database."""
        return with_database(self.admin_url, self.database)

    def fresh_location(self) -> str:
        """A store location nothing else uses: the run's database, in a new schema."""
        schema = f"s{next(self._schemas)}"
        asyncio.run(execute(self.url, f"CREATE SCHEMA {schema}"))
        return f"{self.url}?search_path={schema}"

    def run(self, *statements: str) -> list[Any]:
        """Run ``statements`` on the run's database; the last one's rows."""
        return asyncio.run(execute(self.url, *statements))

    @contextlib.contextmanager
    def scratch_database(self) -> Iterator[tuple[str, str]]:
        """A database of its own (name, URL), for a test that takes it away; dropped after."""
        name = f"{self.database}_{next(self._schemas)}"
        asyncio.run(execute(self.admin_url, f"CREATE DATABASE {name}"))
        try:
            yield name, with_database(self.admin_url, name)
        finally:
            asyncio.run(execute(self.admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def admin(self, *statements: str) -> list[Any]:
        """Run ``statements`` on the server's own database (the admin URL)."""
        return asyncio.run(execute(self.admin_url, *statements))

    def drop(self) -> None:
        """Drop the run's database (its connections are ended first)."""
        asyncio.run(
            execute(self.admin_url, f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
        )


def start() -> PgServer:
    """Create the run's database; raises if the server cannot be reached or asyncpg is absent."""
    admin = server_url()
    database = f"bulk_sender_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def create() -> None:
        try:
            await execute(
                admin,
                f"CREATE DATABASE {database} TEMPLATE template0 LOCALE_PROVIDER icu "
                "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
            )
        except Exception as exc:
            if "connect" in type(exc).__name__.lower() or isinstance(exc, OSError):
                raise
            await execute(admin, f"CREATE DATABASE {database}")  # no ICU on this server

    asyncio.run(create())
    return PgServer(admin, database)
