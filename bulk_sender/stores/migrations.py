"""Schema versions: each store's ordered migrations, and the pure decision of which to run.

Every store keeps its layout's version in its own meta table (``store_meta`` for the callback
store, ``ledger_meta`` for the ledger; key ``schema``, the number as text). Version 1 is the
layout the store first shipped with. A newer bulk-sender that changes a layout appends a
:class:`Migration`; ``bulk-sender db upgrade`` runs the ones a store lacks, in one transaction
under the store's own lock (:mod:`.sqlite_schema`, :func:`.postgres.apply_schema`).

What an open does (:func:`pending`):

* no schema yet: create it at the latest version (SQLite files have always been created on
  open; a PostgreSQL database is created in too, under an advisory lock);
* the latest version: nothing;
* an older version: refused with :class:`StoreError` naming ``bulk-sender db upgrade``; an
  older schema is never migrated silently, since other hosts' older bulk-senders may still
  be using it;
* a newer version (or one this bulk-sender cannot read): refused.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, NamedTuple, TypeVar

from bulk_sender.errors import StoreError
from bulk_sender.model import utc_now
from bulk_sender.stores import ledger_sql, sql

__all__ = [
    "CALLBACKS",
    "LEDGER",
    "UPGRADE_COMMAND",
    "Applied",
    "Migration",
    "Schema",
    "SchemaState",
    "pending",
    "state_of",
]

D = TypeVar("D")

#: The command that migrates every store a config names.
UPGRADE_COMMAND: Final = "bulk-sender db upgrade --config CONFIG"


@dataclass(frozen=True, slots=True)
class Migration(Generic[D]):
    """The statements that take a store from ``version - 1`` to ``version`` (idempotent DDL)."""

    version: int
    summary: str
    statements: Callable[[D], list[str]]


@dataclass(frozen=True, slots=True)
class Schema(Generic[D]):
    """One store's layout: what it is called, its meta table and its migrations, in order."""

    what: str  #: "callback store", "audience ledger"
    config_key: str  #: where the config names it
    meta_table: str
    migrations: tuple[Migration[D], ...]

    def __post_init__(self) -> None:
        versions = [m.version for m in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{self.what}: migrations must be numbered 1, 2, ... in order")

    @property
    def latest(self) -> int:
        """The version this bulk-sender reads and writes."""
        return len(self.migrations)

    @property
    def version_query(self) -> str:
        """The stored version (no row: no schema)."""
        return f"SELECT value FROM {self.meta_table} WHERE key = 'schema'"

    @property
    def version_upsert(self) -> str:
        """Record the version (one parameter, ``?``)."""
        return (
            f"INSERT INTO {self.meta_table} (key, value) VALUES ('schema', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )


class SchemaState(enum.StrEnum):
    """Where a store's schema stands against this bulk-sender's."""

    MISSING = "missing"
    CURRENT = "current"
    OLDER = "older"
    NEWER = "newer"


class Applied(NamedTuple):
    """What an open or an upgrade found and left: versions (None: there was no schema)."""

    found: int | None
    now: int

    def describe(self) -> str:
        """``created at version 1``, ``already at version 1``, ``upgraded from 1 to 2``."""
        if self.found is None:
            return f"created at version {self.now}"
        if self.found == self.now:
            return f"already at version {self.now}"
        return f"upgraded from version {self.found} to {self.now}"


def _version(found: str | None) -> int | None:
    if found is None:
        return None
    return int(found) if found.isdigit() else -1


def state_of(schema: Schema[D], found: str | None) -> SchemaState:
    """Where the stored version ``found`` (None: no schema) stands against ``schema``'s."""
    version = _version(found)
    if version is None:
        return SchemaState.MISSING
    if version == schema.latest:
        return SchemaState.CURRENT
    if 1 <= version < schema.latest:
        return SchemaState.OLDER
    return SchemaState.NEWER


def pending(
    schema: Schema[D], found: str | None, *, where: str, upgrade: bool
) -> list[Migration[D]]:
    """The migrations to run on a store whose stored version is ``found``; raises
    :class:`StoreError` for a newer schema, and for an older one unless ``upgrade``.
    ``where`` names the store in messages (a path, or a URL without its password)."""
    state = state_of(schema, found)
    if state is SchemaState.NEWER:
        raise StoreError(
            f"the {schema.what} {where} has schema version {found}, newer than this "
            f"bulk-sender's ({schema.latest}); upgrade bulk-sender on this host"
        )
    if state is SchemaState.OLDER and not upgrade:
        raise StoreError(
            f"the {schema.what} {where} has schema version {found}, older than this "
            f"bulk-sender's ({schema.latest}); back it up, then run `{UPGRADE_COMMAND}` "
            "(every host using it needs this bulk-sender afterwards)"
        )
    start = _version(found) or 0
    return [m for m in schema.migrations if m.version > start]


def _ledger_v1(d: ledger_sql.LedgerDialect) -> list[str]:
    return [
        *ledger_sql.schema(d),
        "INSERT INTO ledger_meta (key, value) VALUES ('created_at', "
        f"'{utc_now()}') ON CONFLICT (key) DO NOTHING",
    ]


CALLBACKS: Schema[sql.Dialect] = Schema(
    what="callback store",
    config_key="[callbacks] store",
    meta_table="store_meta",
    migrations=(Migration(1, "status events, their ids, customers' messages", sql.schema),),
)
LEDGER: Schema[ledger_sql.LedgerDialect] = Schema(
    what="audience ledger",
    config_key="[audience] ledger",
    meta_table="ledger_meta",
    migrations=(Migration(1, "campaigns, recipients, sends", _ledger_v1),),
)
