"""Pure: whether a customer's message is an opt-out or an opt-in keyword, and nothing else.

A message opts its sender out only when it says an opt-out keyword and nothing more. Case is
ignored (Unicode case folding), and so is every space, and punctuation, symbols or emoji before
and after the word, because people write ``Stop.``, ``STOP!!``, `` stop `` and ``STOP 🙏``;
``UN SUBSCRIBE`` is ``UNSUBSCRIBE``. Punctuation inside the word is kept (``ST-OP`` is not
``STOP``), and a sentence is not a keyword: ``please stop sending offers`` opts nobody out.
When a word is in both lists, opting out wins.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable

__all__ = ["Keyword", "keyword_of", "normalise_keyword"]


class Keyword(enum.Enum):
    """What a customer's message asks for."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


def normalise_keyword(text: str) -> str:
    """``" S.T.O.P! "`` -> ``"s.t.o.p"``: folded, spaces removed, symbols trimmed at both ends."""
    folded = "".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(folded)
    while start < end and _trimmed(folded[start]):
        start += 1
    while end > start and _trimmed(folded[end - 1]):
        end -= 1
    return folded[start:end]


def keyword_of(text: str, *, opt_out: Iterable[str], opt_in: Iterable[str]) -> Keyword | None:
    """The keyword ``text`` says and nothing else, or None (see the module docstring)."""
    said = normalise_keyword(text)
    if not said:
        return None
    if said in {normalise_keyword(word) for word in opt_out}:
        return Keyword.OPT_OUT
    if said in {normalise_keyword(word) for word in opt_in}:
        return Keyword.OPT_IN
    return None


def _trimmed(char: str) -> bool:
    """Punctuation, symbols (emoji) and invisible format characters around a keyword."""
    return unicodedata.category(char)[0] in "PSC"
