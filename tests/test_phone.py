"""Tests for input/phone.py: E.164 normalisation, its reasons, and the quick path's proof."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumber

from bulk_sender.input.phone import (
    _QUICK,
    _REFERENCE,
    PhoneVerdict,
    _is_valid,
    _normalise,
    _quick_international,
    _quick_national,
    normalise,
    split_recipients,
)
from tests.strategies import (
    clean_inputs,
    digit_strings,
    formatted_numbers,
    messy_texts,
    regions,
    valid_numbers,
)

NO_REGION = "no country code and no [campaign] default_region is set"
SYMBOLS = "contains letters or symbols, so it is not a phone number"


def ok(e164: str) -> PhoneVerdict:
    """A usable verdict without a warning."""
    return PhoneVerdict(e164=e164, problem=None, warning=None)


def fields(number: PhoneNumber) -> tuple[object, ...]:
    """What of a PhoneNumber the verdict depends on."""
    return (
        number.country_code,
        number.national_number,
        bool(number.italian_leading_zero),
        number.number_of_leading_zeros,
    )


# --- properties ------------------------------------------------------------------------------


@settings(deadline=None)  # the first calls compile regexes and may load the geocoder
@given(formatted_numbers(), st.one_of(st.none(), regions()))
def test_formatting_noise_never_changes_the_number(
    case: tuple[str, str], region: str | None
) -> None:
    """Spaces, dashes, dots, brackets, NBSP and 00 around a valid number read as that number."""
    text, e164 = case
    assert normalise(text, region) == ok(e164)


@settings(deadline=None)
@given(valid_numbers())
def test_valid_numbers_read_as_themselves(case: tuple[str, str]) -> None:
    """Every number phonenumbers calls valid comes back unchanged and without a warning."""
    e164, region = case
    assert normalise(e164, None) == ok(e164)
    assert normalise(e164, region) == ok(e164)


@settings(deadline=None)
@given(messy_texts(), st.one_of(st.none(), regions(), st.text(max_size=4)))
def test_normalise_never_raises(raw: str, region: str | None) -> None:
    """Any text and any region give a verdict: usable E.164 digits or a problem."""
    verdict = normalise(raw, region)
    assert (verdict.e164 is None) != (verdict.problem is None)
    if verdict.e164 is not None:
        assert re.fullmatch(r"\+[1-9][0-9]{2,20}", verdict.e164)


@settings(max_examples=600, deadline=None)
@given(clean_inputs())
def test_quick_path_gives_the_reference_verdict(case: tuple[str, str | None]) -> None:
    """For clean digits the quick reading gives parse + is_valid_number's verdict, exactly."""
    text, region = case
    assert _normalise(text, region, _QUICK) == _normalise(text, region, _REFERENCE)


@settings(deadline=None)
@given(messy_texts(), st.one_of(st.none(), regions()))
def test_quick_path_gives_the_reference_verdict_for_messy_text(
    raw: str, region: str | None
) -> None:
    """Messy text too: both readings agree on every verdict."""
    assert _normalise(raw, region, _QUICK) == _normalise(raw, region, _REFERENCE)


@settings(max_examples=600, deadline=None)
@given(digit_strings())
def test_quick_international_equals_parse(digits: str) -> None:
    """Whenever the quick international reading answers, it is exactly what parse returns."""
    quick = _quick_international(digits)
    assume(quick is not None)
    assert quick is not None
    assert fields(quick) == fields(phonenumbers.parse("+" + digits))


@settings(max_examples=600, deadline=None)
@given(digit_strings(), regions())
def test_quick_national_equals_parse(digits: str, region: str) -> None:
    """Whenever the quick national reading answers, it is exactly what parse returns."""
    quick = _quick_national(digits, region)
    assume(quick is not None)
    assert quick is not None
    assert fields(quick) == fields(phonenumbers.parse(digits, region))


@settings(max_examples=600, deadline=None)
@given(digit_strings())
def test_validity_equals_phonenumbers(digits: str) -> None:
    """The one-regex validity test agrees with phonenumbers.is_valid_number."""
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        assume(False)
        raise
    assert _is_valid(number) == phonenumbers.is_valid_number(number)


@pytest.mark.parametrize(
    ("digits", "region"),
    [
        ("919876543210", None),
        ("447911123456", None),
        ("12025550123", None),
        ("9876543210", "IN"),
        ("919876543210", "IN"),
        ("7911123456", "GB"),
        ("2025550123", "US"),
    ],
)
def test_quick_path_answers_for_common_clean_numbers(digits: str, region: str | None) -> None:
    """The quick path really is taken for everyday numbers (so the proofs above are not vacuous)."""
    if region is None:
        assert _quick_international(digits) is not None
    else:
        assert _quick_national(digits, region) is not None


# --- examples --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("9876543210", "IN"),
        ("09876543210", "IN"),
        ("919876543210", "IN"),
        ("+91 98765 43210", None),
        ("+91-98765-43210", "US"),
        ("0091 98765 43210", None),
        ("(+91) 98765.43210", None),
        ("\u202a+91\u00a098765\u202f43210\u202c", None),
        ("९८७६५४३२१०", "IN"),
        ("919876543210", None),
        ("9876543210", "in"),
    ],
)
def test_indian_numbers(raw: str, region: str | None) -> None:
    """Indian numbers in the shapes campaign files hold all read as +919876543210."""
    assert normalise(raw, region) == ok("+919876543210")


