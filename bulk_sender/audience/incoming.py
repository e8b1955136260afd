"""Customers' messages into the ledger: when each last wrote, and STOP / START.

The callback receiver (``bulk-sender receive``) calls :func:`apply_incoming`
(:class:`LedgerReplies`) with every customer's message it stores: the ledger notes when the
customer last wrote (for ``service_window``), and a message that says only an opt-out keyword
opts its sender out, one that says only an opt-in keyword opts them back in (:mod:`.keywords`).
Each change carries the message's own time, so a STOP and a START that arrive out of order leave
the later one in force, and a message delivered twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from bulk_sender.audience.keywords import Keyword, keyword_of, normalise_keyword
from bulk_sender.config import AudienceSettings
from bulk_sender.delivery.events import IncomingMessage
from bulk_sender.stores.ledger import Ledger, OptChange

__all__ = ["IncomingText", "LedgerReplies", "Replies", "apply_incoming", "iso_ms"]


class IncomingText(NamedTuple):
    """A customer's message: the sender's digits (E.164 without ``+``), when, what it says."""

    sender: str
    at: str  #: ISO-8601, as the receiver stores it
    text: str


@dataclass(frozen=True, slots=True)
class Replies:
    """What :func:`apply_incoming` did."""

    noted: int = 0  #: messages whose time was noted
    keywords: int = 0  #: messages that said only an opt-out or opt-in keyword
    changed: int = 0  #: of those, opt changes that took effect (not older than the state)


async def apply_incoming(
    ledger: Ledger, messages: Sequence[IncomingText], settings: AudienceSettings
) -> Replies:
    """Record ``messages`` in ``ledger`` (see the module docstring)."""
    noted: list[tuple[int, int]] = []
    changes: list[OptChange] = []
    for message in messages:
        if not message.sender.isdigit():
            continue
        recipient, at = int(message.sender), iso_ms(message.at)
        noted.append((recipient, at))
        keyword = keyword_of(
            message.text, opt_out=settings.opt_out_keywords, opt_in=settings.opt_in_keywords
        )
        if keyword is not None:
            word = normalise_keyword(message.text).upper()
            changes.append(OptChange(recipient, keyword is Keyword.OPT_OUT, at, f"a {word} reply"))
    if noted:
        await ledger.note_incoming(noted)
    changed = await ledger.change_opt(changes) if changes else 0
    return Replies(noted=len(noted), keywords=len(changes), changed=changed)


class LedgerReplies:
    """The callback receiver's hook (:data:`bulk_sender.delivery.receiver.IncomingHook`): every
    customer's message it stores, applied to the ledger."""

    def __init__(self, ledger: Ledger, settings: AudienceSettings) -> None:
        self.ledger = ledger
        self._settings = settings

    def __repr__(self) -> str:
        return f"LedgerReplies(ledger={self.ledger!r})"

    async def __call__(self, messages: Sequence[IncomingMessage]) -> Replies:
        """Record ``messages`` (raises StoreError if the ledger cannot take them)."""
        texts = [IncomingText(m.sender, m.at, m.body) for m in messages]
        return await apply_incoming(self.ledger, texts, self._settings)


def iso_ms(text: str) -> int:
    """``2026-11-20T10:15:00.123Z`` (or with an offset) -> POSIX milliseconds."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000)
