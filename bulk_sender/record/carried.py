"""What the run before a ``--restart`` sent: those recipients are not sent again.

``--restart`` moves the old journal aside and copies into the new one every recipient the old
one records as sent, unknown or in flight (see :func:`bulk_sender.record.journal._carry_over`).
Each planned message to one of them is recorded ``suppressed`` instead of being sent, so a
restart after an edit, or after a journal was changed by hand, never sends anyone the campaign
twice. The numbers are held as a sorted array of integers: 8 bytes a recipient.
"""

from __future__ import annotations

import bisect
import sqlite3
from array import array
from pathlib import Path

from bulk_sender.model import Record, Status

__all__ = ["Carried"]


class Carried:
    """Recipients sent to by the journal a ``--restart`` moved aside."""

    __slots__ = ("_numbers", "_reason")

    def __init__(self, numbers: array[int], source: str) -> None:
        self._numbers = memoryview(numbers)
        self._reason = (
            f"already sent to this number by the run before --restart (its journal: {source})"
        )

    def __len__(self) -> int:
        return len(self._numbers)

    @classmethod
    def load(cls, db: sqlite3.Connection) -> Carried | None:
        """The carried recipients of the journal open as ``db``, or None if there are none."""
        source = db.execute("SELECT value FROM meta WHERE key = 'carried_from'").fetchone()
        if source is None:
            return None
        numbers = sorted(_digits(n) for (n,) in db.execute("SELECT number FROM carried"))
        return cls(array("q", numbers), Path(source[0]).name) if numbers else None

    def hold(self, record: Record) -> Record | None:
        """``record`` as ``suppressed`` if its recipient was sent to before, else None."""
        number = _digits(record.to)
        at = bisect.bisect_left(self._numbers, number)
        if at < len(self._numbers) and self._numbers[at] == number:
            return record._replace(status=Status.SUPPRESSED, error=self._reason)
        return None


def _digits(e164: str) -> int:
    """``+919845012345`` -> 919845012345 (E.164 has at most 15 digits: it fits in 63 bits)."""
    return int(e164[1:]) if e164[1:].isdigit() else -1
