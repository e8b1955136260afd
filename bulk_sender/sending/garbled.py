"""Pure: accepted answers that cannot be read, again and again, stop the run.

A 2xx whose body is not JSON, or has no ``data.message_id``, leaves its row ``unknown``: the
message may have been delivered, so it is not sent again. One such answer is a glitch; the
same one for row after row means something between bulk-sender and Kaleyra answers in a way
it cannot read (a ``base_url`` pointing at another service, a proxy rewriting answers, an API
change), and going on would turn the whole campaign ``unknown``. After
:data:`GARBLED_IN_A_ROW` of the same kind in a row the run stops (exit 3). The rows stay
``unknown``, as they must: they may have been delivered. Any readable answer resets the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bulk_sender.sending.outcome import Kind, Outcome

__all__ = ["GARBLED_IN_A_ROW", "GarbledAnswers"]

#: Unreadable accepted answers of one kind in a row that stop the run.
GARBLED_IN_A_ROW: Final = 10


@dataclass(slots=True)
class GarbledAnswers:
    """Counts unreadable 2xx answers of one kind in a row; see the module docstring."""

    limit: int = GARBLED_IN_A_ROW
    kind: str = ""
    count: int = 0

    def judge(self, outcome: Outcome) -> bool:
        """Count ``outcome``; True when it is the ``limit``-th unreadable answer in a row."""
        status = outcome.http_status
        if outcome.kind is not Kind.AMBIGUOUS or status is None or not 200 <= status < 300:
            if outcome.http_status is not None:
                self.count = 0
            return False
        if outcome.error != self.kind:
            self.kind, self.count = outcome.error, 0
        self.count += 1
        return self.count >= self.limit
