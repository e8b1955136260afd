"""The write half of both ledger backends: each call becomes a job for the backend's group
committer (:class:`~.sqlite_writer.GroupCommitter`, :class:`~.postgres_group.PgGroupCommitter`),
whose ``commit`` tells the jobs apart by their type."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import NamedTuple, Protocol, cast

from bulk_sender.audience.rules import Facts, wall_clock_ms
from bulk_sender.errors import StoreError
from bulk_sender.stores.ledger import OptChange, TakeRequest

__all__ = ["Answer", "Committer", "Incoming", "Job", "LedgerWrites", "Register", "Release"]


class Register(NamedTuple):
    """A campaign to register: its key, its name, when."""

    key: str
    name: str
    at: int


class Release(NamedTuple):
    """A message's slot to give back."""

    campaign: int
    row: int
    part: int


class Incoming(NamedTuple):
    """A customer wrote at ``at``."""

    recipient: int
    at: int


Job = TakeRequest | Release | OptChange | Incoming | Register
Answer = Facts | int | bool | None


class Committer(Protocol):
    """What the ledgers need of a group committer."""

    async def submit(self, job: Job) -> Answer: ...

    def submit_soon(self, job: Job) -> asyncio.Future[Answer]: ...

    def submit_later(self, job: Job) -> None: ...

    async def flush(self) -> None: ...

    async def stop(self) -> None: ...


class LedgerWrites:
    """The writes of a :class:`~bulk_sender.stores.ledger.Ledger`, through ``_writer`` (None:
    opened read-only; ``_shown`` names the ledger in that error)."""

    _writer: Committer | None
    _shown: str

    async def register_campaign(self, key: str, name: str) -> int:
        """The campaign's id (see :class:`~bulk_sender.stores.ledger.Ledger`)."""
        answer = await self._writing().submit(Register(key, name, wall_clock_ms()))
        assert isinstance(answer, int)
        return answer

    def take(self, request: TakeRequest) -> Awaitable[Facts | None]:
        """Take the slot, or the facts that refused it."""
        return cast("asyncio.Future[Facts | None]", self._writing().submit_soon(request))

    def release_later(self, campaign: int, row: int, part: int) -> None:
        """Queue giving the slot back."""
        self._writing().submit_later(Release(campaign, row, part))

    async def flush(self) -> None:
        """Wait for what is queued."""
        if self._writer is not None:
            await self._writer.flush()

    async def change_opt(self, changes: Sequence[OptChange]) -> int:
        """Apply opt changes; the number that took effect."""
        writer = self._writing()
        answers = await asyncio.gather(*(writer.submit(change) for change in changes))
        return sum(1 for answer in answers if answer)

    async def note_incoming(self, messages: Sequence[tuple[int, int]]) -> None:
        """Record when customers wrote."""
        writer = self._writing()
        await asyncio.gather(*(writer.submit(Incoming(r, at)) for r, at in messages))

    def _writing(self) -> Committer:
        if self._writer is None:
            raise StoreError(f"{self._shown} was opened read-only")
        return self._writer
