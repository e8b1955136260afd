"""The callback store on a PostgreSQL server (several receivers, on several hosts).

Writes go through a :class:`~.postgres_writer.PgGroupCommitter` on a small connection pool:
a save returns once its transaction committed (durable with PostgreSQL's default
``synchronous_commit = on``, which this store never changes). The tables and statements are
:mod:`.sql`'s, in the :data:`~.postgres.CALLBACKS` dialect; the delivery export fetches what a
journal needs and merges it locally (:mod:`.postgres_delivery`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from bulk_sender.delivery.events import Callback
from bulk_sender.model import utc_now
from bulk_sender.stores import migrations, sql
from bulk_sender.stores.locations import redacted
from bulk_sender.stores.postgres import CALLBACKS, connect_pool, ensure_schema
from bulk_sender.stores.postgres_writer import PgGroupCommitter, Statement

__all__ = ["PgCallbackStore"]

_INSERTS: Final = sql.insert_statements(CALLBACKS)
_CHECKED: Final = sql.checked(CALLBACKS)
#: Transactions in flight at once (each on a connection of the pool), and the pool's size
#: (one more, for an export or a health check beside them).
LANES: Final = 1


class PgCallbackStore:
    """A :class:`~bulk_sender.stores.base.CallbackStore` on the server at ``url``."""

    def __init__(self, url: str, pool: Any) -> None:
        self.url = url
        self._pool = pool
        self._writer = PgGroupCommitter(pool, url, lanes=LANES)

    def __repr__(self) -> str:
        return f"PgCallbackStore(url={redacted(self.url)!r}, writer={self._writer!r})"

    @classmethod
    async def open(cls, url: str) -> PgCallbackStore:
        """Connect, and create the tables if there are none; a schema of another version is
        refused (:mod:`.migrations`)."""
        # No floor of connections (min_size 0), as the ledger: asyncpg would log a traceback
        # each time it failed to restore one while the server is away (the receiver answers
        # 503 meanwhile); the next write connects instead.
        pool = await connect_pool(
            url, doing="open the callback store", min_size=0, max_size=LANES + 1
        )
        try:
            await ensure_schema(pool, url, migrations.CALLBACKS, CALLBACKS, upgrade=False)
        except BaseException:
            await pool.close()
            raise
        return cls(url, pool)

    async def save(self, callback: Callback) -> None:
        """Commit the callback's rows; return once the transaction committed."""
        received = utc_now()
        statements: list[Statement] = [
            (_INSERTS[index], params) for index, params in sql.rows_of(callback, received)
        ]
        await self._writer.write(statements)

    async def check_writable(self) -> None:
        """Commit a heartbeat through the same writer as the callbacks."""
        await self._writer.write([(_CHECKED, ("checked_at", utc_now()))])

    async def export_deliveries(
        self, *, journal: Path, since: str, into: Path, rows: tuple[int, int] | None = None
    ) -> None:
        """The merge against ``journal`` into ``into`` (see :mod:`.postgres_delivery`)."""
        from bulk_sender.stores.postgres_delivery import export

        await export(self._pool, self.url, journal=journal, since=since, into=into, rows=rows)

    async def close(self) -> None:
        """Commit what is queued and close the pool."""
        await self._writer.stop()
        await self._pool.close()
