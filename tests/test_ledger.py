"""The audience ledger's backends: takes, settlements, opt-outs, incoming messages.

Every test runs on both backends (an SQLite file, a PostgreSQL schema: the ``backend`` and
``new_location`` fixtures). The take is proved equal to the pure rules
(:func:`bulk_sender.audience.rules.judge`) over generated ledgers; the concurrency guarantee
across processes is proved end to end in ``test_audience_send.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_sender.audience.incoming import IncomingText, apply_incoming, iso_ms
from bulk_sender.audience.rules import HOUR_MS, Facts, Limits, OptOut, PastSend, Rule, judge
from bulk_sender.config import AudienceSettings
from bulk_sender.stores.ledger import (
    Ledger,
    OptChange,
    StoreError,
    TakeRequest,
    open_ledger,
)
from bulk_sender.stores.locations import is_postgres
from tests.conftest import LocationFactory
from tests.delivery_helpers import query

NOW = 1_795_000_000_000
DAY = 24 * HOUR_MS
A, B = 919845000001, 919845000002
T = TypeVar("T")


def _run(location: str, body: Callable[[Ledger], Awaitable[T]]) -> T:
    async def main() -> T:
        ledger = await open_ledger(location)
        assert ledger is not None
        try:
            return await body(ledger)
        finally:
            await ledger.close()

    return asyncio.run(main())


def _request(
    campaign: int, recipient: int, *, row: int = 1, content: int = 7, limits: Limits | None = None
) -> TakeRequest:
    bounds = (limits or Limits(cap_messages=1, cap_ms=DAY)).bounds(NOW)
    return TakeRequest(recipient, content, campaign, row, 0, NOW, bounds)


def test_a_slot_taken_holds_back_the_same_message_from_another_campaign(backend: str) -> None:
    """The second campaign's take is refused with the facts that explain it."""

    async def body(ledger: Ledger) -> tuple[Facts | None, Facts | None]:
        first = await ledger.register_campaign("key-1", "diwali-1.csv")
        second = await ledger.register_campaign("key-2", "diwali-2.csv")
        return await ledger.take(_request(first, A)), await ledger.take(_request(second, A))

    taken, refused = _run(backend, body)
    assert taken is None
    assert refused is not None
    assert [(s.campaign, s.content) for s in refused.sends] == [("diwali-1.csv", 7)]


def test_a_resume_renews_its_own_slot_instead_of_being_held_back(backend: str) -> None:
    """Taking the same message again (a run that died before it sent) is not a repeat."""

    async def body(ledger: Ledger) -> list[Facts | None]:
        campaign = await ledger.register_campaign("key-1", "c.csv")
        again = await ledger.register_campaign("key-1", "c.csv")
        assert again == campaign
        return [await ledger.take(_request(campaign, A)) for _ in range(2)]

    assert _run(backend, body) == [None, None]
    assert query(backend, "SELECT COUNT(*) FROM sends") == [(1,)]


def test_a_slot_given_back_is_free_and_a_kept_one_is_not(backend: str) -> None:
    """Given back: the next campaign may send; kept: it may not."""

    async def body(ledger: Ledger) -> tuple[Facts | None, Facts | None]:
        first = await ledger.register_campaign("key-1", "a.csv")
        second = await ledger.register_campaign("key-2", "b.csv")
        assert await ledger.take(_request(first, A)) is None
        assert await ledger.take(_request(first, B, row=2)) is None
        ledger.release_later(first, 1, 0)
        await ledger.flush()
        freed = await ledger.take(_request(second, A))
        return freed, await ledger.take(_request(second, B, row=2))

    freed, kept = _run(backend, body)
    assert freed is None
    assert kept is not None
    assert sorted(query(backend, "SELECT recipient, campaign FROM sends")) == [(A, 2), (B, 1)]


def test_a_renewed_slot_is_never_given_back(backend: str) -> None:
    """A slot taken again by a later run of the same message stays, even if that run's attempt
    never arrived: the first run's attempt may have."""

    async def body(ledger: Ledger) -> Facts | None:
        first = await ledger.register_campaign("key-1", "a.csv")
        second = await ledger.register_campaign("key-2", "b.csv")
        assert await ledger.take(_request(first, A)) is None
        assert await ledger.take(_request(first, A)) is None  # the resume
        ledger.release_later(first, 1, 0)
        await ledger.flush()
        return await ledger.take(_request(second, A))

    assert _run(backend, body) is not None


