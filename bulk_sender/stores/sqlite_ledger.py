"""The audience ledger in one SQLite file (the default backend).

Every write goes through a :class:`~.sqlite_writer.GroupCommitter`: a batch of jobs (takes,
settlements, opt changes, incoming messages) commits as one ``BEGIN IMMEDIATE`` transaction,
which is what serialises the takes of several processes (see :mod:`.ledger_sql`). Reads of the
whole ledger (:meth:`SqliteLedger.view`) use a read-only connection of their own, in a thread;
WAL mode lets them run beside the writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, TypeVar, cast

import numpy as np
import numpy.typing as npt
import orjson

from bulk_sender.audience.rules import Bounds, Facts, OptOut, PastSend
from bulk_sender.audience.snapshot import Snapshot
from bulk_sender.stores import ledger_sql as sql
from bulk_sender.stores import migrations, sqlite_schema
from bulk_sender.stores.ledger import (
    OptChange,
    OptOutRow,
    StoreError,
    TakeRequest,
)
from bulk_sender.stores.ledger_writes import Answer, Incoming, Job, LedgerWrites, Register, Release
from bulk_sender.stores.sqlite_writer import GroupCommitter, connect

__all__ = ["SQLITE", "SqliteLedger"]

SQLITE: Final = sql.LedgerDialect(
    key_type="INTEGER",
    serial_key="INTEGER PRIMARY KEY",
    without_rowid=" WITHOUT ROWID",
    mark="?",
    greatest="MAX",
    group_concat="group_concat",
)
#: Rows per multi-row statement: under SQLite's oldest limit of 999 parameters.
_TAKES_PER_STATEMENT: Final = 64
_SLOTS_PER_STATEMENT: Final = 256
_SCREEN_PER_STATEMENT: Final = 2048
_READ_MMAP_BYTES: Final = 1 << 30
_T = TypeVar("_T")


class SqliteLedger(LedgerWrites):
    """A :class:`~bulk_sender.stores.ledger.Ledger` in the SQLite file ``path`` (its writes:
    :class:`~.ledger_writes.LedgerWrites`)."""

    def __init__(self, path: Path, writer: GroupCommitter[Job, Answer] | None) -> None:
        self.path = path
        self._writer = writer
        self._shown = f"the ledger {path}"
        self._reader: sqlite3.Connection | None = None
        self._reading = threading.Lock()
        self._names: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"SqliteLedger(path={str(self.path)!r}, writer={self._writer!r})"

    @classmethod
    async def open(cls, path: Path, *, read_only: bool = False) -> SqliteLedger:
        """Open (creating if needed, unless ``read_only``) the ledger at ``path``."""
        if read_only:
            await asyncio.to_thread(_check_readable, path)
            return cls(path, None)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await asyncio.to_thread(_create, path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(_cannot(path, "open", exc)) from None
        try:
            writer: GroupCommitter[Job, Answer] = GroupCommitter(
                path, db, _commit, what="the ledger", alone=_alone
            )
        except StoreError:
            db.close()
            raise
        writer.start(name="ledger-writer")
        return cls(path, writer)

    # -- reads -------------------------------------------------------------------------------

    async def screen(
        self, numbers: Sequence[str], contents: Sequence[int], bounds: Bounds
    ) -> dict[int, Facts]:
        """The messages the rules hold back, with their facts (in a thread, read only)."""
        if not numbers:
            return {}
        return await asyncio.to_thread(self._screen, numbers, contents, bounds)

    def _screen(
        self, numbers: Sequence[str], contents: Sequence[int], bounds: Bounds
    ) -> dict[int, Facts]:
        with self._reading:
            try:
                if self._reader is None:
                    self._reader = _reader(self.path)
                return _screen(self._reader, numbers, contents, bounds, self._names)
            except sqlite3.Error as exc:
                raise StoreError(_cannot(self.path, "read", exc)) from None

    async def snapshot(self, *, sends_since: int, incoming: bool) -> Snapshot:
        """Read the ledger into sorted arrays (in a thread, on a connection of its own)."""
        return await asyncio.to_thread(_snapshot, self.path, sends_since, incoming)

    async def opt_outs(self) -> list[OptOutRow]:
        """Every opted-out recipient, in number order."""
        return await asyncio.to_thread(_opt_outs, self.path)

    async def close(self) -> None:
        """Commit what is queued and close the file."""
        if self._writer is not None:
            await self._writer.stop()
        with self._reading:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


# -- the writer thread's side --------------------------------------------------------------------


def _create(path: Path) -> sqlite3.Connection:
    db = connect(path, what="the ledger")
    try:
        sqlite_schema.apply_schema(db, migrations.LEDGER, SQLITE, where=str(path), upgrade=False)
    except BaseException:
        db.close()
        raise
    return db


def _check_is_ledger(db: sqlite3.Connection, path: Path) -> None:
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "ledger_meta" not in tables:
        raise StoreError(
            f"{path} is an SQLite file but not a bulk-sender ledger (it has other tables); "
            "point [audience] ledger at a file of its own"
        )


def _commit(db: sqlite3.Connection, jobs: list[Job]) -> list[Answer]:
    """Run one batch's jobs in the open transaction; one answer per job, in order.

    Slots given back, opt changes and incoming messages go first, so a slot given back in this
    batch is free for a take in it. A batch of takes only (a send's) goes straight to them.
    """
    if all(type(job) is TakeRequest for job in jobs):
        return _take(db, cast("list[TakeRequest]", jobs))
    answers: list[Answer] = [None] * len(jobs)
    for index, job in enumerate(jobs):
        if isinstance(job, Register):
            (answers[index],) = db.execute(sql.register_campaign(SQLITE), job).fetchone()
    _release(db, [job for job in jobs if isinstance(job, Release)])
    for index, job in enumerate(jobs):
        if isinstance(job, OptChange):
            changed = db.execute(
                sql.change_opt(SQLITE), (job.recipient, int(job.opted_out), job.at, job.by)
            ).rowcount
            answers[index] = changed > 0
        elif isinstance(job, Incoming):
            db.execute(sql.note_incoming(SQLITE), job)
    indexes = [index for index, job in enumerate(jobs) if isinstance(job, TakeRequest)]
    if indexes:
        taken = _take(db, [cast("TakeRequest", jobs[index]) for index in indexes])
        for index, facts in zip(indexes, taken, strict=True):
            answers[index] = facts
    return answers


def _alone(db: sqlite3.Connection, jobs: list[Job]) -> list[Answer] | None:
    """A send's usual batch, takes for distinct recipients that fit one statement, committed by
    that statement alone (autocommit: see :mod:`.sqlite_writer`); None for any other batch.

    If some take was refused, the others' rows are committed already: which got in and the
    refused ones' facts are then read in a transaction of their own (a slot whose answer cannot
    be read is kept, unused: the safe side).
    """
    if len(jobs) > _TAKES_PER_STATEMENT or not all(type(job) is TakeRequest for job in jobs):
        return None
    takes = cast("list[TakeRequest]", jobs)
    if len({q.recipient for q in takes}) != len(takes):
        return None
    absent = sql.absent_bounds(takes)
    statement = sql.take(SQLITE, len(takes), absent)
    if db.execute(statement, sql.take_params(takes, absent)).rowcount == len(takes):
        return [None] * len(takes)
    db.execute("BEGIN")
    answers = _answers(db, takes)
    db.execute("COMMIT")
    return answers


def _release(db: sqlite3.Connection, releases: list[Release]) -> None:
    for chunk in _chunks(releases, _SLOTS_PER_STATEMENT):
        keys = list(itertools.chain.from_iterable(chunk))
        db.execute(sql.release(SQLITE, len(chunk)), keys)


def _take(db: sqlite3.Connection, takes: list[TakeRequest]) -> list[Answer]:
    """Each take's answer, in order: None if its row went in, else the facts that kept it out.

    Takes for distinct recipients (nearly always) are one round: their answers come in order,
    a chunk at a time, and a chunk whose rows all went in costs no Python per take.
    """
    if len({q.recipient for q in takes}) == len(takes):
        answers: list[Answer] = []
        for chunk in _chunks(takes, _TAKES_PER_STATEMENT):
            answers += _take_round(db, chunk)
        return answers
    by_key: dict[tuple[int, int, int], Answer] = {}
    for round_ in sql.rounds(takes):
        for chunk in _chunks(round_, _TAKES_PER_STATEMENT):
            for q, facts in zip(chunk, _take_round(db, chunk), strict=True):
                by_key[(q.campaign, q.row, q.part)] = facts
    return [by_key[(q.campaign, q.row, q.part)] for q in takes]


def _take_round(db: sqlite3.Connection, chunk: Sequence[TakeRequest]) -> list[Answer]:
    """Insert the slots of ``chunk`` (distinct recipients); each one's answer, in order."""
    absent = sql.absent_bounds(chunk)
    statement = sql.take(SQLITE, len(chunk), absent)
    if db.execute(statement, sql.take_params(chunk, absent)).rowcount == len(chunk):
        return [None] * len(chunk)
    return _answers(db, chunk)


