"""The callback store and the merge in SQL, for every backend: idempotent, and equal to the
pure precedence rule."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_sender.delivery.events import Callback, DeliveryStatus, IncomingMessage, StatusEvent
from bulk_sender.delivery.parse import parse_status
from bulk_sender.delivery.precedence import DeliveryState, fold
from bulk_sender.model import Record
from bulk_sender.stores.sqlite_delivery import DeliveryRows
from tests.conftest import LocationFactory
from tests.delivery_helpers import (
    count_events,
    sent,
    store_factory,
    v2_status,
    write_journal,
)
from tests.strategies import status_events

NOW = "2026-11-24T10:00:01.000Z"
SINCE = "2026-11-24T00:00:00.000Z"


def _states(
    location: str,
    tmp_path: Path,
    records: Sequence[Record],
    callbacks: Sequence[Callback],
    *,
    since: str = SINCE,
) -> dict[tuple[int, int], DeliveryState]:
    """Store ``callbacks``, merge them with a journal of ``records``; states by (row, part)."""
    journal = write_journal(tmp_path / "r.csv.journal", records)

    async def run() -> None:
        store = await store_factory(location)()
        try:
            for callback in callbacks:
                await store.save(callback)
            await store.export_deliveries(journal=journal, since=since, into=tmp_path / "d.db")
        finally:
            await store.close()

    asyncio.run(run())
    return {
        (r.row, r.part): DeliveryState(
            rank=r.status_rank,
            delivered_at=r.delivered_at,
            read_at=r.read_at,
            updated_at=r.updated_at,
            failed=r.failed,
            not_sent=r.not_sent,
        )
        for r in DeliveryRows(tmp_path / "d.db").stream()
    }


def _callback(doc: dict[str, object]) -> Callback:
    return parse_status(doc, received_at=NOW)


def test_the_same_callback_twice_is_stored_once(
    new_location: LocationFactory, tmp_path: Path
) -> None:
    """A webhook retry adds no row and changes no state."""
    delivered = _callback(v2_status("DELIVERED"))
    once = _states(new_location(), tmp_path / "a", [sent(1, "A1")], [delivered])
    store = new_location()
    twice = _states(store, tmp_path / "b", [sent(1, "A1")], [delivered, delivered])
    assert once == twice
    assert once[(1, 0)].status is DeliveryStatus.DELIVERED
    assert count_events(store) == 1


@pytest.mark.parametrize("where", [0, 1, 2])
def test_any_of_the_three_ids_matches_the_202s_id(backend: str, tmp_path: Path, where: int) -> None:
    """statuses[].id, message_id or extra_info.message_id: whichever equals the 202's id."""
    ids = ["other-1", "other-2", "other-3"]
    ids[where] = "A1"
    callback = _callback(v2_status("READ", ids=(ids[0], ids[1], ids[2]), recipient="911111111"))
    states = _states(backend, tmp_path, [sent(1, "A1")], [callback])
    assert states[(1, 0)].status is DeliveryStatus.READ


def test_recipient_and_refs_match_when_no_id_does(backend: str, tmp_path: Path) -> None:
    """With no id in common, a unique recipient + refs within the campaign finds the message."""
    refs = {"ref": "diwali", "ref1": "c-7"}
    records = [
        sent(1, "A1", ref="diwali", ref1="c-7"),
        sent(2, "A2", to="+919876543211", ref="diwali", ref1="c-7"),
    ]
    callback = _callback(v2_status("DELIVERED", ids=("w1", "w1", "k1"), refs=refs))
    states = _states(backend, tmp_path, records, [callback])
    assert set(states) == {(1, 0)}
    assert states[(1, 0)].status is DeliveryStatus.DELIVERED


def test_recipient_and_refs_naming_two_messages_match_neither(backend: str, tmp_path: Path) -> None:
    """The fallback never guesses: the same recipient and refs twice in a campaign match none."""
    records = [sent(1, "A1"), sent(2, "A2")]
    callback = _callback(v2_status("DELIVERED", ids=("w1", "w1", "k1")))
    assert _states(backend, tmp_path, records, [callback]) == {}


def test_a_message_matched_by_id_takes_no_fallback_events(backend: str, tmp_path: Path) -> None:
    """Once a callback matched a message by id, events matched only by recipient are ignored."""
    by_id = _callback(v2_status("SENT"))
    other = _callback(v2_status("READ", ids=("w9", "w9", "k9")))
    states = _states(backend, tmp_path, [sent(1, "A1")], [by_id, other])
    assert states[(1, 0)].status is DeliveryStatus.SENT


