"""Which header names the recipient column: ``to``, or what sheets and CRMs call it.

Indian CRMs and hand-made sheets name the column "Mobile Number", "WhatsApp No.", "Contact
No", "Mob No", "Cell"... :func:`is_recipient_header` accepts a name made only of these words,
whatever the case, spaces, dots, underscores, hyphens or ``CamelCase`` between them:

* an optional WhatsApp word: ``whatsapp`` (also ``whats app``), ``wa``;
* phone words: ``mobile``, ``mob``, ``cell``, ``cellphone``, ``phone``, ``telephone``, ``tel``,
  and ``ph``, ``contact``;
* an optional last number word: ``number``, ``numbers``, ``no``, ``nos``, ``num``, ``nbr`` or
  ``#`` (also glued on, as in ``MobileNo``).

``wa``, ``ph`` and ``contact`` mean a phone number only with a number word ("Contact" alone is
often a person's name, "WA" a state); ``to`` and ``msisdn`` are accepted as they are. A name with
any other word is not the recipient: "Alternate Mobile", "Father's Mobile", "Mobile 2",
"Customer Mobile", "S. No." and "Landline" stay ordinary columns, so a sheet with "Mobile"
and "Alternate Mobile" sends to "Mobile". Pure functions, no I/O.
"""

from __future__ import annotations

import re

__all__ = ["RECIPIENT_EXAMPLES", "is_recipient_header"]

#: Shown when no column is the recipient: a few of the names understood.
RECIPIENT_EXAMPLES: tuple[str, ...] = (
    "to", "phone", "mobile", "Mobile No.", "WhatsApp Number", "Contact No", "msisdn",
)  # fmt: skip

_EXACT = frozenset({"to", "msisdn"})
_ALONE = frozenset({"whatsapp", "mobile", "mob", "cell", "cellphone", "phone", "telephone", "tel"})
_WITH_NUMBER = frozenset({"wa", "ph", "contact"})
_WORDS = _ALONE | _WITH_NUMBER
# Longest first, to split a glued one: "phonenumbers" is "phone" + "numbers".
_NUMBER = ("numbers", "number", "nos", "num", "nbr", "no")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_WHATS_APP = re.compile(r"whats\s*app")
_SEPARATORS = re.compile(r"[^0-9a-z]+")


def is_recipient_header(name: str) -> bool:
    """Whether a header cell names the recipient column; see the module docstring."""
    tokens = _tokens(name)
    if len(tokens) == 1 and tokens[0] in _EXACT:
        return True
    numbered = bool(tokens) and tokens[-1] in _NUMBER
    words = tokens[:-1] if numbered else tokens
    if not words or len(words) > 3 or not all(word in _WORDS for word in words):
        return False
    return numbered or any(word in _ALONE for word in words)


def _tokens(name: str) -> list[str]:
    """The words of a header: ``"WhatsApp_No."`` -> ``["whatsapp", "no"]``, with a number word
    glued to the end split off (``"mobileno"`` -> ``["mobile", "no"]``)."""
    text = _WHATS_APP.sub("whatsapp", _CAMEL.sub(" ", name).lower().replace("#", " no "))
    tokens = [token for token in _SEPARATORS.split(text) if token]
    if tokens and tokens[-1] not in _WORDS:
        last = tokens[-1]
        for word in _NUMBER:
            if last.endswith(word) and last[: -len(word)] in _WORDS:
                tokens[-1:] = [last[: -len(word)], word]
                break
    return tokens
