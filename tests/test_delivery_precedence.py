"""The precedence rule, as properties: any order, any repeats, never backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_sender.delivery.codes import resend
from bulk_sender.delivery.events import RANK, DeliveryStatus, StatusEvent
from bulk_sender.delivery.precedence import DeliveryState, fold
from tests.strategies import status_events

S = DeliveryStatus


def event(
    status: DeliveryStatus, at: str = "2026-11-24T10:00:00.000Z", code: str = ""
) -> StatusEvent:
    """An event of message A1."""
    return StatusEvent(
        message_ids=("A1",), status=status, at=at, code=code, title="t" if code else ""
    )


@given(st.lists(status_events(), max_size=12), st.randoms())
def test_order_and_repeats_do_not_change_the_state(events: list[StatusEvent], rng: object) -> None:
    """Folding the same events shuffled and with repeats gives the same state."""
    import random

    assert isinstance(rng, random.Random)
    shuffled = events + rng.sample(events, k=len(events) // 2)
    rng.shuffle(shuffled)
    assert fold(shuffled) == fold(events)


@given(st.lists(status_events(), max_size=10), status_events())
def test_a_further_event_never_moves_a_message_backwards(
    events: list[StatusEvent], late: StatusEvent
) -> None:
    """Adding an event never lowers the rank nor loses a delivered or read time."""
    before, after = fold(events), fold([*events, late])
    assert after.rank >= before.rank
    assert after.rank == max([RANK[e.status] for e in [*events, late]])
    if before.delivered_at is not None:
        assert after.delivered_at is not None and after.delivered_at <= before.delivered_at
    if before.read_at is not None:
        assert after.read_at is not None


@given(st.lists(status_events(), min_size=1, max_size=10))
def test_the_state_is_the_highest_status_with_the_earliest_times(events: list[StatusEvent]) -> None:
    """delivered_at/read_at are the earliest of their kind; updated_at the latest of all."""
    state = fold(events)
    delivered = [e.at for e in events if e.status is S.DELIVERED]
    assert state.delivered_at == (min(delivered) if delivered else None)
    assert state.updated_at == max(e.at for e in events)
    assert state.status is max((e.status for e in events), key=RANK.__getitem__)


@pytest.mark.parametrize(
    ("statuses", "wins"),
    [
        ([S.SENT, S.DELIVERED], S.DELIVERED),
        ([S.READ, S.DELIVERED, S.SENT], S.READ),
        ([S.SENT, S.FAILED], S.FAILED),
        ([S.NOT_SENT, S.SENT], S.NOT_SENT),
        ([S.FAILED, S.DELIVERED], S.DELIVERED),
        ([S.READ, S.FAILED], S.READ),
        ([S.NOT_SENT, S.FAILED], S.FAILED),
    ],
)
def test_precedence_table(statuses: list[DeliveryStatus], wins: DeliveryStatus) -> None:
    """read > delivered > sent; failures outrank sent; delivered outranks a failure."""
    assert fold(event(s) for s in statuses).status is wins


def test_delivered_after_a_failure_hides_the_failure_code() -> None:
    """A message both failed and delivered shows delivered with no failure code."""
    state = fold([event(S.FAILED, code="131049"), event(S.DELIVERED)])
    assert state.cells()[:3] == ("delivered", "", "")


def test_the_earliest_failure_is_the_one_shown() -> None:
    """Of two failures, the earlier one's code and words are shown, whatever the order."""
    late = event(S.FAILED, at="2026-11-24T11:00:00.000Z", code="131049")
    early = event(S.FAILED, at="2026-11-24T10:00:00.000Z", code="131047")
    assert fold([late, early]).failure() == ("131047", "t")
    assert fold([early, late]).failure() == ("131047", "t")


def test_no_event_gives_empty_cells() -> None:
    """Without callbacks every delivery column is empty."""
    assert DeliveryState().cells() == ("",) * 6


NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "code", "last_wrote", "expected"),
    [
        (S.FAILED, "130429", None, True),
        (S.FAILED, "131049", None, True),
        (S.FAILED, "131026", None, False),
        (S.FAILED, "131050", None, False),
        (S.FAILED, "131047", None, False),
        (S.FAILED, "131047", (NOW - timedelta(hours=2)).isoformat(), True),
        (S.FAILED, "131047", (NOW - timedelta(hours=25)).isoformat(), False),
        (S.NOT_SENT, "", None, True),
        (S.FAILED, "999999", None, True),
    ],
)
def test_which_failures_are_worth_sending_again(
    status: DeliveryStatus, code: str, last_wrote: str | None, expected: bool
) -> None:
    """Rate limits, held back: yes; no WhatsApp, opted out: no; 131047 only in its window."""
    assert resend(status, code, last_wrote=last_wrote, now=NOW)[0] is expected
