"""Tests for input/recipient.py: which header names the recipient column."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_sender.input.recipient import RECIPIENT_EXAMPLES, is_recipient_header

ACCEPTED = [
    # the names accepted before
    "to", "TO", " Phone ", "phone_number", "mobile", "msisdn",
    # what Indian CRMs and hand-made sheets call it
    "Mobile Number", "Mobile No.", "Mob No", "Mob", "WhatsApp No.", "WhatsApp Number",
    "Whats App No", "WA Number", "wa_no", "Contact Number", "Contact No", "Phone No", "Ph. No.",
    "Phone #", "Cell", "Cell Phone", "Mobile Phone", "Mobile_No", "Mobile-No", "MOBILE NO",
    "MobileNo", "mobileno", "PhoneNumber", "phonenumbers", "WhatsAppNo", "WhatsApp",
    "WhatsApp Mobile Number", "Mobile (WhatsApp)", "Telephone", "Tel", "Phone Numbers",
]  # fmt: skip

REFUSED = [
    "", "name", "No.", "S. No.", "Sr No", "Number", "#", "Contact", "WA", "Ph",
    # a qualifier means one of several numbers: not "the" recipient
    "Alternate Mobile", "Alt Mobile", "Father's Mobile", "Customer Mobile", "Mobile 2",
    "Mobile1", "Mobile No 2", "Landline", "Email", "to phone", "tone", "Recipient Name",
]  # fmt: skip


@pytest.mark.parametrize("name", ACCEPTED)
def test_names_that_mean_the_recipient(name: str) -> None:
    """Each common name of the recipient column is recognised."""
    assert is_recipient_header(name)


@pytest.mark.parametrize("name", REFUSED)
def test_names_that_do_not(name: str) -> None:
    """Bare number words, ambiguous abbreviations and qualified phone columns are not it."""
    assert not is_recipient_header(name)


def test_the_examples_in_the_error_message_are_accepted() -> None:
    """Every example name the "no recipient column" message suggests is itself accepted."""
    assert all(is_recipient_header(name) for name in RECIPIENT_EXAMPLES)


_SEPARATORS = st.sampled_from([" ", "_", "-", ".", ". ", "  ", " - "])


@given(
    st.sampled_from(["Mobile", "Phone", "Cell", "WhatsApp", "Contact", "Mob"]),
    st.sampled_from(["No", "No.", "Number", "Num", "#"]),
    _SEPARATORS,
    st.sampled_from([str.lower, str.upper, str.title, str]),
)
def test_case_and_separators_do_not_matter(
    word: str, number: str, separator: str, case: object
) -> None:
    """A phone word and a number word are accepted whatever the case and separator."""
    assert callable(case)
    assert is_recipient_header(case(f" {word}{separator}{number} "))


@given(st.sampled_from(["Alternate", "Secondary", "Other", "Home", "Office"]), _SEPARATORS)
def test_a_qualifier_is_never_accepted(qualifier: str, separator: str) -> None:
    """A phone column qualified by another word stays an ordinary column."""
    assert not is_recipient_header(f"{qualifier}{separator}Mobile{separator}No")
