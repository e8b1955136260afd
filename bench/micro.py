"""Micro-measurements quoted in the README: fsync and commit cost, the journal alone, E.164 speed.

Run: ``python bench/micro.py`` (a few seconds; files go to a temporary directory).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import phonenumbers

from bulk_sender.input.phone import normalise
from bulk_sender.model import Record
from bulk_sender.record.journal import Journal


def fsync_and_commit(folder: Path, loops: int = 200) -> tuple[float, float]:
    """Milliseconds per fsync of a small append, and per WAL commit of 32 rows."""
    fd = os.open(folder / "f.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    started = time.perf_counter()
    for _ in range(loops):
        os.write(fd, b"x" * 100)
        os.fsync(fd)
    fsync_ms = (time.perf_counter() - started) / loops * 1000
    os.close(fd)
    db = sqlite3.connect(folder / "t.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (a, b)")
    started = time.perf_counter()
    for i in range(loops):
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(i, j) for j in range(32)])
        db.execute("COMMIT")
    db.close()
    return fsync_ms, (time.perf_counter() - started) / loops * 1000


async def journal_alone(folder: Path, messages: int = 40_000, workers: int = 64) -> float:
    """Messages per second through the journal alone, written as the engine writes them: an
    awaited durable ``in_flight`` record, then the outcome queued behind it."""
    journal = Journal.open(folder / "j.journal", identity={"bench": "micro"}, destination="bench")
    journal.start_writer()

    async def worker(first: int) -> None:
        for row in range(first, messages, workers):
            record = Record(row=row + 1, to="+919876543210", status="in_flight", attempts=1)
            await journal.write(record)
            journal.write_later(record._replace(status="sent", message_id="A1", code="WA202"))

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    await journal.flush()
    rate = messages / (time.perf_counter() - started)
    journal.close()
    return rate


def phone_speed(count: int = 50_000) -> tuple[float, float]:
    """Microseconds per number: our normaliser, and phonenumbers' parse + is_valid_number."""
    numbers = [f"+9198{i:08d}" for i in range(count)]
    started = time.perf_counter()
    for number in numbers:
        normalise(number, "IN")
    ours = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    for number in numbers:
        phonenumbers.is_valid_number(phonenumbers.parse(number, "IN"))
    return ours, (time.perf_counter() - started) / count * 1e6


def main() -> int:
    """Print each figure on a line of its own."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        fsync_ms, commit_ms = fsync_and_commit(folder)
        print(f"fsync of a small append: {fsync_ms:.2f} ms")
        print(f"SQLite WAL commit (synchronous=FULL) of 32 rows: {commit_ms:.2f} ms")
        rate = asyncio.run(journal_alone(folder))
        print(f"journal alone, one awaited + one queued write a message: {rate:,.0f} msg/s")
    ours, library = phone_speed()
    print(f"E.164 check per clean number: bulk_sender {ours:.1f} us, phonenumbers {library:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