def _answers(db: sqlite3.Connection, chunk: Sequence[TakeRequest]) -> list[Answer]:
    """After a chunk's insert that not every take got into: None for those that did, the facts
    for the others."""
    keys = itertools.chain.from_iterable(
        (q.campaign, q.row, q.part, q.recipient, q.at) for q in chunk
    )
    (joined,) = db.execute(sql.taken_now(SQLITE, len(chunk)), list(keys)).fetchone()
    got = set(joined.split(",")) if joined else set()
    return [None if f"{q.campaign}:{q.row}:{q.part}" in got else _facts(db, q) for q in chunk]


def _facts(db: sqlite3.Connection, q: TakeRequest) -> Facts:
    """What the ledger knows about ``q``'s recipient, apart from ``q``'s own slot."""
    row = db.execute(sql.explain_opt(SQLITE), (q.recipient,)).fetchone()
    opt_out = OptOut(row[1], row[2]) if row is not None and row[0] == 1 else None
    last_incoming = row[3] if row is not None else None
    bounds = [b for b in (q.bounds.repeat_since, q.bounds.cap_since) if b is not None]
    sends: list[PastSend] = []
    if bounds:
        params = (q.recipient, min(bounds), q.campaign, q.row, q.part)
        sends = [PastSend(*values) for values in db.execute(sql.explain_sends(SQLITE), params)]
    return Facts(opt_out=opt_out, last_incoming=last_incoming, sends=sends)


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- reads -----------------------------------------------------------------------------------


