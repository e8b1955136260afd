"""Pure: a server that cannot be reached from the start stops the run instead of burning it.

A wrong host name, a firewall, a proxy that is down: every row's requests fail to connect,
each row ends ``failed`` after ``max_attempts``, and the run goes on to the error threshold,
leaving rows that a resume does not send again. Once the server has been reached (any HTTP
answer, or a request that left), a failure to connect is a passing problem of one row and is
retried as always. Before that, it is the run's problem:

* until the first contact, every attempt that fails to connect (``NOT_SENT_YET``) is counted;
* at :data:`FIRST_CONTACT_ATTEMPTS` of them (or ``max_attempts``, if that is fewer, so that no
  row can use up its attempts first) the outcome becomes ``ENDPOINT``: the run stops, the row
  stays ``not_sent``, and so does every later failure until a contact.

No clock, no I/O: :meth:`FirstContact.judge` sees each attempt's outcome in the order they end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from bulk_sender.sending.outcome import Kind, Outcome

__all__ = ["FIRST_CONTACT_ATTEMPTS", "FirstContact"]

#: Failed connection attempts, with no contact before them, that stop a run.
FIRST_CONTACT_ATTEMPTS: Final = 3


@dataclass(slots=True)
class FirstContact:
    """Counts failed connections until the server is first reached; see the module docstring."""

    limit: int
    reached: bool = False
    failures: int = 0

    @classmethod
    def for_attempts(cls, max_attempts: int) -> FirstContact:
        """The rule for rows allowed ``max_attempts`` attempts."""
        return cls(limit=max(1, min(FIRST_CONTACT_ATTEMPTS, max_attempts)))

    def judge(self, outcome: Outcome) -> Outcome:
        """``outcome``, or the ``ENDPOINT`` outcome that stops the run (same code, its count)."""
        if self.reached:
            return outcome
        if outcome.kind is not Kind.NOT_SENT_YET:
            self.reached = True
            return outcome
        self.failures += 1
        if self.failures < self.limit:
            return outcome
        error = (
            f"{outcome.error}; nothing has reached the server in this run "
            f"({self.failures} attempts failed to connect)"
        )
        return dataclasses.replace(outcome, kind=Kind.ENDPOINT, error=error)
