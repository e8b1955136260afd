"""Hypothesis strategies for phone numbers and campaign tables, kept in one place."""

from __future__ import annotations

import functools
import time

import phonenumbers
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from bulk_sender.delivery.events import DeliveryStatus, StatusEvent

__all__ = [
    "clean_inputs",
    "digit_strings",
    "formatted_numbers",
    "json_values",
    "messy_texts",
    "regions",
    "status_events",
    "table_cells",
    "table_headers",
    "valid_numbers",
]

_TYPES = (
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.VOIP,
    PhoneNumberType.UAN,
)
# What people and spreadsheets put between digit groups.
_SEPARATORS = ("", " ", "-", ".", "\u00a0", "\u202f", " - ", "  ")


@functools.cache
def _examples() -> tuple[tuple[str, str], ...]:
    """(E.164, region) of phonenumbers' example numbers that it itself calls valid."""
    found: list[tuple[str, str]] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in _TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None and phonenumbers.is_valid_number(number):
                found.append((phonenumbers.format_number(number, PhoneNumberFormat.E164), region))
    return tuple(found)


def regions() -> st.SearchStrategy[str]:
    """A region code phonenumbers supports."""
    return st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS))


def valid_numbers() -> st.SearchStrategy[tuple[str, str]]:
    """(E.164, region) of a number phonenumbers knows to be valid."""
    return st.sampled_from(_examples())


@st.composite
def _mutated(draw: st.DrawFn, digits: str) -> str:
    """``digits`` with a few digits replaced, inserted or deleted."""
    chars = list(digits)
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.integers(0, len(chars)))
        digit = draw(st.sampled_from("0123456789"))
        action = draw(st.sampled_from(("replace", "insert", "delete")))
        if action == "insert" or not chars:
            chars.insert(where, digit)
        elif action == "replace":
            chars[min(where, len(chars) - 1)] = digit
        else:
            del chars[min(where, len(chars) - 1)]
    return "".join(chars) or "1"


@st.composite
def digit_strings(draw: st.DrawFn) -> str:
    """Digits near real numbers: a valid number's international or national digits, mutated."""
    e164, _region = draw(valid_numbers())
    number = phonenumbers.parse(e164)
    national = phonenumbers.national_significant_number(number)
    base = draw(st.sampled_from((e164[1:], national, "0" + national)))
    return draw(st.one_of(_mutated(base), st.from_regex(r"[0-9]{1,18}", fullmatch=True)))


@st.composite
def clean_inputs(draw: st.DrawFn) -> tuple[str, str | None]:
    """(text, default region) in the shape the quick path reads: +digits or bare digits."""
    digits = draw(digit_strings())
    plus = draw(st.booleans())
    region = draw(st.one_of(st.none(), regions()))
    return ("+" + digits if plus else digits), region


@st.composite
def formatted_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(text, E.164): a valid number written with spaces, dashes, dots, brackets, NBSP, 00."""
    e164, _region = draw(valid_numbers())
    digits = e164[1:]
    cuts = sorted(draw(st.sets(st.integers(1, len(digits) - 1), max_size=4)))
    groups = [digits[a:b] for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    bracketed = draw(st.integers(-1, len(groups) - 1))
    if bracketed >= 0:
        groups[bracketed] = f"({groups[bracketed]})"
    text = groups[0]
    for group in groups[1:]:
        text += draw(st.sampled_from(_SEPARATORS)) + group
    prefix = draw(st.sampled_from(("+", "00", "+ ", "00 ", "\u00a0+")))
    padding = draw(st.sampled_from(("", " ", "\t", "\u00a0")))
    return padding + prefix + text + padding, e164


def messy_texts() -> st.SearchStrategy[str]:
    """Anything a cell may hold: arbitrary text, and near-numbers with stray characters."""
    near = st.lists(
        st.sampled_from([*"0123456789", "+", "00", " ", "-", ".", ",", "e", "E", "(", ")"]),
        max_size=25,
    ).map("".join)
    return st.one_of(st.text(max_size=40), near, digit_strings())


def table_headers() -> st.SearchStrategy[list[str]]:
    """A header row of two or more plain column names, so the delimiter shows in it."""
    name = st.from_regex(r"[A-Za-z][A-Za-z0-9_ ]{0,11}", fullmatch=True)
    return st.lists(name, min_size=2, max_size=5)


def table_cells(*, alphabet: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    """A cell's text: quotes, delimiters, line breaks and non-ASCII included; never NUL."""
    if alphabet is None:
        alphabet = st.characters(
            codec="utf-8", exclude_characters="\x00\ufeff", exclude_categories=["Cs"]
        )
    tricky = st.sampled_from(['"', ",", ";", "\t", "\n", "\r\n", "é", "+91 98765 43210"])
    return st.lists(st.one_of(alphabet, tricky), max_size=12).map("".join)


# --------------------------------------------------------------------------- delivery callbacks

_MESSAGE_IDS = ("A1", "A2", "wamid.A1", "wamid.A2")
_CODES = ("", "131047", "131026", "131049", "130429", "131050")


def _iso_times() -> st.SearchStrategy[str]:
    """ISO-8601 UTC times with milliseconds, as the receiver stores them."""
    return st.integers(1_700_000_000_000, 1_700_000_100_000).map(
        lambda ms: (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
        )
    )


@st.composite
def status_events(draw: st.DrawFn) -> StatusEvent:
    """One status event of one of a few messages, with Meta's codes on failures."""
    status = draw(st.sampled_from(list(DeliveryStatus)))
    failed = status in (DeliveryStatus.FAILED, DeliveryStatus.NOT_SENT)
    return StatusEvent(
        message_ids=tuple(draw(st.sets(st.sampled_from(_MESSAGE_IDS), min_size=1, max_size=3))),
        status=status,
        at=draw(_iso_times()),
        recipient="919876543210",
        code=draw(st.sampled_from(_CODES)) if failed else "",
        title=draw(st.sampled_from(("", "Re-engagement message", "Rate limit hit")))
        if failed
        else "",
        detail=draw(st.sampled_from(("", "more than 24 hours"))) if failed else "",
    )


def json_values() -> st.SearchStrategy[object]:
    """Any JSON value, with the keys and values a callback parser looks at more often."""
    keys = st.one_of(
        st.sampled_from(
            ("meta_object", "value", "statuses", "messages", "extra_info", "status", "message_id",
             "id", "timestamp", "recipient_id", "errors", "code", "title", "error_data",
             "details", "from", "text", "body", "type", "ref", "error")
        ),
        st.text(max_size=8),
    )  # fmt: skip
    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
        st.text(max_size=20),
        st.sampled_from(("sent", "DELIVERED", "not-sent", "read", "1722834665", "919876543210")),
    )  # fmt: skip
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6)
        ),
        max_leaves=30,
    )
