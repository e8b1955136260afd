"""Pure: an answer carrying a message_id another row already got is not this row's answer.

Kaleyra gives every accepted message its own id. A server (or something on the way) that
sends a second, stray answer on a keep-alive connection puts the connection out of step: the
stray answer arrives just after the connection is reused and is taken for the next request's
answer, and that row would be recorded ``sent`` with another row's id (93 of 200 rows, once).
HTTP/1.1 cannot tell such an answer from the right one; its id can. So an id already seen makes
the outcome ``AMBIGUOUS`` (the row's own request did leave, and may have been delivered: with
``at-most-once`` the row ends ``unknown``), and the engine drops the connection it came on, so
that the answer still due on it cannot be taken for a third row's.

The ids remembered are those of this run's last :data:`RECENT_IDS` sent rows: a stray answer
is an echo of one just before on the same connection, and a window keeps memory flat on a
campaign of millions (an id from an earlier run cannot come back: connections do not outlive
their process).
"""

from __future__ import annotations

import collections
from typing import Final

from bulk_sender.sending.outcome import Kind, Outcome

__all__ = ["RECENT_IDS", "RecentIds"]

#: How many of the latest message ids are remembered (about 3 MiB of ids the length of Kaleyra's).
RECENT_IDS: Final = 16_384


class RecentIds:
    """The last ``size`` message ids of sent rows, and the judgment of a new outcome by them."""

    __slots__ = ("_order", "_seen", "_size")

    def __init__(self, size: int = RECENT_IDS) -> None:
        self._size = size
        self._seen: set[str] = set()
        self._order: collections.deque[str] = collections.deque()

    def __repr__(self) -> str:
        return f"RecentIds(size={self._size!r}, remembered={len(self._seen)})"

    def judge(self, outcome: Outcome) -> Outcome:
        """``outcome``; or, for a SENT one whose id was seen before, the AMBIGUOUS one."""
        message_id = outcome.message_id
        if outcome.kind is not Kind.SENT or message_id is None:
            return outcome
        if message_id in self._seen:
            return Outcome(
                Kind.AMBIGUOUS,
                outcome.http_status,
                "DUPLICATE_ID",
                f"the answer carried message_id {message_id}, which another row of this run "
                "already got: it was that request's answer, not this one's (the connection "
                "was out of step and is closed). This row's request was sent and may have "
                "been delivered",
            )
        self._seen.add(message_id)
        self._order.append(message_id)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())
        return outcome
