"""Which recipient was seen first, for millions of recipients in little memory.

A Python ``dict`` of a million phone numbers costs about 200 MB; the campaign's promise is
near-constant memory, so :class:`FirstSeen` keeps each recipient as a 64-bit integer (the
E.164 digits) and the 32-bit row that first used it (the rare part > 0 of a multi-number cell
goes in a small side dict): new entries go to a bounded dict, merged into sorted numpy arrays
whenever it fills. The arrays are kept in blocks of 65,536 so that a merge copies only the
blocks it touches, never the whole index. Lookups check the dict, then find the block and
binary-search it. About 12 bytes per recipient.
"""

from __future__ import annotations

import bisect

import numpy as np
import numpy.typing as npt

__all__ = ["PART_BITS", "FirstSeen", "pack", "unpack"]

PART_BITS = 16


def pack(row: int, part: int) -> int:
    """``(row, part)`` as one integer (``part`` below 65,536)."""
    return (row << PART_BITS) | part


def unpack(key: int) -> tuple[int, int]:
    """The ``(row, part)`` that :func:`pack` packed."""
    return key >> PART_BITS, key & ((1 << PART_BITS) - 1)


def _number(e164: str) -> int:
    return int(e164[1:] if e164.startswith("+") else e164)


class FirstSeen:
    """Maps an E.164 number to the ``(row, part)`` that used it first."""

    def __init__(self, *, batch: int = 32_768, block: int = 65_536) -> None:
        self._batch = batch
        self._block = block
        self._recent: dict[int, int] = {}  # number -> packed (row, part), not yet merged
        self._numbers: list[npt.NDArray[np.int64]] = []  # sorted blocks, in order, disjoint
        self._rows: list[npt.NDArray[np.int32]] = []  # the first row of each number
        self._bounds: list[int] = []  # the smallest number of each block
        self._views: list[memoryview] = []  # the blocks as memoryviews, for bisect
        self._parts: dict[int, int] = {}  # number -> part, only where the part is not 0

    def __len__(self) -> int:
        return len(self._recent) + sum(len(b) for b in self._numbers)

    def __repr__(self) -> str:
        return f"FirstSeen(recipients={len(self)}, blocks={len(self._numbers)})"

    def first(self, e164: str, row: int, part: int) -> tuple[int, int]:
        """The ``(row, part)`` that first used ``e164``; records this one if it is the first."""
        number = _number(e164)
        found = self._recent.get(number)
        if found is not None:
            return unpack(found)
        b = bisect.bisect_right(self._bounds, number) - 1
        if b >= 0:
            block = self._views[b]  # a memoryview: bisect on it is 2x numpy's per-call cost
            at = bisect.bisect_left(block, number)
            if at < len(block) and block[at] == number:
                return int(self._rows[b][at]), self._parts.get(number, 0)
        self._recent[number] = pack(row, part)
        if len(self._recent) >= self._batch:
            self._merge()
        return row, part

    def load(self, numbers: npt.NDArray[np.int64], keys: npt.NDArray[np.int64]) -> None:
        """Add many ``(number, packed key)`` pairs at once (from the journal), keeping firsts.

        Where a number appears more than once, the smallest key (the earliest row) wins. Call it
        before :meth:`first` (it replaces what is there).
        """
        order = np.lexsort((keys, numbers))
        numbers, keys = numbers[order].astype(np.int64), keys[order].astype(np.int64)
        keep = np.ones(len(numbers), dtype=bool)
        keep[1:] = numbers[1:] != numbers[:-1]
        numbers, keys = numbers[keep], keys[keep]
        self._recent, self._parts = {}, {}
        self._note_parts(numbers, keys)
        rows = (keys >> PART_BITS).astype(np.int32)
        self._numbers = [numbers[i : i + self._block] for i in range(0, len(numbers), self._block)]
        self._rows = [rows[i : i + self._block].copy() for i in range(0, len(rows), self._block)]
        self._numbers = [b.copy() for b in self._numbers]
        self._index()

    def _merge(self) -> None:
        """Fold the recent dict into the blocks, rebuilding only the blocks it touches."""
        if not self._recent:
            return
        numbers = np.fromiter(self._recent.keys(), dtype=np.int64, count=len(self._recent))
        keys = np.fromiter(self._recent.values(), dtype=np.int64, count=len(self._recent))
        self._recent = {}
        self._views = []  # let each replaced block go as soon as it is replaced
        order = np.argsort(numbers)
        numbers, keys = numbers[order], keys[order]
        self._note_parts(numbers, keys)
        rows = (keys >> PART_BITS).astype(np.int32)
        if not self._numbers:
            self._numbers, self._rows = [numbers], [rows]
        else:
            # Block b takes the new numbers below the next block's smallest number.
            cuts = [0, *np.searchsorted(numbers, self._bounds[1:]).tolist(), len(numbers)]
            for b in range(len(self._numbers)):
                lo, hi = cuts[b], cuts[b + 1]
                if lo == hi:
                    continue
                at = np.searchsorted(self._numbers[b], numbers[lo:hi])
                self._numbers[b] = np.insert(self._numbers[b], at, numbers[lo:hi])
                self._rows[b] = np.insert(self._rows[b], at, rows[lo:hi])
        self._split_large_blocks()
        self._index()

    def _index(self) -> None:
        self._bounds = [int(b[0]) for b in self._numbers]
        self._views = [b.data for b in self._numbers]

    def _split_large_blocks(self) -> None:
        numbers: list[npt.NDArray[np.int64]] = []
        rows: list[npt.NDArray[np.int32]] = []
        for block, block_rows in zip(self._numbers, self._rows, strict=True):
            if len(block) <= 2 * self._block:
                numbers.append(block)
                rows.append(block_rows)
                continue
            for i in range(0, len(block), self._block):
                numbers.append(block[i : i + self._block].copy())
                rows.append(block_rows[i : i + self._block].copy())
        self._numbers, self._rows = numbers, rows

    def _note_parts(self, numbers: npt.NDArray[np.int64], keys: npt.NDArray[np.int64]) -> None:
        parts = keys & ((1 << PART_BITS) - 1)
        for at in np.flatnonzero(parts):
            self._parts[int(numbers[at])] = int(parts[at])
