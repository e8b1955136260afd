"""Text from outside (Kaleyra's answers, the campaign file, paths) made safe to print.

A server's error text, a cell or a file name can carry ESC (a terminal escape: colours, a
cleared screen, a retitled window), CR or LF (a forged log line), BEL, or a bidirectional
override (text that reads differently from what it is). Everything bulk-sender prints goes
through :func:`printable` at the one place its output is formatted (the log formatters, the
summary, the error line), which shows each such character as an escape (``\\x1b``, ``\\r``,
``\\u202e``) instead: visible, and inert.
"""

from __future__ import annotations

import re

__all__ = ["json_printable", "printable"]

#: C0 controls, DEL and C1 controls; the line and paragraph separators; the bidirectional
#: embeddings, overrides and isolates.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: What JSON leaves raw of those: every character below U+0020 is escaped by any encoder.
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """``text`` with every control character shown as an escape; one line stays one line."""
    return _UNPRINTABLE.sub(_escape, text)


def json_printable(document: str) -> str:
    """A JSON text with the control characters JSON allows raw written as ``\\u`` escapes.

    The same document to a JSON reader; nothing a terminal acts on.
    """
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", document)
