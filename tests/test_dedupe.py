"""FirstSeen: the compact first-use index behaves exactly like a dict, across merges."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_sender.input.dedupe import FirstSeen, pack, unpack

numbers = st.integers(min_value=10_000_000, max_value=10**15 - 1)


@given(
    st.lists(st.tuples(numbers, st.integers(0, 3)), max_size=300),
    st.integers(min_value=1, max_value=16),
    st.integers(min_value=1, max_value=8),
)
@settings(max_examples=300)
def test_matches_a_dict_reference(values: list[tuple[int, int]], batch: int, block: int) -> None:
    """For any recipients, parts, batch and block sizes, FirstSeen answers like a dict."""
    seen = FirstSeen(batch=batch, block=block)
    reference: dict[int, tuple[int, int]] = {}
    for row, (number, part) in enumerate(values, 1):
        expected = reference.setdefault(number, (row, part))
        assert seen.first(f"+{number}", row, part) == expected
    assert len(seen) == len(reference)


@given(st.lists(st.tuples(numbers, st.integers(1, 10**6), st.integers(0, 5)), max_size=200))
def test_load_keeps_the_earliest_key(entries: list[tuple[int, int, int]]) -> None:
    """Loading journal pairs keeps, per number, the smallest (row, part)."""
    seen = FirstSeen(batch=4, block=3)
    seen.load(
        np.array([n for n, _, _ in entries], dtype=np.int64),
        np.array([pack(r, p) for _, r, p in entries], dtype=np.int64),
    )
    expected: dict[int, tuple[int, int]] = {}
    for number, row, part in entries:
        expected[number] = min(expected.get(number, (row, part)), (row, part))
    for number, first in expected.items():
        assert seen.first(f"+{number}", 10**7, 0) == first


def test_pack_round_trips() -> None:
    """pack and unpack are inverse for rows up to billions and parts below 65,536."""
    for row, part in [(1, 0), (5, 3), (3_000_000_000, 65_535)]:
        assert unpack(pack(row, part)) == (row, part)
