"""Phone numbers from campaign cells to E.164, with reasons a marketer understands.

The rules follow GOV.UK Notify's ``phone_number.py``: formatting noise is removed, a leading
``00`` means ``+``, a number without ``+`` is read in the configured region first and, when that
is not a valid number, as an international number whose ``+`` a spreadsheet dropped. A number
that cannot exist is refused with the reason; one that could exist but that ``phonenumbers``
does not know to be valid is sent with a warning (Mexico's ``+52 1`` mobiles are such a case:
``phonenumbers`` calls them too long, WhatsApp uses them).

A ``+`` number that ``parse`` would shorten (it strips what it takes for a national prefix or
carrier code) is trusted only if the result is valid; otherwise it is judged as written.

Speed: ``phonenumbers.parse`` plus ``is_valid_number`` cost 20-30 µs a number. Two quick paths
take about 6 µs: :func:`_quick_international` / :func:`_quick_national` build the
``PhoneNumber`` from the metadata directly (removing a plain national prefix such as the 0 of
``098765 43210``) and give up, leaving it to ``parse``, on anything else it might transform;
:func:`_is_valid` tests validity with one precompiled regex per region and length instead of
phonenumbers' pattern-by-pattern loop. ``_QUICK`` and ``_REFERENCE`` read the same way but for
those; the tests prove with Hypothesis that both give the same verdicts, and that each quick
function agrees with its phonenumbers counterpart.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberFormat, ValidationResult
from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc

__all__ = ["PhoneVerdict", "normalise", "split_recipients"]

_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' bounds for a national significant number
_MEXICO_OLD_MOBILE = 52, "1"  # +52 1 + ten digits: retired in 2019, still WhatsApp's form

# Formatting removed before reading: spaces of every kind, dashes, dots, brackets, and the
# invisible direction marks that text copied from WhatsApp or a phone's contacts carries.
_NOISE = " \t\r\n\v\f-.()[]{}\u00a0\u2007\u202f\u2010\u2011\u2012\u2013\u2014\u2212\ufeff"
_INVISIBLE = "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_DELETE = str.maketrans({**dict.fromkeys(_NOISE + _INVISIBLE), "\uff0b": "+"})
_SCIENTIFIC = re.compile(r"\+?\d+(?:[.,]\d+)?[eE]\+?\d+")
_DECIMAL = re.compile(r"[1-9]\d{5,}[.,]0+")  # 919876543210.0: a spreadsheet float, not a separator

_EMPTY = "empty"
_NO_REGION = "no country code and no [campaign] default_region is set"
_SYMBOLS = "contains letters or symbols, so it is not a phone number"
_BAD_CODE = "does not start with a real country code"
_PARSE_PROBLEMS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: _BAD_CODE,
    # only digits reach parse, so "not a number" means too few of them
    phonenumbers.NumberParseException.NOT_A_NUMBER: "too short to be a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short to be a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short to be a phone number",
    phonenumbers.NumberParseException.TOO_LONG: "too long to be a phone number",
}


@dataclass(frozen=True, slots=True)
class PhoneVerdict:
    """What one cell's number is: usable (``e164``, maybe a ``warning``) or a ``problem``."""

    e164: str | None
    problem: str | None
    warning: str | None

    def __post_init__(self) -> None:
        if (self.e164 is None) == (self.problem is None):
            raise ValueError("a verdict has exactly one of e164 and problem")
        if self.warning is not None and self.e164 is None:
            raise ValueError("only a usable number carries a warning")


def normalise(raw: str, default_region: str | None) -> PhoneVerdict:
    """Read one number; never raises."""
    return _normalise(raw, default_region.upper() if default_region else None, _QUICK)


def split_recipients(cell: str) -> list[str]:
    """The comma-separated numbers of one cell, stripped, empty parts dropped, in order."""
    return [part for part in (piece.strip() for piece in cell.split(",")) if part]


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reader:
    """How to parse and validate: the quick versions, or phonenumbers' own as the reference."""

    international: Callable[[str], PhoneNumber | str]
    national: Callable[[str, str], PhoneNumber | str]
    is_valid: Callable[[PhoneNumber], bool]


