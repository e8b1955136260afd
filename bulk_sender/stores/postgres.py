"""PostgreSQL: its locations, its driver (asyncpg, optional), connecting, and its errors.

Both stores may live on a PostgreSQL server: ``[callbacks] store`` and ``[audience] ledger``
take a ``postgresql://`` (or ``postgres://``) URL besides a path. What every PostgreSQL
backend shares is here:

* :func:`is_postgres`, :func:`redacted` (a URL fit to print: never its password);
* :func:`driver`: asyncpg, imported only when a URL is used (``pip install
  'bulk-sender[postgres]'``; the default install does not need it);
* :func:`connect_pool` and :func:`store_error`: the one boundary where asyncpg's exceptions
  become :class:`StoreError`, one line, without the password (asyncpg's own messages may carry
  the DSN, so none is passed on unfiltered);
* :func:`numbered`: the neutral SQL's ``?`` placeholders as asyncpg's ``$1, $2, ...``;
* :data:`CALLBACKS` and :data:`LEDGER`, the dialects of :mod:`.sql` and :mod:`.ledger_sql`;
* :func:`apply_schema`: :mod:`.migrations` on PostgreSQL, under an advisory lock.

A password never comes from the config file (:mod:`bulk_sender.config` refuses it there): it
comes with a URL from the environment (``store_env``/``ledger_env``), or from libpq's own
``PGPASSWORD`` and ``~/.pgpass``, which asyncpg reads itself. Query parameters of the URL that
are not connection options are server settings (``?search_path=acme`` keeps a store's tables
in the schema ``acme``).
"""

from __future__ import annotations

import functools
import re
from types import ModuleType
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from bulk_sender.errors import StoreError
from bulk_sender.stores import ledger_sql, sql
from bulk_sender.stores.locations import has_password, is_postgres, redacted
from bulk_sender.stores.migrations import Applied, Schema, pending

__all__ = [
    "CALLBACKS",
    "INSTALL_HINT",
    "LEDGER",
    "apply_schema",
    "connect_pool",
    "driver",
    "has_password",
    "is_postgres",
    "numbered",
    "redacted",
    "store_error",
]

INSTALL_HINT: Final = "pip install 'bulk-sender[postgres]'"
#: Seconds to wait for a connection: a server that is away must make the receiver answer 503
#: soon (Kaleyra retries), not hold every request for asyncpg's default minute.
CONNECT_TIMEOUT: Final = 5.0

_IDENTITY: Final = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
#: The callback store's words: text that is ordered is ``COLLATE "C"`` (bytewise, as SQLite
#: and precedence.py order it, whatever the database's own collation).
CALLBACKS: Final = sql.Dialect(
    key_type="BIGINT",
    serial_key=_IDENTITY,
    without_rowid="",
    mark="?",
    ordered_text='TEXT COLLATE "C"',
)
#: The ledger's words (``?`` too: statements go through :func:`numbered`). ``lock_recipients``
#: takes one parameter, the batch's recipients as a ``bigint[]``.
LEDGER: Final = ledger_sql.LedgerDialect(
    key_type="BIGINT",
    serial_key=_IDENTITY,
    without_rowid="",
    mark="?",
    greatest="GREATEST",
    group_concat="string_agg",
    lock_recipients="SELECT pg_advisory_xact_lock(r) FROM unnest(?::bigint[]) AS r ORDER BY r",
    arrays=True,
)

D = TypeVar("D")


def numbered(statement: str) -> str:
    """``statement`` with each ``?`` placeholder outside quotes numbered ``$1``, ``$2``, ...
    (asyncpg's style); cached, as the stores build a few statements many times."""
    return _numbered(statement)


_TOKEN: Final = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?")


@functools.lru_cache(maxsize=1024)
def _numbered(statement: str) -> str:
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group() != "?":
            return match.group()
        count += 1
        return f"${count}"

    return _TOKEN.sub(number, statement)


def driver() -> ModuleType:
    """The asyncpg module; :class:`StoreError` naming the extra when it is not installed."""
    try:
        import asyncpg
    except ImportError:
        raise StoreError(
            f"a postgresql:// store needs the PostgreSQL driver: {INSTALL_HINT}"
        ) from None
    module: ModuleType = asyncpg
    return module


