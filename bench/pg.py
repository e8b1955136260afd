"""The benchmark's PostgreSQL server: found once, a fresh database per run, dropped after.

``BULK_SENDER_BENCH_POSTGRES`` names the server (default the local one); without one (or without
the driver) the PostgreSQL rows are skipped with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

from harness import progress

__all__ = ["PG_ENV", "pg_database", "pg_server"]

PG_ENV = "BULK_SENDER_BENCH_POSTGRES"


def pg_server() -> str | None:
    """The PostgreSQL server to measure against (``BULK_SENDER_BENCH_POSTGRES``, default the
    local one), if one answers; else None, with a note."""
    url = os.environ.get(PG_ENV, "").strip() or "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        asyncio.run(_pg_execute(url, "SELECT 1"))
    except Exception as exc:  # the bench goes on without PostgreSQL rows
        progress(f"PostgreSQL: skipped ({type(exc).__name__})")
        return None
    return url


async def _pg_execute(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def pg_database(server: str, name: str) -> Iterator[str]:
    """A fresh database ``name`` on ``server`` for one run, dropped after: its URL."""
    from urllib.parse import urlsplit, urlunsplit

    asyncio.run(_pg_execute(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    asyncio.run(_pg_execute(server, f"CREATE DATABASE {name}"))
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        asyncio.run(_pg_execute(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