def _normalise(raw: str, region: str | None, reader: _Reader) -> PhoneVerdict:
    """The verdict for one cell."""
    compact = _compact(raw)
    if not compact:
        return _problem(_EMPTY)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    plus = compact.startswith("+")
    digits = compact[1:] if plus else compact
    if not digits.isdecimal():
        return _problem(_spreadsheet_problem(raw) or _SYMBOLS)
    if "." in raw or "," in raw:
        damage = _spreadsheet_problem(raw)
        if damage is not None:
            return _problem(damage)
    if not digits.isascii():
        digits = "".join(str(unicodedata.decimal(char)) for char in digits)
    if plus:
        return _verdict(_read_international(digits, reader), reader)
    return _without_plus(digits, region, reader)


def _compact(raw: str) -> str:
    """``raw`` without formatting characters or whitespace of any kind."""
    if raw.isdigit() or (raw[1:].isdigit() and raw[0] == "+"):
        return raw  # already clean: skip the translation
    compact = raw.translate(_DELETE)
    if compact.isascii():
        return compact
    return "".join(c for c in compact if not c.isspace() and unicodedata.category(c) != "Cf")


def _spreadsheet_problem(raw: str) -> str | None:
    """The problem for a number a spreadsheet stored as a number and printed as one."""
    shown = raw.strip()
    if _SCIENTIFIC.fullmatch(shown):
        return (
            f"looks damaged by a spreadsheet (scientific notation): {shown}; its last digits "
            "are lost, so export the column again formatted as Text"
        )
    if _DECIMAL.fullmatch(shown):
        return (
            f"looks damaged by a spreadsheet (a decimal number): {shown}; export the column "
            "again formatted as Text"
        )
    return None


def _without_plus(digits: str, region: str | None, reader: _Reader) -> PhoneVerdict:
    """Read in the default region; if that is not valid, as if a spreadsheet dropped the +.

    Preference: valid in the region, valid as international, possible as international (the
    digits then start with a country code and are too many for a local number), then whatever
    the region reading is.
    """
    local = reader.national(digits, region) if region else None
    if isinstance(local, PhoneNumber) and reader.is_valid(local):
        return _usable(local, warning=None)
    forced = _read_international(digits, reader)
    if isinstance(forced, PhoneNumber):
        if reader.is_valid(forced):
            return _usable(forced, warning=None)
        if phonenumbers.is_possible_number_with_reason(forced) == ValidationResult.IS_POSSIBLE:
            return _verdict(forced, reader)
    if local is None:
        return _problem(_NO_REGION)
    return _verdict(local, reader)


def _read_international(digits: str, reader: _Reader) -> PhoneNumber | str:
    """``+digits`` as phonenumbers reads it, unless that drops digits and is still not valid.

    parse removes what it takes for a national prefix or carrier code after the country code
    (``+44 0 7911 123456`` is ``+44 7911 123456``). Dropping leading zeros is such a prefix; any
    other drop is trusted only when it yields a valid number, else the number is judged as
    written (``+86 123456789012`` must not become ``+86 6789012``).
    """
    number = reader.international(digits)
    if not isinstance(number, PhoneNumber) or number.country_code is None:
        return number
    written = digits[len(str(number.country_code)) :]
    if written.lstrip("0") == str(number.national_number) or reader.is_valid(number):
        return number
    return _as_written(number.country_code, written)


def _as_written(code: int, nsn: str) -> PhoneNumber:
    """The number with exactly these national digits, leading zeros kept as parse keeps them."""
    number = PhoneNumber(country_code=code, national_number=int(nsn or "0"))
    zeros = len(nsn) - len(nsn.lstrip("0"))
    if zeros and len(nsn) > 1:
        number.italian_leading_zero = True
        number.number_of_leading_zeros = min(zeros, len(nsn) - 1)
    return number


