"""The delivery funnel of a campaign: counted row by row as the results are rewritten.

:class:`FunnelCounter` sees every message once (its journal record and delivery state) and keeps
only counters: the funnel (accepted, sent, delivered, read), failures by code, the rows still
waiting for a callback, and per-second series of accepted messages and of the delay from the
202 to ``delivered``/``read`` (as log-spaced histograms), so memory stays flat for millions of
rows. :func:`funnel_text` and :func:`funnel_dict` present the result.
"""

from __future__ import annotations

import bisect
import functools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from bulk_sender.delivery.codes import explain
from bulk_sender.delivery.events import FAILURES, DeliveryStatus
from bulk_sender.delivery.precedence import DeliveryState
from bulk_sender.model import Record, Status

__all__ = ["DELAY_EDGES", "Funnel", "FunnelCounter", "funnel_dict", "funnel_text"]

#: Upper edges (seconds) of the delay histogram's bins; the last bin is open-ended.
DELAY_EDGES: Final = (
    1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400,
)  # fmt: skip
_SENT_OR_LATER: Final = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.READ}
)
_DELIVERED_OR_LATER: Final = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.READ})


@functools.lru_cache(maxsize=1 << 16)
def _epoch(text: str) -> float | None:
    """Unix seconds of an ISO-8601 time (cached: a campaign's times share their seconds)."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _delay(start: str, end: str | None) -> float | None:
    """Seconds from ``start`` to ``end`` (ISO-8601), at least 0 (clocks differ); None if unknown."""
    if not start or not end:
        return None
    begin, finish = _epoch(start), _epoch(end)
    if begin is None or finish is None:
        return None
    return max(finish - begin, 0.0)


@dataclass(slots=True)
class Funnel:
    """What the counter found; every count is of messages."""

    messages: int = 0
    accepted: int = 0
    statuses: Counter[DeliveryStatus] = field(default_factory=Counter)
    failures: Counter[tuple[DeliveryStatus, str]] = field(default_factory=Counter)
    #: per second ("2026-11-24T21:33:17"): accepted messages
    accepted_per_second: Counter[str] = field(default_factory=Counter)
    #: per second of sending: histogram of delays to delivered / to read (DELAY_EDGES bins)
    to_delivered: dict[str, list[int]] = field(default_factory=dict)
    to_read: dict[str, list[int]] = field(default_factory=dict)
    last_update: str = ""

    @property
    def sent(self) -> int:
        """Accepted messages WhatsApp sent (whatever came after)."""
        return sum(self.statuses[s] for s in _SENT_OR_LATER)

    @property
    def delivered(self) -> int:
        """Accepted messages that reached the phone."""
        return sum(self.statuses[s] for s in _DELIVERED_OR_LATER)

    @property
    def read(self) -> int:
        """Accepted messages the customer opened."""
        return self.statuses[DeliveryStatus.READ]

    @property
    def failed(self) -> int:
        """Accepted messages that failed after the 202 (failed or not sent)."""
        return sum(self.statuses[s] for s in FAILURES)

    @property
    def waiting(self) -> int:
        """Accepted messages with no callback yet."""
        return self.accepted - sum(self.statuses.values())


class FunnelCounter:
    """Feed it every message in results order with :meth:`add`; read :attr:`funnel`."""

    def __init__(self) -> None:
        self.funnel = Funnel()

    def add(self, record: Record, state: DeliveryState) -> None:
        """Count one message."""
        funnel = self.funnel
        funnel.messages += 1
        if record.status != Status.SENT:
            return
        funnel.accepted += 1
        second = record.finished_at[:19]
        funnel.accepted_per_second[second] += 1
        status = state.status
        if status is None:
            return
        funnel.statuses[status] += 1
        if status in FAILURES:
            funnel.failures[(status, state.failure()[0])] += 1
        if state.updated_at and state.updated_at > funnel.last_update:
            funnel.last_update = state.updated_at
        self._delay(funnel.to_delivered, second, record.finished_at, state.delivered_at)
        self._delay(funnel.to_read, second, record.finished_at, state.read_at)

    @staticmethod
    def _delay(series: dict[str, list[int]], second: str, start: str, end: str | None) -> None:
        seconds = _delay(start, end)
        if seconds is None:
            return
        bins = series.get(second)
        if bins is None:
            bins = series[second] = [0] * (len(DELAY_EDGES) + 1)
        bins[bisect.bisect_left(DELAY_EDGES, seconds)] += 1


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f} %" if whole else "    - "


def failure_lines(funnel: Funnel) -> list[tuple[DeliveryStatus, str, int, str]]:
    """(status, code, count, plain words), most frequent first."""
    ordered = sorted(funnel.failures.items(), key=lambda item: (-item[1], item[0]))
    return [(status, code, count, explain(status, code).words) for (status, code), count in ordered]


def funnel_text(funnel: Funnel, *, title: str, files: Mapping[str, str]) -> str:
    """The funnel as the ``report`` command prints it."""
    accepted = funnel.accepted
    lines = [
        title,
        f"  accepted by Kaleyra      {accepted:>10,}",
        f"  sent by WhatsApp         {funnel.sent:>10,}  {_share(funnel.sent, accepted)}",
        f"  delivered                {funnel.delivered:>10,}  {_share(funnel.delivered, accepted)}",
        f"  read                     {funnel.read:>10,}  {_share(funnel.read, accepted)}",
        f"  failed after acceptance  {funnel.failed:>10,}  {_share(funnel.failed, accepted)}",
    ]
    for status, code, count, words in failure_lines(funnel):
        label = "not sent" if status is DeliveryStatus.NOT_SENT else code or "no code"
        lines.append(f"    {label:<10} {count:>8,}  {words}")
    lines.append(
        f"  waiting for a callback   {funnel.waiting:>10,}  {_share(funnel.waiting, accepted)}"
        " of accepted"
    )
    if funnel.last_update:
        lines.append(f"  latest callback event    {funnel.last_update}")
    lines.extend(f"  {name}: {value}" for name, value in files.items())
    return "\n".join(lines)


def funnel_dict(funnel: Funnel) -> dict[str, Any]:
    """The funnel for ``--summary-json``."""
    accepted = funnel.accepted
    return {
        "messages": funnel.messages,
        "funnel": {
            "accepted": accepted,
            "sent": funnel.sent,
            "delivered": funnel.delivered,
            "read": funnel.read,
            "failed": funnel.failed,
        },
        "delivery_statuses": {str(s): funnel.statuses[s] for s in DeliveryStatus},
        "waiting": funnel.waiting,
        "waiting_share": round(funnel.waiting / accepted, 4) if accepted else 0.0,
        "failures": [
            {"status": str(status), "code": code, "count": count, "meaning": words}
            for status, code, count, words in failure_lines(funnel)
        ],
        "latest_event": funnel.last_update or None,
    }
