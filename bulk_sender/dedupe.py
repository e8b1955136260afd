"""Which recipient was seen first, for millions of recipients in little memory.

A Python ``dict`` of a million phone numbers costs about 200 MB; the campaign's promise is
constant memory, so :class:`FirstSeen` keeps each recipient as two 64-bit integers (the E.164
digits and the ``(row, part)`` that first used it): new entries go to a small dict, which is
merged into sorted numpy arrays whenever it fills. Lookups check the dict, then binary-search
the arrays. About 16 bytes per recipient, plus the dict's bounded size.
"""

from __future__ import annotations

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

    def __init__(self, *, batch: int = 65_536) -> None:
        self._batch = batch
        self._recent: dict[int, int] = {}
        self._keys: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._values: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._recent) + len(self._keys)

    def __repr__(self) -> str:
        return f"FirstSeen(recipients={len(self)}, merged={len(self._keys)})"

    def first(self, e164: str, row: int, part: int) -> tuple[int, int]:
        """The ``(row, part)`` that first used ``e164``; records this one if it is the first."""
        number = _number(e164)
        found = self._recent.get(number)
        if found is None and len(self._keys):
            at = int(np.searchsorted(self._keys, number))
            if at < len(self._keys) and self._keys[at] == number:
                found = int(self._values[at])
        if found is not None:
            return unpack(found)
        self._recent[number] = pack(row, part)
        if len(self._recent) >= self._batch:
            self._merge()
        return row, part

    def load(self, numbers: npt.NDArray[np.int64], keys: npt.NDArray[np.int64]) -> None:
        """Add many ``(number, packed key)`` pairs at once (from the journal), keeping firsts.

        Where a number appears more than once, the smallest key (the earliest row) wins.
        """
        self._merge()
        all_numbers = np.concatenate([self._keys, numbers.astype(np.int64)])
        all_keys = np.concatenate([self._values, keys.astype(np.int64)])
        order = np.lexsort((all_keys, all_numbers))
        all_numbers, all_keys = all_numbers[order], all_keys[order]
        keep = np.ones(len(all_numbers), dtype=bool)
        keep[1:] = all_numbers[1:] != all_numbers[:-1]
        self._keys, self._values = all_numbers[keep], all_keys[keep]

    def _merge(self) -> None:
        if not self._recent:
            return
        numbers = np.fromiter(self._recent.keys(), dtype=np.int64, count=len(self._recent))
        keys = np.fromiter(self._recent.values(), dtype=np.int64, count=len(self._recent))
        self._recent = {}
        order = np.argsort(numbers)
        numbers, keys = numbers[order], keys[order]
        at = np.searchsorted(self._keys, numbers)
        self._keys = np.insert(self._keys, at, numbers)
        self._values = np.insert(self._values, at, keys)
