"""The journal's resume state: what is done, what is partly done, what was in flight."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Final

import pytest

from bulk_sender.input.dedupe import unpack
from bulk_sender.model import Record
from bulk_sender.record import journal as journal_module
from bulk_sender.record.journal import Journal, JournalError

#: Longest any step may take before a test calls it a hang (the writer answers in milliseconds).
PATIENCE: Final = 20.0


def _journal(tmp_path: Path, records: list[Record]) -> Journal:
    journal = Journal.open(
        tmp_path / "r.csv.journal", identity={"file_sha256": "x"}, destination="t"
    )

    async def write() -> None:
        journal.start_writer()
        for record in records:
            await journal.write(record)
        journal.stop_writer()

    asyncio.run(write())
    return journal


def test_resume_state_summarises_every_kind_of_row(tmp_path: Path) -> None:
    """Done rows, partly done multi-number rows, retried rows and crashed rows are all found."""
    journal = _journal(
        tmp_path,
        [
            Record(row=1, part=0, parts=2, to="+911", status="sent", attempts=1),
            Record(row=1, part=1, parts=2, to="+912", status="not_sent", attempts=1),
            Record(row=2, to="+913", status="sent", attempts=1),
            Record(row=3, to="+914", status="in_flight", attempts=2),
            Record(row=4, to="+915", status="not_sent", attempts=3, code="E110"),
            Record(row=5, to="oops", status="invalid"),
            Record(row=6, part=0, parts=2, to="+916", status="sent", attempts=1),
            Record(row=6, part=1, parts=2, to="+917", status="duplicate"),
            Record(row=7, to="+918", status="unknown", attempts=1),
        ],
    )
    state = journal.resume_state()
    assert state.crashed == 1
    assert [row for row in range(1, 9) if state.row_done(row)] == [2, 3, 5, 6, 7]
    assert state.parts_done == {(1, 0)}
    assert state.attempts == {(1, 1): 1, (4, 0): 3}
    assert state.done == {"sent": 3, "unknown": 2, "invalid": 1, "duplicate": 1}
    state.start_seen_loader(journal.path)
    numbers, keys = state.seen()
    seen = dict(zip(numbers.tolist(), (unpack(k) for k in keys.tolist()), strict=True))
    assert seen == {
        911: (1, 0), 912: (1, 1), 913: (2, 0), 914: (3, 0), 915: (4, 0), 916: (6, 0), 918: (7, 0),
    }  # fmt: skip
    assert state.all_done(5, 3) and not state.all_done(4, 2) and not state.all_done(7, 5)
    crashed = {r.row: r for r in journal.records()}[3]
    assert (crashed.status, crashed.code) == ("unknown", "INTERRUPTED")
    journal.close()


def test_resend_unknown_counts_unknown_as_not_done(tmp_path: Path) -> None:
    """With --resend-unknown an unknown row is not done, and its attempts carry over."""
    journal = _journal(tmp_path, [Record(row=1, to="+911", status="unknown", attempts=1)])
    state = journal.resume_state(resend_unknown=True)
    assert not state.row_done(1)
    assert state.attempts == {(1, 0): 1}
    journal.close()


def test_empty_journal_has_nothing_done(tmp_path: Path) -> None:
    """A fresh journal resumes nothing and seeds no recipients."""
    state = _journal(tmp_path, []).resume_state()
    assert not state.row_done(1)
    assert state.done == {}
    assert [len(a) for a in state.seen()] == [0, 0]


def test_queued_writes_land_in_queue_order(tmp_path: Path) -> None:
    """Records queued without waiting are committed in queue order: for a message written
    several times the last record wins, however the writer groups them into statements."""
    journal = Journal.open(
        tmp_path / "r.csv.journal", identity={"file_sha256": "x"}, destination="t"
    )
    queued: list[Record] = []
    for row in range(1, 204):  # 203 rows: statements of 64, 8, 2 and 1 rows too
        queued.append(Record(row=row, to=f"+91{row}", status="in_flight", attempts=1))
        queued.append(Record(row=row, to=f"+91{row}", status="sent", attempts=1, code="WA202"))
    queued.append(Record(row=7, to="+917", status="unknown", attempts=2))

    async def write() -> None:
        journal.start_writer()
        for record in queued:
            journal.write_later(record)
        await journal.flush()
        journal.stop_writer()

    asyncio.run(write())
    stored = {r.row: r for r in journal.records()}
    assert len(stored) == 203
    assert stored[7].status == "unknown" and stored[7].attempts == 2
    assert {r.status for row, r in stored.items() if row != 7} == {"sent"}
    journal.close()


def test_writes_queued_behind_a_failed_commit_fail_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write queued while a commit is failing gets the error: it is never left waiting."""
    committing = threading.Event()  # the writer thread is inside the first commit
    queued = threading.Event()  # the second write is in the queue behind that commit
    commits: list[list[tuple[object, ...]]] = []

    def broken(db: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
        commits.append(rows)
        committing.set()
        queued.wait(PATIENCE)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(journal_module, "_upsert_all", broken)
    journal = Journal.open(
        tmp_path / "r.csv.journal", identity={"file_sha256": "x"}, destination="t"
    )

    async def write() -> list[BaseException | None]:
        journal.start_writer()
        first = asyncio.ensure_future(journal.write(Record(row=1, to="+911", status="in_flight")))
        assert await asyncio.to_thread(committing.wait, PATIENCE)
        # write() queues its record before it first waits, and this callback cannot run before
        # that wait: the commit fails only once the second record is queued behind it.
        asyncio.get_running_loop().call_soon(queued.set)
        second: BaseException | None = None
        try:
            async with asyncio.timeout(PATIENCE):
                await journal.write(Record(row=2, to="+912", status="in_flight"))
        except JournalError as exc:
            second = exc
        finally:
            async with asyncio.timeout(PATIENCE):
                [outcome] = await asyncio.gather(first, return_exceptions=True)
        journal.stop_writer()
        return [outcome if isinstance(outcome, BaseException) else None, second]

    outcomes = asyncio.run(write())
    assert [type(o).__name__ for o in outcomes] == ["JournalError", "JournalError"]
    assert "disk I/O error" in str(outcomes[1])
    assert [[row[0] for row in rows] for rows in commits] == [[1]]  # row 2 came after; no retry
    journal.close()