def _one_line(text: str, url: str) -> str:
    """``text`` on one line, with the URL and its password (if any) hidden."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if url:
        text = text.replace(url, redacted(url))
    if password:
        text = text.replace(password, "***")
    return " ".join(text.split())


def store_error(exc: BaseException, *, url: str, doing: str) -> StoreError:
    """One :class:`StoreError` line for a driver or network error while ``doing`` something
    (``"open the callback store"``) with the store at ``url``. Never the password."""
    where = redacted(url)
    asyncpg = driver()
    errors = asyncpg.exceptions
    reason = _one_line(str(exc) or type(exc).__name__, url)
    if isinstance(exc, errors.InvalidCatalogNameError):
        return StoreError(f"cannot {doing} {where}: the database does not exist ({reason})")
    if isinstance(exc, errors.InvalidAuthorizationSpecificationError):
        return StoreError(
            f"cannot {doing} {where}: PostgreSQL refused the login ({reason}); check the user "
            "and its password (PGPASSWORD, ~/.pgpass, or the URL in store_env/ledger_env)"
        )
    if isinstance(exc, errors.ClientConfigurationError | ValueError):
        return StoreError(f"cannot {doing} {where}: not a usable PostgreSQL URL ({reason})")
    if isinstance(exc, OSError | TimeoutError | errors.PostgresConnectionError):
        return StoreError(f"cannot {doing} {where}: the server cannot be reached ({reason})")
    if isinstance(exc, errors.InterfaceError | errors.InternalClientError):
        return StoreError(f"cannot {doing} {where}: the connection was lost ({reason})")
    if isinstance(exc, errors.PostgresError):
        code = getattr(exc, "sqlstate", "") or ""
        return StoreError(f"cannot {doing} {where}: PostgreSQL error {code}: {reason}")
    return StoreError(f"cannot {doing} {where}: {type(exc).__name__}: {reason}")


def driver_errors() -> tuple[type[BaseException], ...]:
    """What :func:`store_error` translates: the driver's errors, the network's, timeouts."""
    asyncpg = driver()
    errors = asyncpg.exceptions
    return (
        errors.PostgresError, errors.InterfaceError, errors.InternalClientError, OSError,
        TimeoutError, ValueError,
    )  # fmt: skip


async def connect_pool(url: str, *, doing: str, min_size: int = 1, max_size: int = 4) -> Any:
    """An ``asyncpg`` pool for ``url`` (its first connection made, so a wrong URL, an
    unreachable server, a refused login or a missing database is one :class:`StoreError`)."""
    asyncpg = driver()
    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT,
            # The pool reconnects after a server restart; no statement may outlive a minute.
            command_timeout=60,
        )
    except driver_errors() as exc:
        raise store_error(exc, url=url, doing=doing) from None


async def apply_schema(
    connection: Any, schema: Schema[D], dialect: D, *, where: str, upgrade: bool
) -> Applied:
    """:mod:`.migrations` on PostgreSQL: in one transaction, holding an advisory lock (so that
    hosts opening the same store at once create it once), create a missing schema, migrate an
    older one if ``upgrade`` (else refuse it), refuse a newer one. Driver errors propagate."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", schema.meta_table)
        found: str | None = None
        if await connection.fetchval("SELECT to_regclass($1)", schema.meta_table) is not None:
            found = await connection.fetchval(schema.version_query)
        todo = pending(schema, found, where=where, upgrade=upgrade)
        for migration in todo:
            for statement in migration.statements(dialect):
                await connection.execute(statement)
            await connection.execute(numbered(schema.version_upsert), str(migration.version))
    return Applied(None if found is None else int(found), schema.latest)


async def ensure_schema(
    pool: Any, url: str, schema: Schema[D], dialect: D, *, upgrade: bool
) -> Applied:
    """:func:`apply_schema` on a connection of ``pool``, its errors as :class:`StoreError`."""
    try:
        async with pool.acquire() as connection:
            return await apply_schema(
                connection, schema, dialect, where=redacted(url), upgrade=upgrade
            )
    except driver_errors() as exc:
        raise store_error(exc, url=url, doing=f"open the {schema.what}") from None
