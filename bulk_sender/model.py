"""The values every part of bulk-sender shares: a message's status, its record, the clock.

:class:`Status` is the one definition of a message's states; every set of states the package
needs (final, sent again by a resume, counted against the exit code, exported for a retry) is
derived from it here, never written out a second time elsewhere.
"""

from __future__ import annotations

import enum
import time
from typing import Final, NamedTuple

__all__ = [
    "DRY_RUN_STATUSES",
    "EXPORTED",
    "FINAL",
    "MAY_HAVE_ARRIVED",
    "RESULT_STATUSES",
    "SKIPPED",
    "UNSENT",
    "Record",
    "Status",
    "utc_now",
]


class Status(enum.StrEnum):
    """A message's state; the value is what the results file and the journal hold."""

    SENT = "sent"  #: Kaleyra accepted it (a 2xx with ``data.message_id``)
    FAILED = "failed"  #: Kaleyra refused it for this row, or its retries ran out
    INVALID = "invalid"  #: not sent: the row is wrong
    DUPLICATE = "duplicate"  #: not sent: the same recipient appears in an earlier row
    SUPPRESSED = "suppressed"  #: not sent on purpose: a rule held it back (see ``code``, ``error``)
    UNKNOWN = "unknown"  #: the request left and no usable answer came back
    NOT_SENT = "not_sent"  #: not sent yet: the next run of the same command sends it
    IN_FLIGHT = "in_flight"  #: journal only: the request may be on its way right now
    VALID = "valid"  #: dry run only: the row would be sent

    def __reduce_ex__(self, protocol: object) -> tuple[type[str], tuple[str]]:
        # Planned records cross to the sending process pickled; as plain strings they cost
        # nothing to rebuild, and a plain ``str`` compares equal to its member.
        return str, (self.value,)


#: The statuses of a finished record, in the order summaries show them.
RESULT_STATUSES: Final[tuple[Status, ...]] = (
    Status.SENT,
    Status.FAILED,
    Status.INVALID,
    Status.DUPLICATE,
    Status.SUPPRESSED,
    Status.UNKNOWN,
    Status.NOT_SENT,
)
#: A dry run's verdicts: ``valid`` rows would be sent; ``suppressed`` ones an audience rule
#: would hold back.
DRY_RUN_STATUSES: Final[tuple[Status, ...]] = (
    Status.VALID,
    Status.INVALID,
    Status.DUPLICATE,
    Status.SUPPRESSED,
)
#: Never sent again by a resume (``unknown`` is, with ``--resend-unknown``).
FINAL: Final = frozenset(RESULT_STATUSES) - {Status.NOT_SENT}
#: Deliberately not sent: these do not make the exit code 1.
SKIPPED: Final = frozenset({Status.DUPLICATE, Status.SUPPRESSED})
#: Messages that did not reach Kaleyra as they should have: any of them makes the exit code 1.
UNSENT: Final = frozenset(RESULT_STATUSES) - {Status.SENT} - SKIPPED
#: Requests that may have reached the server: a journal holding any is bound to that server.
MAY_HAVE_ARRIVED: Final = frozenset({Status.SENT, Status.UNKNOWN, Status.IN_FLIGHT})
#: What the failed export lists (``unknown`` too when asked).
EXPORTED: Final = frozenset({Status.FAILED, Status.NOT_SENT, Status.INVALID})


class Record(NamedTuple):
    """One message's row in the journal, and in the results file.

    A named tuple rather than a dataclass: one is made per message on the hot path, and it goes
    to SQLite as the tuple it already is. Always build it with keywords. ``status`` is a
    :class:`Status` value (a plain ``str`` once read back from the journal; they compare equal).
    """

    row: int
    part: int = 0
    parts: int = 1
    to: str = ""
    status: str = ""
    message_id: str = ""
    http_status: int | None = None
    code: str = ""
    error: str = ""
    attempts: int = 0
    ref: str = ""
    ref1: str = ""
    ref2: str = ""
    warning: str = ""
    finished_at: str = ""


def utc_now() -> str:
    """The time as ISO-8601 UTC with milliseconds, ``2026-11-24T21:33:17.110Z`` (cached per ms)."""
    millis = time.time_ns() // 1_000_000
    if millis != _clock[0]:
        seconds, ms = divmod(millis, 1000)
        _clock[:] = [
            millis,
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z",
        ]
    return str(_clock[1])


_clock: list[int | str] = [-1, ""]