def test_takes_in_one_commit_for_one_recipient_see_each_other(backend: str) -> None:
    """Two messages to one recipient committed together under a cap of 1: exactly one gets in."""

    async def body(ledger: Ledger) -> list[Facts | None]:
        campaign = await ledger.register_campaign("key-1", "c.csv")
        requests = [_request(campaign, A, row=row, content=row) for row in range(1, 6)]
        return list(await asyncio.gather(*(ledger.take(q) for q in requests)))

    answers = _run(backend, body)
    assert sum(answer is None for answer in answers) == 1


def test_each_take_of_a_batch_gets_its_own_answer_when_some_are_refused(backend: str) -> None:
    """Takes for several recipients queued together, some held by a slot another campaign has:
    the others get in, and each refused one gets its own recipient's facts."""
    recipients = [A + 10 * i for i in range(8)]

    async def body(ledger: Ledger) -> list[Facts | None]:
        first = await ledger.register_campaign("key-1", "a.csv")
        second = await ledger.register_campaign("key-2", "b.csv")
        for to in recipients[::3]:
            assert await ledger.take(_request(first, to, row=to % 1000, content=to % 97)) is None
        requests = [_request(second, to, row=row) for row, to in enumerate(recipients, 1)]
        return list(await asyncio.gather(*(ledger.take(q) for q in requests)))

    answers = _run(backend, body)
    held = [to for to, answer in zip(recipients, answers, strict=True) if answer is not None]
    assert held == recipients[::3]
    for to, answer in zip(recipients, answers, strict=True):
        if answer is not None:
            assert [(s.campaign, s.content) for s in answer.sends] == [("a.csv", to % 97)]


def test_opt_changes_keep_the_latest_whatever_order_they_arrive_in(backend: str) -> None:
    """A START older than the STOP it follows in arrival changes nothing; a newer one opts in."""

    async def body(ledger: Ledger) -> list[int]:
        out = OptChange(A, True, NOW, "a STOP reply")
        old_in = OptChange(A, False, NOW - 1000, "a START reply")
        counts = [await ledger.change_opt([out]), await ledger.change_opt([old_in])]
        assert [row.recipient for row in await ledger.opt_outs()] == [A]
        counts.append(await ledger.change_opt([OptChange(A, False, NOW + 1000, "a START reply")]))
        assert await ledger.opt_outs() == []
        return counts

    assert _run(backend, body) == [1, 0, 1]


def _recipients(location: str) -> dict[int, tuple[int, int, str, int | None]]:
    """The ledger's recipients table: opted_out, opt_at, opt_by, last_incoming."""
    rows = query(
        location, "SELECT recipient, opted_out, opt_at, opt_by, last_incoming FROM recipients"
    )
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def test_replies_opt_out_and_in_and_note_when_the_customer_wrote(backend: str) -> None:
    """What the receiver hands over: STOP opts out, START later opts in, every message counts
    for the service window, a repeated delivery changes nothing."""
    audience = AudienceSettings()
    path = backend
    stop = IncomingText(str(A), "2026-11-20T10:00:00.000Z", "Stop.")
    chat = IncomingText(str(B), "2026-11-20T11:00:00.000Z", "Is the red one in stock?")
    first = _run(path, lambda ledger: apply_incoming(ledger, [stop, chat, stop], audience))
    assert (first.noted, first.keywords, first.changed) == (3, 2, 1)
    assert _recipients(path) == {
        A: (1, iso_ms(stop.at), "a STOP reply", iso_ms(stop.at)),
        B: (0, 0, "", iso_ms(chat.at)),
    }
    start = IncomingText(str(A), "2026-11-20T12:00:00Z", "START")
    _run(path, lambda ledger: apply_incoming(ledger, [start], audience))
    assert _recipients(path)[A] == (0, iso_ms(start.at), "a START reply", iso_ms(start.at))