def _verdict(number: PhoneNumber | str, reader: _Reader) -> PhoneVerdict:
    """Judge a parsed number (a str is already a problem)."""
    if isinstance(number, str):
        return _problem(number)
    if reader.is_valid(number):
        return _usable(number, warning=None)
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == ValidationResult.IS_POSSIBLE:
        return _usable(number, warning=_unknown_warning(number))
    if _is_mexico_old_mobile(number, reader):
        return _usable(number, warning=_mexico_warning(number))
    return _problem(_impossible_problem(number, reason))


def _usable(number: PhoneNumber, *, warning: str | None) -> PhoneVerdict:
    """A number to send to."""
    return PhoneVerdict(e164=_e164(number), problem=None, warning=warning)


def _e164(number: PhoneNumber) -> str:
    """``format_number(number, E164)``: + country code + national number, written directly
    where no leading zero is kept (a tenth of the call's cost, for every row)."""
    if number.italian_leading_zero or not number.national_number:
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return f"+{number.country_code}{number.national_number}"


def _problem(reason: str) -> PhoneVerdict:
    """A number not to send to."""
    return PhoneVerdict(e164=None, problem=reason, warning=None)


def _is_mexico_old_mobile(number: PhoneNumber, reader: _Reader) -> bool:
    """+52 1 followed by a valid ten-digit Mexican number."""
    code, prefix = _MEXICO_OLD_MOBILE
    nsn = phonenumbers.national_significant_number(number)
    if number.country_code != code or not nsn.startswith(prefix) or len(nsn) != 11:
        return False
    return reader.is_valid(PhoneNumber(country_code=code, national_number=int(nsn[1:])))


def _unknown_warning(number: PhoneNumber) -> str:
    """Why a possible but unknown number is sent anyway."""
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return (
        f"{e164} has the right length for {_country(number)} but is not a number range the "
        "phonenumbers library knows; it is sent anyway"
    )


def _mexico_warning(number: PhoneNumber) -> str:
    """Why a +52 1 number is sent as written."""
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return (
        f"{e164} uses Mexico's old mobile prefix +52 1, which the phonenumbers library no "
        "longer knows but WhatsApp still uses; it is sent as written"
    )


def _impossible_problem(number: PhoneNumber, reason: int) -> str:
    """Why a number cannot exist, in words."""
    if reason == ValidationResult.INVALID_COUNTRY_CODE:
        return f"+{number.country_code} is not a country code"
    if reason == ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        return f"too short for {_country(number)}: the area code seems to be missing"
    if reason == ValidationResult.TOO_SHORT:
        return "too short to be a phone number"
    if reason == ValidationResult.TOO_LONG:
        return "too long to be a phone number"
    return f"not a possible number for {_country(number)}"


def _country(number: PhoneNumber) -> str:
    """'India (+91)', or '+1' where the code is shared by several countries."""
    code = number.country_code or 0
    name = _country_name(code)
    return f"{name} (+{code})" if name else f"+{code}"


@functools.cache
def _country_name(code: int) -> str:
    """The English name of the one country using a calling code, else ''."""
    # Imported here: the geocoder takes half a second to load and only messages need it.
    from phonenumbers import geocoder

    example = PhoneNumber(country_code=code, national_number=0)
    return str(geocoder.country_name_for_number(example, "en"))


# --- parsing: phonenumbers.parse, and the quick equivalents for clean digits -----------------


def _parse_international(digits: str) -> PhoneNumber | str:
    """``parse("+" + digits)``, or the problem."""
    return _parse("+" + digits, None)


def _parse_national(digits: str, region: str) -> PhoneNumber | str:
    """``parse(digits, region)``, or the problem."""
    parsed = _parse(digits, region)
    if parsed == _BAD_CODE:
        return f'[campaign] default_region "{region}" is not a known region code'
    return parsed


def _quick_or_parse_international(digits: str) -> PhoneNumber | str:
    """The quick international reading, or parse where it gives up."""
    number = _quick_international(digits)
    return number if number is not None else _parse_international(digits)


