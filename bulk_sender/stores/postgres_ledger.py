"""The audience ledger on a PostgreSQL server (campaigns sent from several hosts).

The tables and statements are :mod:`.ledger_sql`'s, in the :data:`~.postgres.LEDGER` dialect
(rows as arrays, one prepared statement whatever a batch's size). Every write goes through a
:class:`~.postgres_group.PgGroupCommitter`: the takes, settlements, opt changes and incoming
messages queued meanwhile commit as one READ COMMITTED transaction, and a take's answer comes
once that transaction committed.

**A take cannot race another host's.** The transaction first takes
``pg_advisory_xact_lock`` on each of the batch's recipients, in number order (two batches
never deadlock), held to the commit; the conditional insert runs after it, so under READ
COMMITTED it sees every slot committed before the lock was granted: a second host taking the
same recipient waits for the first one's commit, then counts its row. The insert's
``RETURNING`` says which slots got in.

Reads (the screen, the dry run's snapshot, the opt-out list) run on another connection of the
pool; a snapshot reads in one REPEATABLE READ transaction, a consistent picture.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bulk_sender.audience.rules import Bounds, Facts, OptOut, PastSend
from bulk_sender.audience.snapshot import Snapshot
from bulk_sender.stores import ledger_sql as sql
from bulk_sender.stores import migrations
from bulk_sender.stores.ledger import OptChange, OptOutRow, TakeRequest
from bulk_sender.stores.ledger_writes import Answer, Incoming, Job, LedgerWrites, Register, Release
from bulk_sender.stores.locations import redacted
from bulk_sender.stores.postgres import (
    LEDGER,
    connect_pool,
    driver_errors,
    ensure_schema,
    numbered,
    store_error,
)
from bulk_sender.stores.postgres_group import PgGroupCommitter

__all__ = ["PgLedger"]

_WHAT: Final = "audience ledger"
#: Messages per screen statement (one array parameter per column: any size is one statement).
_SCREEN_PER_STATEMENT: Final = 8192
_CLOSE_SECONDS: Final = 10.0

_TAKE: Final = numbered(sql.take(LEDGER, 0) + " RETURNING campaign, msg_row, msg_part")
_RELEASE: Final = numbered(sql.release(LEDGER, 0))
_REGISTER: Final = numbered(sql.register_campaign(LEDGER))
_CHANGE_OPT: Final = numbered(sql.change_opt(LEDGER))
_NOTE_INCOMING: Final = numbered(sql.note_incoming(LEDGER))
_EXPLAIN_OPT: Final = numbered(sql.explain_opt(LEDGER))
_EXPLAIN_SENDS: Final = numbered(sql.explain_sends(LEDGER))
_LOCK: Final = numbered(LEDGER.lock_recipients or "")
#: The held messages, one row per held message and send within the rules' reach (none: one
#: row, its send columns NULL), with the recipient's opt-out and last message.
_HELD_ROWS: Final = """SELECT h.idx, o.opted_out, o.opt_at, o.opt_by, o.last_incoming,
        s.at, s.content, s.campaign, s.msg_row, s.msg_part, c.name
    FROM held h CROSS JOIN b
    LEFT JOIN recipients o ON o.recipient = h.recipient
    LEFT JOIN sends s ON s.recipient = h.recipient AND s.at > b.reach
    LEFT JOIN campaigns c ON c.id = s.campaign"""
_SCREEN: Final = numbered(sql.screen(LEDGER, 0, answer=_HELD_ROWS))
_OPT_OUTS: Final = (
    "SELECT recipient, opt_at, opt_by FROM recipients WHERE opted_out = 1 ORDER BY recipient"
)


class PgLedger(LedgerWrites):
    """A :class:`~bulk_sender.stores.ledger.Ledger` on the PostgreSQL server at ``url`` (its
    writes: :class:`~.ledger_writes.LedgerWrites`)."""

    def __init__(self, url: str, pool: Any, *, read_only: bool) -> None:
        self.url = url
        self._pool = pool
        self._shown = f"the {_WHAT} {redacted(url)}"
        self._writer = None
        if not read_only:
            self._writer = PgGroupCommitter[Job, Answer](pool, url, _commit, what=_WHAT)

    def __repr__(self) -> str:
        return f"PgLedger(url={redacted(self.url)!r}, writer={self._writer!r})"

    @classmethod
    async def open(cls, url: str, *, read_only: bool = False) -> PgLedger | None:
        """Connect; create the tables unless ``read_only`` (then None if there are none). A
        schema of another version is refused (:mod:`.migrations`)."""
        # No floor of connections (min_size 0): asyncpg would log a traceback each time it
        # failed to restore one while the server is away; the next write connects instead.
        pool = await connect_pool(url, doing=f"open the {_WHAT}", min_size=0, max_size=2)
        try:
            if read_only:
                if not await _schema_checked(pool, url):
                    await pool.close()
                    return None
            else:
                await ensure_schema(pool, url, migrations.LEDGER, LEDGER, upgrade=False)
        except BaseException:
            await pool.close()
            raise
        return cls(url, pool, read_only=read_only)

    # -- reads -------------------------------------------------------------------------------

    async def screen(
        self, numbers: Sequence[str], contents: Sequence[int], bounds: Bounds
    ) -> dict[int, Facts]:
        """The messages the rules hold back, with their facts (read only)."""
        if not numbers:
            return {}
        reach = min(b for b in (bounds.repeat_since, bounds.cap_since, 2**62) if b is not None)
        held: dict[int, Facts] = {}
        try:
            async with self._pool.acquire() as connection:
                for start in range(0, len(numbers), _SCREEN_PER_STATEMENT):
                    end = min(start + _SCREEN_PER_STATEMENT, len(numbers))
                    rows = await connection.fetch(
                        _SCREEN, *bounds, reach, list(range(start, end)),
                        list(numbers[start:end]), list(contents[start:end]),
                    )  # fmt: skip
                    held.update(_held(rows))
        except driver_errors() as exc:
            raise store_error(exc, url=self.url, doing=f"read the {_WHAT}") from None
        return held

    async def snapshot(self, *, sends_since: int, incoming: bool) -> Snapshot:
        """Read the ledger into sorted arrays, in one consistent read."""
        try:
            async with (
                self._pool.acquire() as connection,
                connection.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await _snapshot(connection, sends_since, incoming)
        except driver_errors() as exc:
            raise store_error(exc, url=self.url, doing=f"read the {_WHAT}") from None

    async def opt_outs(self) -> list[OptOutRow]:
        """Every opted-out recipient, in number order."""
        try:
            async with self._pool.acquire() as connection:
                return [OptOutRow(*row) for row in await connection.fetch(_OPT_OUTS)]
        except driver_errors() as exc:
            raise store_error(exc, url=self.url, doing=f"read the {_WHAT}") from None

    async def close(self) -> None:
        """Commit what is queued (a failure of it keeps the slots: the safe side) and close the
        pool (ended at once if the server does not answer)."""
        if self._writer is not None:
            await self._writer.stop()
        try:
            await asyncio.wait_for(self._pool.close(), _CLOSE_SECONDS)
        except driver_errors():  # TimeoutError among them
            self._pool.terminate()


async def _schema_checked(pool: Any, url: str) -> bool:
    """Whether the ledger's tables exist (their version checked: another is refused)."""
    schema = migrations.LEDGER
    try:
        async with pool.acquire() as connection:
            if await connection.fetchval("SELECT to_regclass($1)", schema.meta_table) is None:
                return False
            found = await connection.fetchval(schema.version_query)
    except driver_errors() as exc:
        raise store_error(exc, url=url, doing=f"open the {_WHAT}") from None
    if found is None:
        return False
    migrations.pending(schema, found, where=redacted(url), upgrade=False)
    return True


