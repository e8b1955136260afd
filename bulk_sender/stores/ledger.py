"""The audience ledger's interface, and the function that opens one.

The ledger is one store per Kaleyra account, shared by every campaign (several may run at
once, in several processes) and by the callback receiver. It records every message a campaign
takes a slot for (recipient, a hash of its content, campaign, time), opt-outs and opt-ins, and
when each customer last wrote to the business. It is reached through the small async
:class:`Ledger` protocol; two backends stand behind the same calls and the same tests: an
SQLite file (:mod:`.sqlite_ledger`, one host) and a PostgreSQL server (:mod:`.postgres_ledger`,
several hosts). The contract every backend keeps:

* :meth:`Ledger.take` checks the rules and records the send **atomically, in the store**: a
  conditional insert that a concurrent taker in another process cannot interleave with (in
  SQLite the database's write lock, in PostgreSQL a lock per recipient, see
  :mod:`.ledger_sql`). It returns only once the slot is durably committed. Concurrent takes may
  share one commit (group commit).
* A slot taken is kept: the message may have reached the customer. :meth:`Ledger.release_later`
  gives one back (queued; :meth:`Ledger.flush` waits for it) when its request provably never
  arrived; a slot renewed by a later run of the same message is never given back.
* Opt-out changes are ordered by their own time: an older change never overrides a newer one,
  so a STOP and a START arriving out of order leave the later one in force.
* Errors are :class:`StoreError`, never a driver's own exception.
* Times are POSIX milliseconds; recipients are E.164 digits as integers (``+919845012345`` is
  919845012345).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from bulk_sender.audience.rules import Bounds, Facts
from bulk_sender.audience.snapshot import Snapshot
from bulk_sender.errors import StoreError
from bulk_sender.stores.locations import is_postgres

__all__ = [
    "Ledger",
    "OptChange",
    "OptOutRow",
    "StoreError",
    "TakeRequest",
    "open_ledger",
    "recipient_key",
]


class TakeRequest(NamedTuple):
    """One message asking for its slot: recipient, content, which message, when, the rules."""

    recipient: int
    content: int
    campaign: int  #: the id :meth:`Ledger.register_campaign` gave
    row: int
    part: int
    at: int
    bounds: Bounds


class OptChange(NamedTuple):
    """An opt-out (``opted_out``) or an opt-in, at ``at``, by ``by`` ("a STOP reply", "hand")."""

    recipient: int
    opted_out: bool
    at: int
    by: str


class OptOutRow(NamedTuple):
    """A recipient the ledger holds opted out."""

    recipient: int
    at: int
    by: str


class Ledger(Protocol):
    """The audience ledger; see the module docstring."""

    async def register_campaign(self, key: str, name: str) -> int:
        """The id of the campaign ``key`` (a journal's own id), shown as ``name``; idempotent."""
        ...

    def take(self, request: TakeRequest) -> Awaitable[Facts | None]:
        """Take the message's slot if no rule holds it back: the awaitable gives None once it is
        committed; else the recipient's facts, read in the same transaction, that made the
        store refuse it. (An awaitable, not a coroutine: the engine starts it beside the
        journal's commit without making a task a message.)"""
        ...

    def release_later(self, campaign: int, row: int, part: int) -> None:
        """Queue: give back the message's slot (its request provably never arrived)."""
        ...

    async def flush(self) -> None:
        """Wait until everything queued is committed."""
        ...

    async def screen(
        self, numbers: Sequence[str], contents: Sequence[int], bounds: Bounds
    ) -> dict[int, Facts]:
        """Of the messages ``(numbers[i], contents[i])`` (numbers in E.164), those the rules hold
        back under ``bounds``: the predicate of :meth:`take`, read only, counting every send
        recorded (a message's own earlier slot too). Their facts, by index ``i``."""
        ...

    async def snapshot(self, *, sends_since: int, incoming: bool) -> Snapshot:
        """Everything the rules may read, as sorted arrays: opt-outs, sends after
        ``sends_since``, and (if asked) when each customer last wrote. For a dry run."""
        ...

    async def change_opt(self, changes: Sequence[OptChange]) -> int:
        """Apply opt-outs and opt-ins (a newer change wins); return how many took effect."""
        ...

    async def note_incoming(self, messages: Sequence[tuple[int, int]]) -> None:
        """Record ``(recipient, at)``: the customer wrote to the business at ``at``."""
        ...

    async def opt_outs(self) -> list[OptOutRow]:
        """Every recipient held opted out, in number order."""
        ...

    async def close(self) -> None:
        """Finish what is queued and release the store."""
        ...


def recipient_key(e164: str) -> int:
    """``+919845012345`` -> 919845012345 (E.164 has at most 15 digits: it fits in 63 bits)."""
    return int(e164[1:]) if e164[1:].isdigit() else -1


async def open_ledger(location: str, *, read_only: bool = False) -> Ledger | None:
    """The ledger at ``location`` (a file path: SQLite; a ``postgresql://`` URL: PostgreSQL),
    created if missing; a schema of another version is refused (:mod:`.migrations`).

    ``read_only`` (rehearsals, dry runs): never create or write; None if nothing is there yet.
    A read-only ledger answers :meth:`Ledger.screen`, :meth:`Ledger.snapshot` and
    :meth:`Ledger.opt_outs` only.
    """
    if is_postgres(location):
        from bulk_sender.stores.postgres_ledger import PgLedger

        return await PgLedger.open(location, read_only=read_only)
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise StoreError(
            f"[audience] ledger: {scheme}:// ledgers are not supported; give a file path or a "
            "postgresql:// URL"
        )
    from bulk_sender.stores.sqlite_ledger import SqliteLedger

    path = Path(location)
    if read_only and not await asyncio.to_thread(path.exists):
        return None
    return await SqliteLedger.open(path, read_only=read_only)