def test_plus_dropped_by_excel_is_recovered() -> None:
    """Digits that are not valid in the region but valid as international get their + back."""
    assert normalise("447911123456", "IN") == ok("+447911123456")


def test_plus_dropped_from_an_unknown_range_is_recovered_with_a_warning() -> None:
    """447700900123 (a UK range phonenumbers does not know) reads as +44, with a warning."""
    verdict = normalise("447700900123", "IN")
    assert verdict.e164 == "+447700900123"
    assert verdict.problem is None
    assert verdict.warning is not None
    assert "sent anyway" in verdict.warning


@pytest.mark.parametrize("raw", ["9.19876543210E+11", "9,19876543210E+11", "9.19877e11"])
def test_scientific_notation_is_a_problem(raw: str) -> None:
    """A number Excel showed in scientific notation is refused, never guessed."""
    verdict = normalise(raw, "IN")
    assert verdict.e164 is None
    assert verdict.problem is not None
    assert verdict.problem.startswith(
        f"looks damaged by a spreadsheet (scientific notation): {raw}"
    )


def test_decimal_number_is_a_problem() -> None:
    """919876543210.0 is a float printed by a spreadsheet, not a dot-separated number."""
    verdict = normalise("919876543210.0", "IN")
    assert verdict.problem is not None
    assert "decimal number" in verdict.problem


@pytest.mark.parametrize(("raw", "region"), [("12345", "IN"), ("+91 98765", None), ("+1", None)])
def test_too_short(raw: str, region: str | None) -> None:
    """A few digits are too short to be a phone number."""
    assert normalise(raw, region).problem == "too short to be a phone number"


def test_too_long() -> None:
    """Twenty digits are too long to be a phone number."""
    assert normalise("+91 98765 43210 98765 43", None).problem == "too long to be a phone number"


def test_local_number_without_area_code() -> None:
    """A number only diallable locally names the country and the missing area code."""
    problem = normalise("+91 1234567", None).problem
    assert problem == "too short for India (+91): the area code seems to be missing"


def test_impossible_country_code() -> None:
    """+999 is no country's calling code."""
    assert normalise("+999 1234567", None).problem == "does not start with a real country code"


@pytest.mark.parametrize(
    "raw", ["98765abc10", "call me", "+91 98765 43210 ext 5", "++919876543210"]
)
def test_letters_and_symbols(raw: str) -> None:
    """Letters or stray symbols make a cell not a phone number."""
    assert normalise(raw, "IN").problem == SYMBOLS


def test_mexico_old_mobile_prefix_is_usable_with_a_warning() -> None:
    """+52 1 mobiles (phonenumbers issue 306) are sent as written, with a warning."""
    verdict = normalise("+52 1 55 1234 5678", None)
    assert verdict.e164 == "+5215512345678"
    assert verdict.problem is None
    assert verdict.warning is not None
    assert "+52 1" in verdict.warning


def test_mexico_current_form_is_plainly_valid() -> None:
    """+52 55 1234 5678 is valid without a warning."""
    assert normalise("+52 55 1234 5678", None) == ok("+525512345678")


def test_possible_but_unknown_number_is_sent_with_a_warning() -> None:
    """A number of the right length in no known range is usable, and says so."""
    verdict = normalise("+91 55555 55555", None)
    assert verdict.e164 == "+915555555555"
    assert verdict.warning is not None
    assert "India (+91)" in verdict.warning


def test_dropped_digits_are_not_trusted_unless_valid() -> None:
    """parse would turn +86 123456789012 into +86 6789012: the number is judged as written."""
    verdict = normalise("+86 123456789012", None)
    assert verdict.e164 == "+86123456789012"


@pytest.mark.parametrize("raw", ["", "   ", "\u00a0", "\t\n", " - "])
def test_empty(raw: str) -> None:
    """A blank cell is the problem "empty"."""
    assert normalise(raw, "IN") == PhoneVerdict(e164=None, problem="empty", warning=None)


def test_no_region_and_no_country_code() -> None:
    """Without a default region, digits that are not international are a problem."""
    assert normalise("9876543210", None).problem == NO_REGION


def test_unknown_region_is_named() -> None:
    """A default region phonenumbers does not know is named in the problem."""
    problem = normalise("9876543210", "XX").problem
    assert problem == '[campaign] default_region "XX" is not a known region code'


def test_verdict_has_exactly_one_outcome() -> None:
    """A verdict is either usable or a problem, and only a usable one carries a warning."""
    with pytest.raises(ValueError, match="exactly one"):
        PhoneVerdict(e164=None, problem=None, warning=None)
    with pytest.raises(ValueError, match="warning"):
        PhoneVerdict(e164=None, problem="empty", warning="w")


@pytest.mark.parametrize(
    ("cell", "parts"),
    [
        ("+919876543210, +919812345678", ["+919876543210", "+919812345678"]),
        ("+919876543210", ["+919876543210"]),
        (" , ,+91 98765 43210 ,, ", ["+91 98765 43210"]),
        ("", []),
        ("a,b,c", ["a", "b", "c"]),
    ],
)
def test_split_recipients(cell: str, parts: list[str]) -> None:
    """A cell splits on commas into its stripped, non-empty parts, in order."""
    assert split_recipients(cell) == parts


def test_thousands_of_digits_are_too_long_not_a_crash() -> None:
    """A cell of 5,000 digits (past Python's int-from-str limit) is simply too long."""
    assert normalise("9" * 5000, "IN").problem == "too long to be a phone number"
    assert normalise("+" + "9" * 5000, None).problem == "too long to be a phone number"
