"""Pure: a message's delivery state from its status events, in whatever order they came.

Callbacks arrive late, out of order and more than once, so the state is a *join* of the events
(commutative, associative, idempotent): folding the same events in any order, with any
repeats, gives the same state, and a further event can never move a message backwards.

The order, lowest first (:data:`~.events.RANK`): ``sent`` < ``not_sent`` < ``failed`` <
``delivered`` < ``read``. So ``read`` beats ``delivered`` beats ``sent``; a failure beats
``sent``; and when a message has both a failure and ``delivered`` (or ``read``), it counts as
delivered: the customer's phone acknowledged it, so the failure was about something else (a
retried hop, a later receipt), and treating it as failed would put it in the ``--failed``
export and send the customer a second copy. Its failure code is then not shown.

Within one status the earliest event wins (``delivered_at`` is the first delivery), and for the
failure shown, the earliest failure (ties broken by code, then text). ``delivery_updated_at``
is the latest event's time. :mod:`bulk_sender.stores.sql` computes exactly this in SQL; a
property test checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from bulk_sender.delivery.events import RANK, DeliveryStatus, StatusEvent

__all__ = ["BY_RANK", "SEPARATOR", "DeliveryState", "failure_key", "fold"]

#: Joins the parts of a failure's sort key; never part of a stored value (parse removes it).
SEPARATOR: Final = "\x1f"
BY_RANK: Final[dict[int, DeliveryStatus]] = {rank: status for status, rank in RANK.items()}


def failure_key(event: StatusEvent) -> str:
    """``at``, code, title and detail joined: its minimum is the failure a report shows."""
    return SEPARATOR.join((event.at, event.code, event.title, event.detail))


def _least(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


def _most(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    return a if b is None or a >= b else b


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """The join of a message's events; ``DeliveryState()`` is "no callback yet"."""

    rank: int = 0
    delivered_at: str | None = None
    read_at: str | None = None
    updated_at: str | None = None
    failed: str | None = None  #: the failure key of the earliest ``failed`` event
    not_sent: str | None = None  #: the failure key of the earliest ``not_sent`` event

    @classmethod
    def of(cls, event: StatusEvent) -> DeliveryState:
        """The state one event alone gives."""
        status = event.status
        key = failure_key(event)
        return cls(
            rank=RANK[status],
            delivered_at=event.at if status is DeliveryStatus.DELIVERED else None,
            read_at=event.at if status is DeliveryStatus.READ else None,
            updated_at=event.at,
            failed=key if status is DeliveryStatus.FAILED else None,
            not_sent=key if status is DeliveryStatus.NOT_SENT else None,
        )

    def __or__(self, other: DeliveryState) -> DeliveryState:
        return DeliveryState(
            rank=max(self.rank, other.rank),
            delivered_at=_least(self.delivered_at, other.delivered_at),
            read_at=_least(self.read_at, other.read_at),
            updated_at=_most(self.updated_at, other.updated_at),
            failed=_least(self.failed, other.failed),
            not_sent=_least(self.not_sent, other.not_sent),
        )

    @property
    def status(self) -> DeliveryStatus | None:
        """The status that wins, or None when no callback came."""
        return BY_RANK.get(self.rank)

    def failure(self) -> tuple[str, str]:
        """(code, words) of the failure shown, or ("", "") unless the state is a failure."""
        status = self.status
        key = (
            self.failed
            if status is DeliveryStatus.FAILED
            else self.not_sent
            if status is DeliveryStatus.NOT_SENT
            else None
        )
        if key is None:
            return "", ""
        _, code, title, detail = key.split(SEPARATOR)
        words = (
            title if not detail or detail == title else f"{title}: {detail}" if title else detail
        )
        return code, words

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """The six delivery columns of the results file."""
        status = self.status
        code, words = self.failure()
        return (
            "" if status is None else str(status),
            code,
            words,
            self.delivered_at or "",
            self.read_at or "",
            self.updated_at or "",
        )


def fold(events: Iterable[StatusEvent]) -> DeliveryState:
    """The state of a message with these events (any order, repeats allowed)."""
    state = DeliveryState()
    for event in events:
        state = state | DeliveryState.of(event)
    return state