def _has_ledger(location: str) -> bool:
    """Whether anything of a ledger is at ``location`` (a file; tables in the schema)."""
    if is_postgres(location):
        return query(location, "SELECT to_regclass('ledger_meta')") != [(None,)]
    return Path(location).exists()


def test_a_read_only_open_creates_nothing(backend: str) -> None:
    """A rehearsal or a dry run over no ledger finds none and leaves none behind."""

    async def main() -> Ledger | None:
        return await open_ledger(backend, read_only=True)

    assert asyncio.run(main()) is None
    assert not _has_ledger(backend)


def test_a_ledger_of_another_schema_version_is_refused_at_open(backend: str) -> None:
    """Written by a newer bulk-sender: refused, for writing and for reading, saying so."""
    _run(backend, lambda ledger: ledger.flush())
    newer = "UPDATE ledger_meta SET value = '2' WHERE key = 'schema'"
    if is_postgres(backend):
        query(backend, newer)
    else:
        with closing(sqlite3.connect(backend)) as db, db:
            db.execute(newer)
    for read_only in (False, True):
        with pytest.raises(StoreError, match="schema version 2, newer than this bulk-sender"):
            asyncio.run(open_ledger(backend, read_only=read_only))


def test_a_send_exactly_a_window_ago_no_longer_counts(backend: str) -> None:
    """The repeat guard and the cap count sends after now - window, not at it: in the take,
    the screen and the dry run's snapshot alike."""
    limits = Limits(repeat_ms=DAY, cap_messages=1, cap_ms=DAY)

    async def body(ledger: Ledger) -> Facts | None:
        first = await ledger.register_campaign("key-1", "a.csv")
        second = await ledger.register_campaign("key-2", "b.csv")
        old = TakeRequest(A, 7, first, 1, 0, NOW - DAY, limits.bounds(NOW - DAY))
        assert await ledger.take(old) is None
        assert await ledger.screen([f"+{A}"], [7], limits.bounds(NOW)) == {}
        snapshot = await ledger.snapshot(sends_since=NOW - 2 * DAY, incoming=False)
        assert snapshot.screen([f"+{A}"], [7], limits.bounds(NOW)) == {}
        return await ledger.take(_request(second, A, limits=limits))

    assert _run(backend, body) is None


def test_a_customer_who_wrote_exactly_24_hours_ago_is_outside_the_window(backend: str) -> None:
    """service_window = "skip": the window is the last 24 h, its first instant excluded."""
    limits = Limits(repeat_ms=0, window="skip")

    async def body(ledger: Ledger) -> list[Facts | None]:
        campaign = await ledger.register_campaign("key-1", "a.csv")
        await ledger.note_incoming([(A, NOW - DAY), (B, NOW - DAY + 1)])
        requests = [_request(campaign, r, row=r % 10, limits=limits) for r in (A, B)]
        return [await ledger.take(q) for q in requests]

    outside, inside = _run(backend, body)
    assert outside is not None and outside.last_incoming == NOW - DAY
    assert inside is None


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    """Another SQLite database at the ledger's path is never written into."""
    with sqlite3.connect(tmp_path / "journal.db") as db:
        db.execute("CREATE TABLE messages (x)")
    with pytest.raises(StoreError, match="not a bulk-sender audience ledger"):
        _run(str(tmp_path / "journal.db"), lambda ledger: ledger.flush())


# -- the take against the pure rules -------------------------------------------------------------

