"""Pure: what a ledger held when read, as sorted arrays, and the rules' screen over them.

A dry run reads the ledger once (:meth:`~bulk_sender.stores.ledger.Ledger.snapshot`: the
opt-outs, the customers' last messages and the sends within the rules' reach, 8 bytes a value)
and screens every batch against that, with a few vectorised searches a batch instead of a
query a message: a preflight of a million rows against a ledger that knows a million
recipients stays within its speed target. :meth:`Snapshot.screen` is the predicate of the
store's own screen (:func:`bulk_sender.stores.ledger_sql.screen`), and a test proves the two
agree. A send screens against the ledger itself (it must see what other campaigns do while it
runs); a dry run is a moment's picture anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from bulk_sender.audience.rules import Bounds, Facts, OptOut, PastSend

__all__ = ["Snapshot"]

Int64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def _none() -> Int64s:
    return np.empty(0, dtype=np.int64)


@dataclass(slots=True)
class Snapshot:
    """Sorted arrays: opt-outs (``opt_to``, with ``opt_at`` and an index into ``opt_by``);
    customers' last messages (``incoming_to``, ``incoming_at``); sends sorted by recipient then
    time (``send_to``, ``send_at``, ``send_content``, ``send_campaign`` an id of
    ``campaigns``)."""

    opt_to: Int64s = field(default_factory=_none)
    opt_at: Int64s = field(default_factory=_none)
    opt_by: Int64s = field(default_factory=_none)
    by_names: list[str] = field(default_factory=list)
    incoming_to: Int64s = field(default_factory=_none)
    incoming_at: Int64s = field(default_factory=_none)
    send_to: Int64s = field(default_factory=_none)
    send_at: Int64s = field(default_factory=_none)
    send_content: Int64s = field(default_factory=_none)
    send_campaign: Int64s = field(default_factory=_none)
    campaigns: dict[int, str] = field(default_factory=dict)

    def screen(
        self, numbers: Sequence[str], contents: Sequence[int], bounds: Bounds
    ) -> dict[int, Facts]:
        """Of the messages ``(numbers[i], contents[i])``, those the rules hold back under
        ``bounds``, with their facts, by index: the store's screen, over the arrays."""
        if not numbers:
            return {}
        keys = np.fromiter((int(n[1:]) for n in numbers), dtype=np.int64, count=len(numbers))
        content = np.array(contents, dtype=np.int64)
        held = _found(self.opt_to, keys)
        lo = np.searchsorted(self.send_to, keys, side="left")
        hi = np.searchsorted(self.send_to, keys, side="right")
        repeat, recent = self._sends_within(lo, hi, content, bounds)
        held |= repeat
        if bounds.cap is not None:
            held |= recent >= bounds.cap
        if bounds.window_since is not None:
            held |= ~self._wrote_since(keys, bounds.window_since)
        positions = np.flatnonzero(held)
        facts = self._facts(keys[positions], lo[positions], hi[positions])
        return dict(zip(positions.tolist(), facts, strict=True))

    def _wrote_since(self, keys: Int64s, since: int) -> Bools:
        """Per message: whether its customer wrote after ``since``."""
        if not len(self.incoming_to):
            return np.zeros(len(keys), dtype=np.bool_)
        at = np.minimum(np.searchsorted(self.incoming_to, keys), len(self.incoming_to) - 1)
        wrote: Bools = (self.incoming_to[at] == keys) & (self.incoming_at[at] > since)
        return wrote

    def _sends_within(
        self, lo: Int64s, hi: Int64s, content: Int64s, bounds: Bounds
    ) -> tuple[Bools, Int64s]:
        """Per message: a send of its content after the repeat bound; sends after the cap's."""
        repeat = np.zeros(len(lo), dtype=np.bool_)
        recent = np.zeros(len(lo), dtype=np.int64)
        widest = int((hi - lo).max()) if len(lo) else 0
        for offset in range(widest):
            index = lo + offset
            valid = index < hi
            index = np.where(valid, index, 0)
            at = self.send_at[index]
            if bounds.repeat_since is not None:
                same = self.send_content[index] == content
                repeat |= valid & same & (at > bounds.repeat_since)
            if bounds.cap_since is not None:
                recent += valid & (at > bounds.cap_since)
        return repeat, recent

    def _facts(self, keys: Int64s, lo: Int64s, hi: Int64s) -> list[Facts]:
        """The facts of the held messages (their keys, and their sends' spans), gathered with
        a few array operations, then made into tuples."""
        opt = self._opt_outs(keys)
        wrote = self._last_incoming(keys)
        counts = hi - lo
        # Every held message's sends, one after the other: their positions in the arrays.
        flat = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        at, content = self.send_at[flat].tolist(), self.send_content[flat].tolist()
        campaign = self.send_campaign[flat].tolist()
        names = [self.campaigns.get(c, "?") for c in campaign]
        facts, start = [], 0
        for n, count in enumerate(counts.tolist()):
            sends = [
                PastSend(at[i], content[i], names[i], campaign[i])
                for i in range(start, start + count)
            ]
            start += count
            facts.append(Facts(opt[n], wrote[n], sends))
        return facts

    def _opt_outs(self, keys: Int64s) -> list[OptOut | None]:
        if not len(self.opt_to):
            return [None] * len(keys)
        at = np.minimum(np.searchsorted(self.opt_to, keys), len(self.opt_to) - 1)
        found = (self.opt_to[at] == keys).tolist()
        when, by = self.opt_at[at].tolist(), self.opt_by[at].tolist()
        return [
            OptOut(when[n], self.by_names[by[n]]) if found[n] else None for n in range(len(keys))
        ]

    def _last_incoming(self, keys: Int64s) -> list[int | None]:
        if not len(self.incoming_to):
            return [None] * len(keys)
        at = np.minimum(np.searchsorted(self.incoming_to, keys), len(self.incoming_to) - 1)
        found, when = (self.incoming_to[at] == keys).tolist(), self.incoming_at[at].tolist()
        return [when[n] if found[n] else None for n in range(len(keys))]


def _found(sorted_keys: Int64s, keys: Int64s) -> Bools:
    """For each of ``keys``, whether ``sorted_keys`` holds it."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=np.bool_)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found: Bools = sorted_keys[at] == keys
    return found