def _quick_or_parse_national(digits: str, region: str) -> PhoneNumber | str:
    """The quick national reading, or parse where it gives up."""
    number = _quick_national(digits, region)
    return number if number is not None else _parse_national(digits, region)


def _parse(text: str, region: str | None) -> PhoneNumber | str:
    """phonenumbers.parse, its exception turned into a problem."""
    try:
        number: PhoneNumber = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        return _PARSE_PROBLEMS.get(exc.error_type, _SYMBOLS)
    return number


@dataclass(frozen=True, slots=True)
class _Plan:
    """A numbering plan's metadata with the patterns the quick paths use, compiled once."""

    code: int
    idd: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    simple_prefix: bool  # no capturing groups and no transform rule: a match is just removed
    general: re.Pattern[str] | None
    lengths: tuple[int, ...]
    local_lengths: tuple[int, ...]


def _quick_international(digits: str) -> PhoneNumber | None:
    """What ``parse("+" + digits)`` returns, or None where parse could transform the digits."""
    if digits[0] == "0":
        return None
    for size in (1, 2, 3):
        code = _CODES.get(digits[:size])
        if code is not None:
            return _plain(_home_plan(code), digits[size:])
    return None


def _quick_national(digits: str, region: str) -> PhoneNumber | None:
    """What ``parse(digits, region)`` returns, or None where parse could transform the digits."""
    plan = _region_plan(region)
    if plan is None or _starts(plan.idd, digits):
        return None
    prefix = str(plan.code)
    if digits.startswith(prefix):
        rest = _strip_national_prefix(plan, digits[len(prefix) :], check_length=False)
        if rest is None:
            return None
        if _code_is_redundant(plan, digits, rest):
            return _plain(_home_plan(plan.code), rest)
    return _plain(plan, digits)


def _code_is_redundant(plan: _Plan, digits: str, rest: str) -> bool:
    """parse's test for digits that start with the region's own country code."""
    general = plan.general
    if general is not None and not general.fullmatch(digits) and general.fullmatch(rest):
        return True
    return len(digits) > plan.lengths[-1] and len(digits) not in plan.local_lengths


def _plain(plan: _Plan | None, digits: str) -> PhoneNumber | None:
    """The number parse makes of national ``digits``, unless it would keep a leading zero."""
    if plan is None or len(digits) < _MIN_NSN:
        return None
    nsn = _strip_national_prefix(plan, digits, check_length=True)
    if nsn is None or not _MIN_NSN <= len(nsn) <= _MAX_NSN or nsn[0] == "0":
        return None
    return PhoneNumber(country_code=plan.code, national_number=int(nsn))


def _strip_national_prefix(plan: _Plan, digits: str, *, check_length: bool) -> str | None:
    """parse's removal of a national prefix (the 0 of 098765 43210); None: leave it to parse.

    parse removes it unless the number was a full match before and is not after, or (where
    parse tests the length) what is left is too short, local-only or of an impossible length.
    """
    match = plan.national_prefix.match(digits) if plan.national_prefix else None
    if match is None or not digits:
        return digits
    if not plan.simple_prefix:
        return None
    rest = digits[match.end() :]
    general = plan.general
    if general is not None and general.fullmatch(digits) and not general.fullmatch(rest):
        return digits
    size = len(rest)
    if not check_length:
        return rest
    if size in plan.local_lengths or (size not in plan.lengths and size < plan.lengths[-1]):
        return digits
    return rest


def _starts(pattern: re.Pattern[str] | None, text: str) -> bool:
    """Whether a metadata pattern matches at the start of ``text``."""
    return pattern is not None and pattern.match(text) is not None


_CODES = {str(code): code for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}


@functools.cache
def _region_plan(region: str) -> _Plan | None:
    """The plan ``parse`` starts from for a default region."""
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return None
    return _plan(PhoneMetadata.metadata_for_region(region, None))


