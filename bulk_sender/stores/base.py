"""The store interfaces, and the one function that picks a backend for a location.

A store is reached through a small async :class:`typing.Protocol`, so a second backend
(PostgreSQL, for several receivers on different hosts) can stand behind the same calls and the
same tests. The contract every backend keeps:

* :meth:`CallbackStore.save` returns only once the callback is durably committed (it survives
  a kill -9 of the process the moment after), and saving the same callback twice changes
  nothing. Concurrent saves may share one commit (group commit).
* Errors are :class:`StoreError`, never a driver's own exception.
* :meth:`CallbackStore.export_deliveries` computes every message's delivery state for one
  campaign journal, in SQL, into a local SQLite file the report reads (see
  :mod:`bulk_sender.stores.sqlite_delivery` for its table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bulk_sender.delivery.events import Callback
from bulk_sender.errors import StoreError
from bulk_sender.stores.locations import is_postgres

__all__ = ["CallbackStore", "StoreError", "open_callback_store", "store_exists"]


class CallbackStore(Protocol):
    """Where delivery callbacks and customers' messages are kept."""

    async def save(self, callback: Callback) -> None:
        """Commit ``callback`` durably; return only once it is on disk (idempotent)."""
        ...

    async def check_writable(self) -> None:
        """Raise :class:`StoreError` unless a write can be committed now."""
        ...

    async def export_deliveries(
        self, *, journal: Path, since: str, into: Path, rows: tuple[int, int] | None = None
    ) -> None:
        """Write the delivery state of ``journal``'s messages into the SQLite file ``into``.

        ``since`` (ISO-8601) bounds the fallback match by recipient and refs to callbacks
        received after the campaign began; ``rows`` (first, last; inclusive) limits it to
        those data rows, so a report can export a campaign in slices while it writes.
        """
        ...

    async def close(self) -> None:
        """Finish what is queued and release the store."""
        ...


def store_exists(location: str) -> bool:
    """Whether anything was ever stored at ``location`` (a server URL is assumed to exist)."""
    return "://" in location or Path(location).exists()


async def open_callback_store(location: str) -> CallbackStore:
    """The store at ``location``: a file path (SQLite, created if missing) or a
    ``postgresql://`` URL (its tables created if missing)."""
    if is_postgres(location):
        from bulk_sender.stores.postgres_store import PgCallbackStore

        return await PgCallbackStore.open(location)
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise StoreError(
            f"[callbacks] store: {scheme}:// is not a store this bulk-sender knows; give a file "
            "path or a postgresql:// URL"
        )
    from bulk_sender.stores.sqlite import SqliteCallbackStore

    return await SqliteCallbackStore.open(Path(location))