# -- the writer's side ---------------------------------------------------------------------------


async def _commit(connection: Any, jobs: list[Job]) -> list[Answer]:
    """Run one batch's jobs in the open transaction; one answer per job, in order.

    Slots given back, opt changes and incoming messages go first, so a slot given back in this
    batch is free for a take in it.
    """
    answers: list[Answer] = [None] * len(jobs)
    for index, job in enumerate(jobs):
        if isinstance(job, Register):
            answers[index] = await connection.fetchval(_REGISTER, *job)
    releases = [job for job in jobs if isinstance(job, Release)]
    if releases:
        await connection.execute(_RELEASE, *_columns(releases))
    for index, job in enumerate(jobs):
        if isinstance(job, OptChange):
            status = await connection.execute(
                _CHANGE_OPT, job.recipient, int(job.opted_out), job.at, job.by
            )
            answers[index] = not status.endswith(" 0")  # "INSERT 0 1": it took effect
    incoming = [tuple(job) for job in jobs if isinstance(job, Incoming)]
    if incoming:
        await connection.executemany(_NOTE_INCOMING, incoming)
    takes = [(index, job) for index, job in enumerate(jobs) if isinstance(job, TakeRequest)]
    if takes:
        await _take(connection, takes, answers)
    return answers


async def _take(
    connection: Any, takes: list[tuple[int, TakeRequest]], answers: list[Answer]
) -> None:
    """Lock the takes' recipients, insert their slots, round by round; set each take's answer:
    None if its slot went in, else the facts that kept it out."""
    await connection.execute(_LOCK, sorted({q.recipient for _, q in takes}))
    index_of = {(q.campaign, q.row, q.part): index for index, q in takes}
    for round_ in sql.rounds([q for _, q in takes]):
        rows = [(q.recipient, q.content, q.campaign, q.row, q.part, q.at, *q.bounds) for q in
                round_]  # fmt: skip
        got = {tuple(row) for row in await connection.fetch(_TAKE, *_columns(rows))}
        for q in round_:
            if (q.campaign, q.row, q.part) not in got:
                answers[index_of[(q.campaign, q.row, q.part)]] = await _facts(connection, q)