@functools.cache
def _home_plan(code: int) -> _Plan | None:
    """The plan ``parse`` uses for numbers with this country code."""
    home = phonenumbers.region_code_for_country_code(code)
    return _plan(PhoneMetadata.metadata_for_region_or_calling_code(code, home))


def _plan(metadata: PhoneMetadata | None) -> _Plan | None:
    """Compile what the quick paths need; None when the metadata lacks something they assume."""
    if metadata is None or metadata.country_code is None or metadata.general_desc is None:
        return None
    general = metadata.general_desc
    if not general.possible_length:
        return None
    national_prefix = _compiled(metadata.national_prefix_for_parsing)
    return _Plan(
        code=metadata.country_code,
        idd=_compiled(metadata.international_prefix),
        national_prefix=national_prefix,
        simple_prefix=national_prefix is not None
        and national_prefix.groups == 0
        and not metadata.national_prefix_transform_rule,
        general=_compiled(general.national_number_pattern),
        lengths=tuple(general.possible_length),
        local_lengths=tuple(general.possible_length_local_only or ()),
    )


def _compiled(pattern: str | None) -> re.Pattern[str] | None:
    """A metadata pattern compiled; None where absent or empty (phonenumbers ignores those)."""
    return re.compile(pattern) if pattern else None


# --- validity: phonenumbers.is_valid_number, one regex per (region, length) --------------------

_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)
_NEVER = re.compile(r"(?!)")


def _is_valid(number: PhoneNumber) -> bool:
    """phonenumbers.is_valid_number, without its pattern-by-pattern loop."""
    code = number.country_code
    if code is None:
        return False
    if number.italian_leading_zero:
        nsn = phonenumbers.national_significant_number(number)
    else:
        nsn = str(number.national_number)
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ()):
        claims = _claims(region, code, nsn)
        if claims is not None:
            return claims
    return False


def _claims(region: str, code: int, nsn: str) -> bool | None:
    """Whether ``region`` takes the number (and then whether it is valid there), else None.

    This is phonenumbers' choice of region for a calling code shared by several: the first
    region whose leading digits match, or, for a region without leading digits, that accepts it.
    """
    leading = _leading_digits(region, code)
    if leading is not None and leading.match(nsn) is None:
        return None
    valid = _valid_pattern(region, code, len(nsn)).fullmatch(nsn) is not None
    return valid if leading is not None or valid else None


@functools.cache
def _leading_digits(region: str, code: int) -> re.Pattern[str] | None:
    """The leading-digits pattern that claims a shared code's numbers for ``region``."""
    if len(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())) < 2:
        return None
    metadata = PhoneMetadata.metadata_for_region(region, None)
    return _compiled(metadata.leading_digits) if metadata is not None else None


@functools.cache
def _valid_pattern(region: str, code: int, length: int) -> re.Pattern[str]:
    """One regex fullmatching the valid national numbers of ``length`` in ``region``."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    general_desc = metadata.general_desc if metadata is not None else None
    if general_desc is None or not _allows(general_desc, length):
        return _NEVER
    general = general_desc.national_number_pattern
    descs = [getattr(metadata, name) for name in _TYPES]
    types = [d.national_number_pattern for d in descs if _allows(d, length)]
    if not types:
        return _NEVER
    alternatives = "|".join(f"(?:{pattern})" for pattern in types)
    return re.compile(f"(?=(?:{general})\\Z)(?:{alternatives})")


def _allows(desc: PhoneNumberDesc | None, length: int) -> bool:
    """phonenumbers' length pre-check for a number description, plus a pattern to match."""
    if desc is None or not desc.national_number_pattern:
        return False
    return not desc.possible_length or length in desc.possible_length


def _reference_is_valid(number: PhoneNumber) -> bool:
    """phonenumbers' own validity test."""
    return bool(phonenumbers.is_valid_number(number))


_QUICK = _Reader(_quick_or_parse_international, _quick_or_parse_national, _is_valid)
_REFERENCE = _Reader(_parse_international, _parse_national, _reference_is_valid)
