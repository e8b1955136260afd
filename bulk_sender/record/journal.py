"""The durable record of every message of a campaign: what was started, what came of it.

Storage is SQLite (stdlib, a real embedded store) in WAL mode with ``synchronous=FULL``: a
transaction that has committed survives a process kill *and* a power loss, because every
commit fsyncs the write-ahead log. All writes go through one writer thread that batches
whatever is queued into one transaction (group commit), so the fsync is paid once per batch,
not once per message.

The protocol that makes resume exact (see :mod:`bulk_sender.sending.engine`):

1. before a request goes to the network its ``in_flight`` record is committed
   (:meth:`Journal.write` of an ``in_flight`` record, awaited);
2. its outcome is queued behind it and committed, in queue order, no later than the worker's
   next ``in_flight`` record, which the worker awaits before its next request;
3. on the next run, a row still ``in_flight`` becomes ``unknown`` (it may have reached
   Kaleyra) and is not sent again unless ``--resend-unknown``.

So at most ``concurrency`` rows can be ``unknown`` after a crash, and a row with a final
status is never sent again. One row of the table per *message*: ``(row, part)`` where
``part`` numbers the recipients of a cell that holds several.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import itertools
import queue
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from bulk_sender.errors import CampaignMismatchError, JournalError
from bulk_sender.input.dedupe import PART_BITS as _PART_BITS
from bulk_sender.input.dedupe import unpack
from bulk_sender.model import FINAL, MAY_HAVE_ARRIVED, Record, Status, utc_now
from bulk_sender.record.carried import Carried

__all__ = [
    "SANDBOX",
    "Journal",
    "JournalError",
    "ResumeState",
    "journal_path",
]

_SCHEMA_VERSION = "1"


#: The destination of a rehearsal against the embedded sandbox (its address changes per run).
SANDBOX: Final = "sandbox"


def journal_path(results: Path) -> Path:
    """Where the journal of the results file ``results`` lives: beside it."""
    return results.with_name(results.name + ".journal")


_COLUMNS = Record._fields
_PLACEHOLDERS = ", ".join("?" * len(_COLUMNS))
_UPSERT = (
    f"INSERT OR REPLACE INTO messages ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in _COLUMNS)})"
    " VALUES "
)
#: Rows per INSERT statement: the largest power of two whose values stay under SQLite's oldest
#: limit of 999 variables (64 rows of 15 columns). One statement per group, not one per row:
#: the sqlite3 module lets go of the GIL around every statement it steps, and getting it back
#: while the sending loop is busy is what a per-row ``executemany`` mostly waited for.
_GROUP = 1 << ((999 // len(_COLUMNS)).bit_length() - 1)


@functools.cache
def _upsert(rows: int) -> str:
    """The upsert of ``rows`` records in one statement; later rows win, as in queue order."""
    return _UPSERT + ", ".join([f"({_PLACEHOLDERS})"] * rows)


def _upsert_all(db: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    """Upsert ``rows`` in order, in as few statements as the variable limit allows."""
    start = 0
    while start < len(rows):
        size = min(_GROUP, 1 << ((len(rows) - start).bit_length() - 1))
        group = rows[start : start + size]
        db.execute(_upsert(size), list(itertools.chain.from_iterable(group)))
        start += size


def _no_numbers() -> npt.NDArray[np.int64]:
    return np.empty(0, dtype=np.int64)


def _ints(joined: str) -> npt.NDArray[np.int64]:
    """Parse SQLite's comma-joined integers at C speed."""
    if not joined:
        return _no_numbers()
    return np.fromstring(joined, dtype=np.int64, sep=",")