async def _facts(connection: Any, q: TakeRequest) -> Facts:
    """What the ledger knows about ``q``'s recipient, apart from ``q``'s own slot."""
    row = await connection.fetchrow(_EXPLAIN_OPT, q.recipient)
    opt_out = OptOut(row[1], row[2]) if row is not None and row[0] == 1 else None
    last_incoming = row[3] if row is not None else None
    bounds = [b for b in (q.bounds.repeat_since, q.bounds.cap_since) if b is not None]
    sends: list[PastSend] = []
    if bounds:
        params = (q.recipient, min(bounds), q.campaign, q.row, q.part)
        sends = [PastSend(*values) for values in await connection.fetch(_EXPLAIN_SENDS, *params)]
    return Facts(opt_out=opt_out, last_incoming=last_incoming, sends=sends)


def _columns(rows: Sequence[Sequence[object]]) -> list[list[object]]:
    """Rows as one list per column (the arrays the statements unnest)."""
    return [list(column) for column in zip(*rows, strict=True)]


# -- reads -----------------------------------------------------------------------------------


def _held(rows: Sequence[Any]) -> dict[int, Facts]:
    """The screen's answer rows, grouped by message."""
    held: dict[int, Facts] = {}
    for idx, opted, opt_at, opt_by, incoming, at, content, campaign, row, part, name in rows:
        facts = held.get(idx)
        if facts is None:
            opt_out = OptOut(opt_at, opt_by) if opted == 1 else None
            facts = held[idx] = Facts(opt_out, incoming, [])
        if at is not None:
            assert isinstance(facts.sends, list)
            facts.sends.append(PastSend(at, content, name or "?", campaign, row, part))
    return held


async def _snapshot(connection: Any, since: int, incoming: bool) -> Snapshot:
    snapshot = Snapshot()
    rows = await connection.fetch(_OPT_OUTS)
    names: dict[str, int] = {}
    snapshot.opt_to = np.array([r[0] for r in rows], dtype=np.int64)
    snapshot.opt_at = np.array([r[1] for r in rows], dtype=np.int64)
    snapshot.opt_by = np.array([names.setdefault(r[2], len(names)) for r in rows], dtype=np.int64)
    snapshot.by_names = list(names)
    if incoming:
        snapshot.incoming_to, snapshot.incoming_at = await _arrays(
            connection, "recipient, last_incoming", "recipients WHERE last_incoming IS NOT NULL"
        )
    to, at, content, campaign = await _arrays(
        connection, "recipient, at, content, campaign", f"sends WHERE at > {int(since)}"
    )
    snapshot.send_to, snapshot.send_at = to, at
    snapshot.send_content, snapshot.send_campaign = content, campaign
    snapshot.campaigns = dict(await connection.fetch("SELECT id, name FROM campaigns"))
    return snapshot


async def _arrays(connection: Any, columns: str, source: str) -> list[npt.NDArray[np.int64]]:
    """Integer ``columns`` of ``source``, sorted by the first then the second: each joined by
    the server into one text (no Python object per value), parsed by numpy."""
    names = columns.split(", ")
    order = f"ORDER BY {names[0]}, {names[1]}"
    joined = ", ".join(f"string_agg({name}::text, ',' {order})" for name in names)
    values = await connection.fetchrow(f"SELECT {joined} FROM {source}")
    return [
        np.fromstring(text, dtype=np.int64, sep=",") if text else np.empty(0, dtype=np.int64)
        for text in values
    ]