def test_a_callback_before_the_campaign_began_is_not_matched_by_recipient(
    backend: str, new_location: LocationFactory, tmp_path: Path
) -> None:
    """The fallback ignores callbacks received before the campaign began; the id match does not."""
    by_recipient = _callback(v2_status("READ", ids=("w", "w", "k")))
    later = "2999-01-01T00:00:00.000Z"
    assert _states(backend, tmp_path / "a", [sent(1, "A1")], [by_recipient], since=later) == {}
    by_id = _callback(v2_status("READ"))
    states = _states(new_location(), tmp_path / "b", [sent(1, "A1")], [by_id], since=later)
    assert states[(1, 0)].status is DeliveryStatus.READ


def test_a_callback_for_an_unknown_message_is_kept_and_matched_later(
    backend: str, tmp_path: Path
) -> None:
    """A callback that arrives before the journal has its id is matched by a later merge."""
    early = _callback(
        v2_status("DELIVERED", ids=("wamid.A3", "wamid.A3", "A3"), recipient="919133000001")
    )
    assert _states(backend, tmp_path, [sent(1, "A1")], [early]) == {}
    later = [sent(1, "A1"), sent(2, "A3", to="+919133000001")]
    states = _states(backend, tmp_path, later, [])
    assert states[(2, 0)].status is DeliveryStatus.DELIVERED


def test_a_failed_message_knows_when_its_customer_last_wrote(backend: str, tmp_path: Path) -> None:
    """Failures carry the customer's latest incoming message time (for 131047's window)."""
    journal = write_journal(tmp_path / "r.csv.journal", [sent(1, "A1"), sent(2, "A2", to="+9122")])
    wrote = IncomingMessage(
        message_id="w-in", sender="919876543210", at="2026-11-24T09:00:00.000Z", type="text",
        body="hi",
    )  # fmt: skip

    async def run() -> None:
        store = await store_factory(backend)()
        await store.save(_callback(v2_status("FAILED", code=131047)))
        await store.save(Callback(incoming=(wrote,)))
        await store.export_deliveries(journal=journal, since=SINCE, into=tmp_path / "d.db")
        await store.close()

    asyncio.run(run())
    (row,) = DeliveryRows(tmp_path / "d.db").stream(failed_only=True)
    assert (row.row, row.last_incoming) == (1, "2026-11-24T09:00:00.000Z")


_ID_SETS = st.sampled_from([("A1",), ("wamid.A1", "A1"), ("A2",), ("A2", "wamid.A2"), ("x",)])
_RECIPIENTS = {"A1": "919876543210", "A2": "919876543211"}


def _owner(ids: tuple[str, ...]) -> str | None:
    return next((i for i in ids if i in _RECIPIENTS), None)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=st.lists(
        st.tuples(status_events(), _ID_SETS, st.sampled_from(sorted(_RECIPIENTS))), max_size=12
    )
)
def test_the_merge_in_sql_equals_the_pure_rule(
    new_location: LocationFactory, events: list[tuple[StatusEvent, tuple[str, ...], str]]
) -> None:
    """For any events, the store's SQL gives each message the state precedence.fold gives,
    matching by id first and by recipient only for messages and events no id matched."""
    made = [
        dataclasses.replace(e, message_ids=ids, recipient=_RECIPIENTS[_owner(ids) or who])
        for e, ids, who in events
    ]
    records = [sent(1, "A1"), sent(2, "A2", to="+919876543211")]
    with tempfile.TemporaryDirectory() as scratch:
        states = _states(new_location(), Path(scratch), records, [Callback(statuses=tuple(made))])
    unmatched = [e for e in made if not set(e.message_ids) & set(_RECIPIENTS)]
    for row, message_id in ((1, "A1"), (2, "A2")):
        mine = [e for e in made if message_id in e.message_ids] or [
            e for e in unmatched if e.recipient == _RECIPIENTS[message_id]
        ]
        assert states.get((row, 0), DeliveryState()) == fold(mine), message_id


def test_failures_differing_only_in_their_words_are_two_events(
    backend: str, tmp_path: Path
) -> None:
    """Same message, status, time and code but other details: both kept, the earliest shown."""
    worded = _callback(v2_status("FAILED", code=131049))
    bare = dataclasses.replace(worded.statuses[0], title="", detail="")
    states = _states(backend, tmp_path, [sent(1, "A1")], [worded, Callback(statuses=(bare,))])
    assert count_events(backend) == 2
    assert states[(1, 0)] == fold([worded.statuses[0], bare])
    assert states[(1, 0)].failure() == ("131049", "")


def test_health_checks_at_once_share_a_commit_and_all_succeed(backend: str) -> None:
    """Many concurrent heartbeats (one upserted row) in one batch: every check succeeds."""

    async def run() -> None:
        store = await store_factory(backend)()
        try:
            await asyncio.gather(*(store.check_writable() for _ in range(20)))
        finally:
            await store.close()

    asyncio.run(run())
