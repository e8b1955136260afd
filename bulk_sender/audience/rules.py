"""Pure: the cross-campaign rules, from what the ledger knows about a recipient to a verdict.

One recipient's :class:`Facts` (its opt-out, when it last wrote to the business, the sends the
ledger records to it) and the configured :class:`Limits` give :func:`judge`'s verdict, a
:class:`Held` naming the rule and saying why in words a marketer reads in the results file, or
None (send). The rules, first match wins:

1. **opted out** (``OPTED_OUT``): by an opt-out file, a STOP reply, by hand;
2. **repeat guard** (``REPEAT_GUARD``): the same content reached the recipient less than
   ``repeat_guard_hours`` ago, from any campaign on the ledger;
3. **frequency cap** (``FREQUENCY_CAP``): ``messages`` sends or more in the last ``hours``;
4. **service window** (``SERVICE_WINDOW``, ``skip`` only): the customer has not written to the
   business in the last 24 hours.

Quiet hours are apart (:mod:`.quiet`): they depend on the clock and the number, not on the
ledger, and hold a row ``not_sent`` rather than ``suppressed``. A send ``at`` counts while
``at > now - window``; the SQL take (:mod:`bulk_sender.stores.ledger_sql`) encodes the very same
comparisons, and a test proves the two agree. Times are POSIX milliseconds.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, NamedTuple

__all__ = [
    "HOUR_MS",
    "SERVICE_WINDOW_MS",
    "Bounds",
    "Clock",
    "Facts",
    "Held",
    "Limits",
    "OptOut",
    "PastSend",
    "Rule",
    "WindowMode",
    "ago",
    "judge",
    "screen_bounds",
    "wall_clock_ms",
    "window_warning",
]

HOUR_MS: Final = 3_600_000
#: WhatsApp's customer-service window: 24 hours from the customer's last message.
SERVICE_WINDOW_MS: Final = 24 * HOUR_MS

WindowMode = Literal["off", "warn", "skip"]
#: The clock the rules read: POSIX milliseconds. Tests pass a fake one.
Clock = Callable[[], int]


def wall_clock_ms() -> int:
    """The time now, in POSIX milliseconds."""
    return time.time_ns() // 1_000_000


class Rule(enum.StrEnum):
    """Why a row was held back; the value is what the results file's ``code`` column holds."""

    OPTED_OUT = "OPTED_OUT"
    REPEAT = "REPEAT_GUARD"
    CAP = "FREQUENCY_CAP"
    WINDOW = "SERVICE_WINDOW"
    QUIET = "QUIET_HOURS"


@dataclass(frozen=True, slots=True)
class Held:
    """A row held back by ``rule``; ``detail`` is the results file's ``error``."""

    rule: Rule
    detail: str


class OptOut(NamedTuple):
    """An opt-out: when (None for an opt-out file, which has no dates) and by what."""

    at: int | None
    by: str  #: "a STOP reply", "hand", or the opt-out file's name when ``at`` is None


class PastSend(NamedTuple):
    """A message the ledger records to the recipient: when, its content, the campaign's name,
    and which message it was (the campaign's ledger id, row and part)."""

    at: int
    content: int
    campaign: str
    campaign_id: int = 0
    row: int = 0
    part: int = 0


class Facts(NamedTuple):
    """What the ledger knows about one recipient, apart from the message being judged."""

    opt_out: OptOut | None = None
    last_incoming: int | None = None
    sends: Sequence[PastSend] = ()


class Bounds(NamedTuple):
    """The rules' thresholds at one moment: a send counts if ``at > since`` (None: rule off)."""

    repeat_since: int | None
    cap_since: int | None
    cap: int | None
    window_since: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The configured rules, in milliseconds; 0 turns the repeat guard or the cap off."""

    repeat_ms: int = 24 * HOUR_MS
    cap_messages: int = 0
    cap_ms: int = 0
    window: WindowMode = "off"

    @property
    def looks_back(self) -> int:
        """How far back sends matter to any rule."""
        return max(self.repeat_ms, self.cap_ms if self.cap_messages else 0)

    def bounds(self, now: int) -> Bounds:
        """The thresholds at ``now`` (positional: a sending worker asks about once a message)."""
        return Bounds(
            now - self.repeat_ms if self.repeat_ms else None,  # repeat_since
            now - self.cap_ms if self.cap_messages else None,  # cap_since
            self.cap_messages or None,  # cap
            now - SERVICE_WINDOW_MS if self.window == "skip" else None,  # window_since
        )


def screen_bounds(limits: Limits, now: int) -> Bounds:
    """:meth:`Limits.bounds`, with the service window's bound in ``warn`` mode too: a screen
    finds the customers to warn about with the rows to hold back."""
    bounds = limits.bounds(now)
    if limits.window == "warn":
        return bounds._replace(window_since=now - SERVICE_WINDOW_MS)
    return bounds


def judge(
    limits: Limits, facts: Facts, *, content: int, now: int, bounds: Bounds | None = None
) -> Held | None:
    """The first rule that holds the message back (see the module docstring), or None.

    ``bounds`` are ``limits.bounds(now)``, when the caller has them already.
    """
    if facts.opt_out is not None:
        return Held(Rule.OPTED_OUT, _opted_out(facts.opt_out))
    bounds = bounds or limits.bounds(now)
    if bounds.repeat_since is not None:
        repeats = [s for s in facts.sends if s.content == content and s.at > bounds.repeat_since]
        if repeats:
            last = max(repeats)
            return Held(
                Rule.REPEAT,
                f"same message sent {ago(now - last.at)} ago by campaign {last.campaign}",
            )
    if bounds.cap_since is not None and bounds.cap is not None:
        recent = sum(1 for s in facts.sends if s.at > bounds.cap_since)
        if recent >= bounds.cap:
            return Held(Rule.CAP, _capped(recent, limits))
    if bounds.window_since is not None and not _wrote_since(facts, bounds.window_since):
        return Held(Rule.WINDOW, "no message from this customer in the last 24 h")
    return None


def window_warning(limits: Limits, last_incoming: int | None, *, now: int) -> str | None:
    """With ``service_window = "warn"``: the warning for a customer who has not written lately."""
    if limits.window != "warn" or _wrote_since(
        Facts(last_incoming=last_incoming), now - SERVICE_WINDOW_MS
    ):
        return None
    return (
        "no message from this customer in the last 24 h: outside WhatsApp's customer-service "
        "window a catalog message may fail (131047)"
    )


def ago(millis: int) -> str:
    """``3 h``, ``12 min``, ``less than a minute``: how long ago, rounded down."""
    minutes = max(millis, 0) // 60_000
    if minutes < 1:
        return "less than a minute"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h"


def _wrote_since(facts: Facts, since: int) -> bool:
    return facts.last_incoming is not None and facts.last_incoming > since


def _opted_out(opt_out: OptOut) -> str:
    if opt_out.at is None:
        return f"opted out: listed in the opt-out file {opt_out.by}"
    day = datetime.fromtimestamp(opt_out.at / 1000, UTC).date().isoformat()
    return f"opted out on {day} by {opt_out.by}"


def _capped(recent: int, limits: Limits) -> str:
    hours = f"{limits.cap_ms / HOUR_MS:g}"
    noun = "message" if recent == 1 else "messages"
    return f"{recent} {noun} in the last {hours} h (cap {limits.cap_messages})"