@dataclass(slots=True)
class ResumeState:
    """What an earlier run left, compact enough for millions of rows.

    ``rows_done[row]`` is 1 when every message of the row is final; ``parts_done`` and
    ``attempts`` cover only rows that are partly done or were tried before; :meth:`seen` gives
    the E.164 digits and packed ``(row, part)`` that seed the dedupe of the rows still to send;
    ``done`` counts final messages by status; ``crashed`` counts messages found in flight,
    which a run that died was sending. Whoever plans loads the seed
    (:meth:`start_seen_loader`); until then the state pickles whole, into the planning
    process's job.
    """

    rows_done: bytearray = field(default_factory=bytearray)
    parts_done: set[tuple[int, int]] = field(default_factory=set)
    attempts: dict[tuple[int, int], int] = field(default_factory=dict)
    done: Counter[str] = field(default_factory=Counter)
    crashed: int = 0
    _seen: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _loader: threading.Thread | None = None
    _error: list[BaseException] = field(default_factory=list)

    def start_seen_loader(self, path: Path) -> None:
        """Load the dedupe seed from the journal at ``path`` in a thread (SQLite frees the GIL)."""

        def load() -> None:
            try:
                with contextlib.closing(sqlite3.connect(path)) as db:
                    numbers, keys = db.execute(
                        'SELECT group_concat(substr("to", 2)),'
                        f" group_concat(row << {_PART_BITS} | part) FROM messages"
                        f" WHERE status NOT IN ('{Status.INVALID}', '{Status.DUPLICATE}')"
                    ).fetchone()
                self._seen[:] = [_ints(numbers or ""), _ints(keys or "")]
            except sqlite3.Error as exc:  # handed to the caller of seen()
                self._error.append(_journal_error(path, exc))
            except BaseException as exc:
                self._error.append(exc)

        self._loader = threading.Thread(target=load, name="journal-seen", daemon=True)
        self._loader.start()

    def seen(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """E.164 digits and packed ``(row, part)`` of every message already planned."""
        if self._loader is not None:
            self._loader.join()
            self._loader = None
        if self._error:
            error = self._error[0]
            if isinstance(error, JournalError):
                raise error
            raise JournalError(f"cannot read the journal: {error}")
        if not self._seen:
            return _no_numbers(), _no_numbers()
        return self._seen[0], self._seen[1]

    def all_done(self, first: int, count: int) -> bool:
        """Whether every row from ``first`` on, ``count`` of them, is done (one C call)."""
        done = self.rows_done[first : first + count]
        return len(done) == count and done.count(1) == count

    def row_done(self, row: int) -> bool:
        """Whether every message of data row ``row`` has a final status."""
        return row < len(self.rows_done) and self.rows_done[row] == 1


_Waiter = asyncio.Future[None]
_Item = tuple[str, tuple[object, ...], _Waiter | None]
_STOP: Final = ("stop", (), None)


class Journal:
    """A campaign's journal file, opened for one run. Not thread-safe except as documented."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: JournalError | None = None
        #: Recipients the journal moved aside by this run's ``--restart`` had sent to.
        self.carried_over = 0
        #: Recipients not to send again: every ``--restart`` of this campaign so far carried.
        self.carried: Carried | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path, *, identity: dict[str, str], destination: str, restart: bool = False
    ) -> Journal:
        """Open (or create) the journal at ``path`` for the campaign described by ``identity``.

        ``identity`` holds what makes two runs the same campaign (the file's digest, the
        settings that change a message); ``destination`` names where its requests go (see
        :meth:`check_destination`). An existing journal for another identity or destination is
        refused with :class:`CampaignMismatchError`, unless ``restart``; then, and whenever
        ``restart`` is given, the old journal is moved aside (never deleted). A journal that
        cannot be created (a full disk) leaves nothing behind, and the old one is put back.
        """
        old: Path | None = None
        new = _empty(path)
        if path.exists() and restart:
            old = cls.move_aside(path)
        elif not new:
            cls._check_identity(path, identity)
            cls.check_destination(path, destination)
        db: sqlite3.Connection | None = None
        try:
            db = _create(path, identity, destination)
            journal = cls(path, db)
            if old is not None:
                journal.carried_over = _carry_over(db, old, destination)
            journal.carried = Carried.load(db)
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            if new or old is not None:
                _undo_creation(path, old)
            raise JournalError(
                f"cannot create the journal {path}: {exc}. Nothing was sent; fix the cause (disk "
                "space, permissions), then run the same command again"
            ) from None
        return journal

    @classmethod
    def known_rows(cls, path: Path, identity: dict[str, str], destination: str) -> int | None:
        """The data-row count an earlier run of this very campaign stored, if any.

        Raises :class:`CampaignMismatchError` if the journal belongs to another campaign or
        destination, so the refusal comes before any long scan of the file.
        """
        if _empty(path):
            return None
        rows = cls._check_identity(path, identity).get("rows", "")
        cls.check_destination(path, destination)
        return int(rows) if rows.isdigit() else None

    @classmethod
    def check_destination(cls, path: Path, destination: str) -> None:
        """Refuse to send elsewhere what another destination may already have received.

        A journal remembers where its requests went (the sandbox, or Kaleyra's URL with the
        SID and sender). Once anything may have arrived there, the campaign is bound to it: a
        rehearsal never counts for a real send, nor a real send for another account. While
        nothing has arrived, the destination may change: that is how a wrong SID or
        ``base_url`` is fixed before resuming.
        """
        stored = cls._read_identity(path).get("destination")
        if stored is None or stored == destination:
            return
        with _translated(path), contextlib.closing(sqlite3.connect(path)) as db:
            arrived = db.execute(
                f"SELECT COUNT(*) FROM messages WHERE status IN ({_sql_list(MAY_HAVE_ARRIVED)})"
            ).fetchone()[0]
        if arrived:
            raise CampaignMismatchError(_destination_message(path, stored, destination, arrived))

    @staticmethod
    def move_aside(path: Path) -> Path:
        """Rename the journal (checkpointed whole) to ``<name>.<UTC time>.bak``; return that."""
        try:
            with contextlib.closing(_connect(path)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise JournalError(_unreadable_message(path, exc)) from None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = path.with_name(f"{path.name}.{stamp}.bak")
        path.replace(target)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        if path.exists() or not target.exists():
            raise JournalError(f"could not move the old journal {path} aside to {target}")
        return target

    @classmethod
    def _check_identity(cls, path: Path, identity: dict[str, str]) -> dict[str, str]:
        """The stored meta, or :class:`CampaignMismatchError` if it is another campaign's."""
        stored = cls._read_identity(path)
        changed = [k for k, v in identity.items() if stored.get(k) != v]
        if changed:
            raise CampaignMismatchError(_mismatch_message(path, changed, stored))
        return stored

    @staticmethod
    def _read_identity(path: Path) -> dict[str, str]:
        try:
            with contextlib.closing(sqlite3.connect(path)) as db:
                tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
                if "meta" not in tables:
                    raise JournalError(_no_tables_message(path))
                return dict(db.execute("SELECT key, value FROM meta"))
        except sqlite3.Error as exc:
            raise JournalError(_unreadable_message(path, exc)) from None

    def meta(self, key: str) -> str | None:
        """A value stored with the journal (``rows``, ``created_at``, the identity)."""
        with _translated(self.path):
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def ledger_key(self) -> str:
        """The campaign's own id in the audience ledger: made once, kept by every resume."""
        key = self.meta("ledger_key")
        if key is None:
            key = uuid.uuid4().hex
            self.set_meta("ledger_key", key)
        return key

    def set_meta(self, key: str, value: str) -> None:
        """Store a value with the journal (before the writer starts)."""
        with _translated(self.path), self._db:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- resuming --------------------------------------------------------------------------

    def resume_state(self, *, resend_unknown: bool = False) -> ResumeState:
        """Turn rows left in flight into ``unknown`` and summarise what is done.

        Raises :class:`JournalError` if the journal cannot be read (a damaged page) or written.

        With ``resend_unknown``, ``unknown`` messages count as not done, so they are sent again.
        The dedupe seed is not loaded here: whoever plans loads it, in a thread, while it skips
        the finished rows of the campaign file (:meth:`ResumeState.start_seen_loader`).
        Built for a million rows in well under a second: two table scans whose results come
        back as one comma-joined string each (parsed by numpy).
        """
        with _translated(self.path):
            return self._resume_state(resend_unknown=resend_unknown)

    def _resume_state(self, *, resend_unknown: bool) -> ResumeState:
        final = FINAL - {Status.UNKNOWN} if resend_unknown else FINAL
        is_final = f"status IN ({_sql_list(final)})"
        counts, in_flight, single_done, retried = self._scan_states(is_final)
        crashed = 0
        if in_flight:
            crashed = self.settle_in_flight()
            counts, _, single_done, retried = self._scan_states(is_final)
        state = ResumeState(crashed=crashed)
        state.done.update({k: v for k, v in counts.items() if k in final and v})
        done_rows = _ints(single_done)
        multi = self._db.execute(
            f"SELECT row, SUM({is_final}) >= MAX(parts) FROM messages WHERE parts > 1 GROUP BY row"
        ).fetchall()
        complete = [row for row, whole in multi if whole]
        last_row = max([0, *complete, int(done_rows.max()) if len(done_rows) else 0])
        state.rows_done = bytearray(last_row + 1)
        flags = np.frombuffer(state.rows_done, dtype=np.uint8)
        flags[done_rows] = 1
        flags[np.array(complete, dtype=np.int64)] = 1
        for row in (row for row, whole in multi if not whole):
            for part, status in self._db.execute(
                "SELECT part, status FROM messages WHERE row = ?", (row,)
            ):
                if status in final:
                    state.parts_done.add((row, part))
        for item in filter(None, (retried or "").split(",")):
            key, attempts = item.split(":")
            state.attempts[unpack(int(key))] = int(attempts)
        return state

    def settle_in_flight(self) -> int:
        """Record every message still ``in_flight`` as ``unknown``; return how many there were.

        A run that died (or abandoned its requests after a stop) left them: each may have
        reached Kaleyra. Call with the writer stopped.
        """
        with self._db:
            settled: int = self._db.execute(
                f"UPDATE messages SET status = '{Status.UNKNOWN}', code = 'INTERRUPTED',"
                f" error = ?, finished_at = ? WHERE status = '{Status.IN_FLIGHT}'",
                (
                    "the run stopped while this request was in flight; it may have been delivered",
                    utc_now(),
                ),
            ).rowcount
        return settled

    def _scan_states(self, is_final: str) -> tuple[dict[Status, int], int, str, str]:
        """One pass: messages by status, rows in flight, finished one-message rows, retries."""
        statuses = sorted(FINAL | {Status.NOT_SENT, Status.IN_FLIGHT})
        sums = ", ".join(f"SUM(status = '{s}')" for s in statuses)
        query = (
            f"SELECT {sums},"
            f" group_concat(CASE WHEN parts = 1 AND {is_final} THEN row END),"
            f" group_concat(CASE WHEN NOT {is_final} AND attempts > 0"
            f" THEN (row << {_PART_BITS} | part) || ':' || attempts END)"
            " FROM messages"
        )
        *values, single_done, retried = self._db.execute(query).fetchone()
        counts = {s: int(v or 0) for s, v in zip(statuses, values, strict=True)}
        return counts, counts[Status.IN_FLIGHT], single_done or "", retried or ""

    # -- writing (async, through the writer thread) ----------------------------------------

    def start_writer(self) -> None:
        """Start the writer thread; call inside the running loop, before any write."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._write_loop, name="journal", daemon=True)
        self._thread.start()

    async def write(self, record: Record) -> None:
        """Commit ``record`` (replacing the message's row) and wait until it is on disk.

        A record with status ``in_flight`` says the request is about to leave.
        """
        self._raise_if_failed()
        assert self._loop is not None, "start_writer() first"
        waiter: _Waiter = self._loop.create_future()
        self._queue.put(("record", record, waiter))
        await waiter

    def write_later(self, record: Record) -> None:
        """Queue ``record`` for the next commit without waiting (``flush`` waits for it)."""
        self._raise_if_failed()
        self._queue.put(("record", record, None))

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        self._raise_if_failed()
        assert self._loop is not None, "start_writer() first"
        waiter: _Waiter = self._loop.create_future()
        self._queue.put(("flush", (), waiter))
        await waiter

    def stop_writer(self) -> None:
        """Commit what is queued and end the writer thread (blocks)."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _write_loop(self) -> None:
        assert self._loop is not None
        db = _connect(self.path)
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < 8192:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                # After a failure nothing more is written, but the thread stays until told to
                # stop, so every write queued after it is answered with the error, not left
                # waiting forever.
                error = self._failure or self._commit(db, batch)
                waiters = [waiter for _, _, waiter in batch if waiter is not None]
                if waiters:
                    self._loop.call_soon_threadsafe(_settle, waiters, error)
                if any(item is _STOP for item in batch):
                    return
        finally:
            db.close()

    def _commit(self, db: sqlite3.Connection, batch: list[_Item]) -> JournalError | None:
        # Every write is an upsert of the message's whole row. Records are queued in the order
        # made, so a message's last record in the batch is its newest: keep only that one.
        latest = {(params[0], params[1]): params for kind, params, _ in batch if kind == "record"}
        rows = list(latest.values())
        try:
            db.execute("BEGIN IMMEDIATE")
            if rows:
                _upsert_all(db, rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._failure = JournalError(
                f"cannot write the journal {self.path}: {exc}. Nothing more is sent; fix the "
                "cause (disk space, permissions), then run the same command again to resume"
            )
            return self._failure
        return None

    # -- reading ---------------------------------------------------------------------------

    def records(self) -> Iterator[Record]:
        """Every message's record, in input order (by row, then part).

        Raises :class:`JournalError` if a page of the journal cannot be read.
        """
        query = f"SELECT {', '.join(_quoted(c) for c in _COLUMNS)} FROM messages ORDER BY row, part"
        with _translated(self.path), contextlib.closing(_connect(self.path)) as reader:
            for values in reader.execute(query):
                yield Record._make(values)

    def close(self) -> None:
        """Stop the writer and close the file."""
        self.stop_writer()
        self._db.close()


def _settle(waiters: list[_Waiter], error: JournalError | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


def _empty(path: Path) -> bool:
    """Whether no journal, or one that never committed anything (0 bytes, no write-ahead log).

    A file left empty by a disk that was full when it was created holds no record, so the run
    may start afresh; one with any byte in it or in its -wal file is never overwritten, and
    neither is an empty one beside a results file or an older journal: something (a recovery
    gone wrong, a file emptied by hand) lost a record that existed, and starting afresh would
    send its rows again.
    """
    if not path.exists():
        return True
    wal = Path(f"{path}-wal")
    if path.stat().st_size or (wal.exists() and wal.stat().st_size):
        return False
    results = path.with_name(path.name.removesuffix(".journal"))
    return not results.exists() and not any(path.parent.glob(f"{glob.escape(path.name)}.*.bak"))


def _create(path: Path, identity: dict[str, str], destination: str) -> sqlite3.Connection:
    """Open the journal file, creating its tables if it has none (a new or 0-byte file)."""
    db = _connect(path)
    try:
        with db:
            if db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
                db.executescript(_SCHEMA)
                db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [*identity.items(), ("schema", _SCHEMA_VERSION), ("created_at", utc_now())],
                )
            db.execute(_CARRIED)
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('destination', ?)", (destination,)
            )
    except BaseException:
        db.close()
        raise
    return db


def _undo_creation(path: Path, old: Path | None) -> None:
    """Remove the journal files a failed start created, and put back the journal it moved
    aside, so that the next run finds what this one found.

    Without this a half-created journal (tables but no identity, after a full disk) would be
    refused by every later run as another campaign's; and after a ``--restart``, the next one
    would not find the old journal to carry over from.
    """
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm"), path):
        with contextlib.suppress(OSError):
            leftover.unlink()
    if old is not None:
        with contextlib.suppress(OSError):
            old.replace(path)


def _carry_over(db: sqlite3.Connection, old: Path, destination: str) -> int:
    """Copy what the journal moved aside at ``old`` records as (possibly) sent; return how many.

    Only from a journal of the same destination: a rehearsal's record never holds back the
    real send. What the old journal had itself carried over comes along.
    """
    with contextlib.closing(sqlite3.connect(old)) as source:
        stored = dict(source.execute("SELECT key, value FROM meta")).get("destination")
        tables = {name for (name,) in source.execute("SELECT name FROM sqlite_master")}
    if stored not in (None, destination):
        return 0
    db.execute("ATTACH DATABASE ? AS old", (str(old),))
    try:
        with db:
            db.execute(
                "INSERT OR IGNORE INTO carried(number, status, at, source)"
                ' SELECT "to", status, finished_at, ? FROM old.messages'
                f" WHERE status IN ({_sql_list(MAY_HAVE_ARRIVED)})",
                (old.name,),
            )
            if "carried" in tables:
                db.execute("INSERT OR IGNORE INTO carried SELECT * FROM old.carried")
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('carried_from', ?)", (str(old),)
            )
    finally:
        db.execute("DETACH DATABASE old")
    return int(db.execute("SELECT COUNT(*) FROM carried").fetchone()[0])


def _recovery(path: Path) -> str:
    return (
        f"It is the record of what this campaign already sent: do not delete it. If its -wal "
        f"file was deleted or moved, put it back beside it as {path.name}-wal. Otherwise keep "
        f"a copy and let SQLite read what it can: sqlite3 {path} .dump | sqlite3 "
        f"{path}.recovered, then move {path.name}.recovered to {path.name}; rows SQLite could "
        "not read are missing from it and would be sent again. --restart or another --out "
        "cannot carry over anything from a journal that cannot be read: every row would be "
        "sent again, including rows already sent"
    )


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    """SQLite's errors while using the journal at ``path``, as :class:`JournalError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _journal_error(path, exc) from None


def _journal_error(path: Path, exc: sqlite3.Error) -> JournalError:
    """A damaged file gets the advice to recover it; anything else (disk full, permissions,
    an I/O error) says what to fix."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return JournalError(_unreadable_message(path, exc))
    return JournalError(
        f"cannot use the journal {path} ({exc}). Nothing more is sent; fix the cause (disk "
        "space, permissions), then run the same command again to resume"
    )


def _unreadable_message(path: Path, exc: sqlite3.Error) -> str:
    return f"cannot read the journal {path} ({exc}). {_recovery(path)}"


def _no_tables_message(path: Path) -> str:
    return f"the journal {path} holds no bulk-sender tables. {_recovery(path)}"


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except BaseException:
        db.close()
        raise
    return db


def _sql_list(statuses: frozenset[Status]) -> str:
    """``'a', 'b'``: statuses as SQL string literals (their values never hold a quote)."""
    return ", ".join(f"'{status}'" for status in sorted(statuses))


def _quoted(column: str) -> str:
    return f'"{column}"'


def _describe(destination: str) -> str:
    return "the sandbox (a rehearsal)" if destination == SANDBOX else destination


def _destination_message(path: Path, stored: str, destination: str, arrived: int) -> str:
    return (
        f"{path} records {arrived:,} messages sent (or possibly sent) to {_describe(stored)}, "
        f"and this run would send to {_describe(destination)}. One campaign's record cannot "
        "mix the two. To finish the campaign, run it with the settings it started with. To send "
        f"to {_describe(destination)} as a campaign of its own, give it its own --out (a "
        "--sandbox run without --out already writes NAME.sandbox.results.csv): that run sends "
        "every row, because nothing has been sent there yet."
    )


def _mismatch_message(path: Path, changed: list[str], stored: dict[str, str]) -> str:
    what = {
        "file_sha256": "the campaign file's contents changed",
        "settings": "settings that change the message (body text, retailer id, wa_source, "
        "default_region, allow_duplicates, encoding) changed",
    }
    reasons = "; ".join(what.get(key, f"{key} changed") for key in changed)
    source = stored.get("input", "another campaign file")
    return (
        f"{path} belongs to a campaign started from {source} and {reasons} since. Resuming "
        "would mix two campaigns. Run the same command with --restart to start afresh: the old "
        "journal is kept as a .bak file, and no recipient it records as sent (or possibly "
        "sent) is sent again. Another --out would instead start a separate campaign that sends "
        "every row, including to recipients this journal already sent to."
    )


#: Recipients the journal moved aside by ``--restart`` had (possibly) sent to.
_CARRIED = """
CREATE TABLE IF NOT EXISTS carried (
    number TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    source TEXT NOT NULL
) WITHOUT ROWID
"""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE messages (
    row INTEGER NOT NULL,
    part INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    "to" TEXT NOT NULL,
    status TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    http_status INTEGER,
    code TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    ref TEXT NOT NULL DEFAULT '',
    ref1 TEXT NOT NULL DEFAULT '',
    ref2 TEXT NOT NULL DEFAULT '',
    warning TEXT NOT NULL DEFAULT '',
    finished_at TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (row, part)
) WITHOUT ROWID;
"""