def _check_readable(path: Path) -> None:
    try:
        with contextlib.closing(connect(path, read_only=True)) as db:
            _check_is_ledger(db, path)
            _check_version(db, path)
    except sqlite3.Error as exc:
        raise StoreError(_cannot(path, "read", exc)) from None


def _check_version(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a ledger of another schema version (read only: nothing is migrated)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ledger_meta'").fetchone() is None:
        return
    row = db.execute(migrations.LEDGER.version_query).fetchone()
    if row is not None:
        migrations.pending(migrations.LEDGER, str(row[0]), where=str(path), upgrade=False)


def _has_tables(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sends'").fetchone() is not None


def _reader(path: Path) -> sqlite3.Connection:
    """The read connection: read only, the file memory-mapped (a screen reads index pages all
    over a large ledger: mapped, they cost no system call each; measured 30 % less CPU than a
    64 MiB page cache on a ledger of a million sends)."""
    db = connect(path, read_only=True)
    db.execute(f"PRAGMA mmap_size={_READ_MMAP_BYTES}")
    return db


#: The held messages and their facts, in one answer row: a JSON array of
#: ``[idx, opted_out, opt_at, opt_by, last_incoming, [[at, content, campaign, row, part]...]]``.
_HELD_FACTS: Final = """SELECT json_group_array(json_array(
        h.idx, o.opted_out, o.opt_at, o.opt_by, o.last_incoming,
        json((SELECT json_group_array(json_array(s.at, s.content, s.campaign, s.msg_row,
                                                 s.msg_part))
              FROM sends s WHERE s.recipient = h.recipient AND s.at > b.reach))))
    FROM held h CROSS JOIN b LEFT JOIN recipients o ON o.recipient = h.recipient"""


def _screen(
    db: sqlite3.Connection,
    numbers: Sequence[str],
    contents: Sequence[int],
    bounds: Bounds,
    names: dict[int, str],
) -> dict[int, Facts]:
    """Run :func:`~.ledger_sql.screen` over the messages: the held ones with their facts."""
    if not _has_tables(db):
        return {}
    size = min(_SCREEN_PER_STATEMENT, (db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 5) // 3)
    reach = min([b for b in (bounds.repeat_since, bounds.cap_since) if b is not None] or [2**62])
    held: dict[int, Facts] = {}
    for start in range(0, len(numbers), size):
        end = min(start + size, len(numbers))
        rows = zip(range(start, end), numbers[start:end], contents[start:end], strict=True)
        params = [*bounds, reach, *itertools.chain.from_iterable(rows)]
        statement = sql.screen(SQLITE, end - start, answer=_HELD_FACTS)
        (found,) = db.execute(statement, params).fetchone()
        for index, opted, at, by, incoming, sends in orjson.loads(found):
            if any(send[2] not in names for send in sends):
                names.update(db.execute("SELECT id, name FROM campaigns"))
            held[index] = Facts(
                OptOut(at, by) if opted == 1 else None,
                incoming,
                [PastSend(a, c, names.get(k, "?"), k, r, p) for a, c, k, r, p in sends],
            )
    return held


def _snapshot(path: Path, since: int, incoming: bool) -> Snapshot:
    snapshot = Snapshot()
    try:
        with contextlib.closing(connect(path, read_only=True)) as db:
            if not _has_tables(db):
                return snapshot
            rows = db.execute(
                "SELECT recipient, opt_at, opt_by FROM recipients WHERE opted_out = 1"
                " ORDER BY recipient"
            ).fetchall()
            names: dict[str, int] = {}
            snapshot.opt_to = np.array([r[0] for r in rows], dtype=np.int64)
            snapshot.opt_at = np.array([r[1] for r in rows], dtype=np.int64)
            snapshot.opt_by = np.array([names.setdefault(r[2], len(names)) for r in rows])
            snapshot.by_names = list(names)
            if incoming:
                snapshot.incoming_to, snapshot.incoming_at = _columns(
                    db, "recipient, last_incoming", "recipients WHERE last_incoming IS NOT NULL"
                )
            to, at, content, campaign = _columns(
                db, "recipient, at, content, campaign", f"sends WHERE at > {int(since)}"
            )
            snapshot.send_to, snapshot.send_at = to, at
            snapshot.send_content, snapshot.send_campaign = content, campaign
            snapshot.campaigns = dict(db.execute("SELECT id, name FROM campaigns"))
    except sqlite3.Error as exc:
        raise StoreError(_cannot(path, "read", exc)) from None
    return snapshot


def _columns(db: sqlite3.Connection, columns: str, source: str) -> list[npt.NDArray[np.int64]]:
    """Integer ``columns`` of ``source``, sorted by the first then the second: one
    ``group_concat`` each (C all the way), parsed by numpy."""
    names = columns.split(", ")
    joined = ", ".join(f"group_concat({name})" for name in names)
    ordered = f"SELECT {columns} FROM {source} ORDER BY {names[0]}, {names[1]}"
    values = db.execute(f"SELECT {joined} FROM ({ordered})").fetchone()
    arrays = [
        np.fromstring(text, dtype=np.int64, sep=",") if text else np.empty(0, dtype=np.int64)
        for text in values
    ]
    if len(arrays[0]) > 1 and not bool(np.all(np.diff(arrays[0]) >= 0)):
        order = np.lexsort((arrays[1], arrays[0]))  # group_concat kept another order: sort
        arrays = [array[order] for array in arrays]
    return arrays


def _opt_outs(path: Path) -> list[OptOutRow]:
    if not path.exists():
        return []
    try:
        with contextlib.closing(connect(path, read_only=True)) as db:
            if not _has_tables(db):
                return []
            query = "SELECT recipient, opt_at, opt_by FROM recipients WHERE opted_out = 1"
            return [OptOutRow(*row) for row in db.execute(query + " ORDER BY recipient")]
    except sqlite3.Error as exc:
        raise StoreError(_cannot(path, "read", exc)) from None


def _cannot(path: Path, what: str, exc: BaseException) -> str:
    return (
        f"cannot {what} the ledger {path}: {exc}. Nothing was sent; fix the cause (disk space, "
        "permissions, a path of its own for [audience] ledger), then run the same command again"
    )
