"""The values the delivery modules share: a delivery status, one status event, one reply.

A *status event* is one entry of a status callback: "message X was delivered at T". A callback
request may carry several. An *incoming message* is a customer's message to the business
number (a reply, a STOP). Both are plain frozen values, made by :mod:`.parse` and stored by a
:class:`~bulk_sender.stores.base.CallbackStore`.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "FAILURES",
    "RANK",
    "Callback",
    "DeliveryStatus",
    "IncomingMessage",
    "StatusEvent",
]


class DeliveryStatus(enum.StrEnum):
    """What Kaleyra or Meta last said about an accepted message (the ``delivery_status`` column)."""

    SENT = "sent"  #: Meta sent it towards the customer's phone
    DELIVERED = "delivered"  #: it reached the customer's phone
    READ = "read"  #: the customer opened it
    FAILED = "failed"  #: Meta failed it (with a code such as 131047)
    NOT_SENT = "not_sent"  #: Kaleyra never passed it on to Meta


#: How far along a status is; a message's status never goes down this order (see precedence).
RANK: Final[dict[DeliveryStatus, int]] = {
    DeliveryStatus.SENT: 1,
    DeliveryStatus.NOT_SENT: 2,
    DeliveryStatus.FAILED: 3,
    DeliveryStatus.DELIVERED: 4,
    DeliveryStatus.READ: 5,
}
#: The statuses that mean the message did not arrive.
FAILURES: Final = frozenset({DeliveryStatus.FAILED, DeliveryStatus.NOT_SENT})


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusEvent:
    """One status of one message, as a callback reported it.

    ``message_ids`` are the distinct ids the callback gave for the message (Kaleyra puts them in
    up to three places); ``recipient`` is digits only; times are ISO-8601 UTC with milliseconds
    (``at`` is when it happened by Meta's or Kaleyra's clock, or when it was received if the
    callback gave no time).
    """

    message_ids: tuple[str, ...]
    status: DeliveryStatus
    at: str
    recipient: str = ""
    ref: str = ""
    ref1: str = ""
    ref2: str = ""
    code: str = ""
    title: str = ""
    detail: str = ""
    key: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _key(self))


@dataclass(frozen=True, slots=True, kw_only=True)
class IncomingMessage:
    """A customer's message to the business number; ``sender`` is digits only."""

    message_id: str
    sender: str
    at: str
    type: str
    body: str = ""


@dataclass(frozen=True, slots=True)
class Callback:
    """What one callback request carried, ready to store."""

    statuses: tuple[StatusEvent, ...] = ()
    incoming: tuple[IncomingMessage, ...] = ()


def _key(event: StatusEvent) -> int:
    """A 63-bit identity of the event's content: the same callback delivered twice has the same.

    ``at`` is part of it, so a status that really happened twice (Meta's clock differs) is kept;
    with 63 bits, two different events share a key with odds of about 1 in 10^6 even among
    three million events, which would only drop one of them as a duplicate.
    """
    parts = (
        *sorted(event.message_ids), "", event.status, event.at, event.recipient, event.ref,
        event.ref1, event.ref2, event.code, event.title, event.detail,
    )  # fmt: skip
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
