"""A ledger that already knows the campaign's recipients, for the ledger-backed measurements.

:func:`fill_ledger` writes, through the ledger's own schema (it is created by opening it as
bulk-sender does), one send to each of ``count`` recipients of :func:`workload.recipients`,
three hours ago, by an earlier campaign: every tenth with the very message the bench campaign
sends (the repeat guard holds those back), the others with another; and every hundredth
recipient opted out by a STOP reply. So a dry run or a send of the bench campaign finds facts
for every one of its recipients and holds back about 11 %. Written directly with one
transaction (no fsync per row): making a million-recipient ledger by sending to it would take
longer than the whole benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from workload import BODY_TEXT, RETAILER_ID, recipients

from bulk_sender.sending.payload import content_key
from bulk_sender.stores.ledger import open_ledger

__all__ = ["fill_ledger", "held_back"]

_HOUR_MS = 3_600_000
_REPEAT_EVERY = 10
_OPTED_OUT_EVERY = 100


def held_back(count: int) -> int:
    """How many of the first ``count`` recipients the filled ledger holds back."""
    repeats = {i for i in range(0, count, _REPEAT_EVERY)}
    opted = {i for i in range(0, count, _OPTED_OUT_EVERY)}
    return len(repeats | opted)


def fill_ledger(path: Path, count: int) -> Path:
    """A fresh ledger at ``path`` knowing ``count`` recipients (see the module docstring)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    asyncio.run(_create(path))
    now = time.time_ns() // 1_000_000
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN")
        (campaign,) = db.execute(
            "INSERT INTO campaigns (key, name, started_at) VALUES ('bench-earlier',"
            " 'earlier.csv', ?) RETURNING id",
            (now,),
        ).fetchone()
        db.executemany(
            "INSERT INTO sends (recipient, at, content, campaign, msg_row, msg_part)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            _sends(count, campaign, now - 3 * _HOUR_MS),
        )
        db.executemany(
            "INSERT INTO recipients (recipient, opted_out, opt_at, opt_by)"
            " VALUES (?, 1, ?, 'a STOP reply')",
            (
                (int(person.to[1:]), now - _HOUR_MS)
                for i, person in enumerate(recipients(count))
                if i % _OPTED_OUT_EVERY == 0
            ),
        )
        db.execute("COMMIT")
    return path


async def _create(path: Path) -> None:
    ledger = await open_ledger(str(path))
    assert ledger is not None
    await ledger.close()


def _sends(count: int, campaign: int, at: int) -> Iterator[tuple[int, int, int, int, int]]:
    other = content_key("An earlier message", RETAILER_ID)
    for i, person in enumerate(recipients(count)):
        same = i % _REPEAT_EVERY == 0
        content = (
            content_key(BODY_TEXT.format(first_name=person.first_name), RETAILER_ID)
            if same
            else other
        )
        yield int(person.to[1:]), at, content, campaign, i + 1