_SENDS = st.lists(
    st.tuples(
        st.sampled_from([A, B]),
        st.sampled_from([0, 1, 5, 6, 7, 23, 24, 25, 47, 48, 60]),  # hours ago: the bounds too
        st.sampled_from([7, 8]),  # content
        st.sampled_from([1, 2]),  # campaign
        st.integers(min_value=1, max_value=3),  # row
    ),
    max_size=8,
)
_LIMITS = st.builds(
    Limits,
    repeat_ms=st.sampled_from([0, 6 * HOUR_MS, DAY]),
    cap_messages=st.sampled_from([0, 1, 2]),
    cap_ms=st.sampled_from([DAY, 48 * HOUR_MS]),
    window=st.sampled_from(["off", "skip"]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sends=_SENDS,
    limits=_LIMITS,
    opted=st.booleans(),
    wrote=st.none() | st.sampled_from([0, 1, 23, 24, 25, 48]),
    row=st.integers(min_value=1, max_value=3),
)
def test_the_stores_take_is_the_pure_rule(
    new_location: LocationFactory,
    sends: list[tuple[int, int, int, int, int]],
    limits: Limits,
    opted: bool,
    wrote: int | None,
    row: int,
) -> None:
    """Over any ledger, the SQL take refuses exactly when judge() holds the message back, and
    the facts it returns make judge() name the same rule; the read-only screen, and the dry
    run's screen over a snapshot, agree."""
    path = new_location()
    last_incoming = None if wrote is None else NOW - wrote * HOUR_MS
    if not is_postgres(path):
        sqlite3.connect(path).close()  # an empty file there: a ledger is made in it

    async def body(ledger: Ledger) -> Facts | None:
        names = {1: await ledger.register_campaign("k1", "one.csv")}
        names[2] = await ledger.register_campaign("k2", "two.csv")
        for index, (to, hours, content, campaign, sent_row) in enumerate(sends):
            at = NOW - hours * HOUR_MS
            past = TakeRequest(
                to,
                content,
                names[campaign],
                sent_row * 10 + index,
                0,
                at,
                Limits(repeat_ms=0).bounds(at),
            )
            assert await ledger.take(past) is None
        if opted:
            await ledger.change_opt([OptChange(A, True, NOW - DAY, "hand")])
        if last_incoming is not None:
            await ledger.note_incoming([(A, last_incoming)])
        bounds = limits.bounds(NOW)
        screened = await ledger.screen([f"+{A}"], [7], bounds)
        snapshot = await ledger.snapshot(sends_since=NOW - 100 * DAY, incoming=True)
        assert snapshot.screen([f"+{A}"], [7], bounds).keys() == screened.keys()
        taken = await ledger.take(TakeRequest(A, 7, names[1], row, 0, NOW, bounds))
        assert (0 in screened) == (taken is not None)  # the screen is the take, read only
        return taken

    answer = _run(path, body)
    recorded = [
        PastSend(NOW - hours * HOUR_MS, content, "one.csv" if c == 1 else "two.csv")
        for to, hours, content, c, _ in sends
        if to == A
    ]
    expected = judge(
        limits,
        Facts(OptOut(NOW - DAY, "hand") if opted else None, last_incoming, recorded),
        content=7,
        now=NOW,
    )
    assert (answer is None) == (expected is None)
    if answer is not None and expected is not None:
        got = judge(limits, answer, content=7, now=NOW)
        assert got is not None and got.rule == expected.rule
        assert got.rule in set(Rule)


def test_two_hosts_taking_the_same_recipients_at_once_never_exceed_the_cap(backend: str) -> None:
    """Two ledgers on one store (two hosts), each taking the same 300 recipients for another
    campaign, all at once, three times over, under a cap of 1: each recipient's slot goes to
    exactly one of them."""

    async def race(first: Ledger, second: Ledger, ids: list[int], start: int) -> list[int]:
        recipients = [A + start + n for n in range(300)]
        takes = [
            ledger.take(_request(campaign, to, row=start + n, content=campaign))
            for ledger, campaign in ((first, ids[0]), (second, ids[1]))
            for n, to in enumerate(recipients)
        ]
        got = [answer is None for answer in await asyncio.gather(*takes)]
        return [x + y for x, y in zip(got[:300], got[300:], strict=True)]

    async def main() -> list[int]:
        first, second = await open_ledger(backend), await open_ledger(backend)
        assert first is not None and second is not None
        try:
            ids = [await first.register_campaign("k1", "a.csv")]
            ids.append(await second.register_campaign("k2", "b.csv"))
            return [n for start in (0, 1000, 2000) for n in await race(first, second, ids, start)]
        finally:
            await first.close()
            await second.close()

    assert asyncio.run(main()) == [1] * 900
    assert query(backend, "SELECT COUNT(*) FROM sends") == [(900,)]
