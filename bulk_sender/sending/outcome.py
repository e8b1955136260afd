"""Pure classification: what one HTTP attempt's answer (or failure) means.

No I/O here. :func:`classify_answer` takes the status, headers and body of an answer;
:func:`classify_failure` takes a :class:`~bulk_sender.errors.TransportError` from the client.
Both return an :class:`Outcome` whose :class:`Kind` is what the retry policy decides on:

=============  ================================================================  ============
Kind           what happened                                                     retry?
=============  ================================================================  ============
SENT           2xx with ``data.message_id``                                      -
NOT_SENT_YET   the request never left: refused, DNS, connect timeout             yes
THROTTLED      429 (any body) or 503                                             yes, slower
SERVER_ERROR   500, 502, 504, WA500, 408, 425, a proxy's HTML error page         yes
AMBIGUOUS      sent, then read timeout / reset / 2xx without JSON or message_id  only at-least-once
ROW_FAILED     400 WA400 or another row-level 4xx                                never
ACCOUNT        RBC001, WA401, WA-401, WAV2101, E110, a bare 401, any 3xx         run stops
ENDPOINT       404/405 (the URL is wrong), a certificate that cannot be          run stops
               verified, a proxy that refuses the tunnel
=============  ================================================================  ============

ACCOUNT and ENDPOINT are answers that every other request would get as well: the run stops and
the row stays ``not_sent`` instead of burning the campaign. A connect or DNS failure is
NOT_SENT_YET here; when it persists before anything reached the server,
:mod:`bulk_sender.sending.firstcontact` turns it into ENDPOINT.
"""

from __future__ import annotations

import email.utils
import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from bulk_sender.errors import TransportError

__all__ = [
    "ACCOUNT_CODES",
    "ENDPOINT_STATUSES",
    "MAY_HAVE_REACHED",
    "RETRY_AFTER_CAP",
    "Kind",
    "Outcome",
    "classify_answer",
    "classify_failure",
    "parse_retry_after",
]

#: Codes that mean no further request of this run can succeed.
ACCOUNT_CODES: frozenset[str] = frozenset({"RBC001", "WA401", "WA-401", "WAV2101", "E110"})
#: Codes that mean Kaleyra failed on its side and the same request may succeed later.
_SERVER_CODES: frozenset[str] = frozenset({"WA500"})
#: 408 and 425 say the server did not act on the request, so it is safe to send again.
_SERVER_STATUSES: frozenset[int] = frozenset({408, 425, 500, 502, 504})
_THROTTLE_STATUSES: frozenset[int] = frozenset({429, 503})
#: Statuses that mean the URL itself is wrong (a base_url typo): every row would get them.
ENDPOINT_STATUSES: frozenset[int] = frozenset({404, 405})
#: The longest Retry-After we honour, in seconds: a proxy asking for an hour is not obeyed blindly.
RETRY_AFTER_CAP = 120.0


class Kind(enum.Enum):
    """What an attempt's result means for the row and the run."""

    SENT = "sent"
    NOT_SENT_YET = "not_sent_yet"
    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    AMBIGUOUS = "ambiguous"
    ROW_FAILED = "row_failed"
    ACCOUNT = "account"
    ENDPOINT = "endpoint"


#: Attempts after which the message may have reached the customer: Kaleyra took it, the answer
#: was lost, or a server error left it unclear. After any other kind it provably did not (it
#: never left, or Kaleyra answered that it did not take it).
MAY_HAVE_REACHED: frozenset[Kind] = frozenset({Kind.SENT, Kind.AMBIGUOUS, Kind.SERVER_ERROR})


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's classified result; ``code``/``error`` are what the results file shows."""

    kind: Kind
    http_status: int | None = None
    code: str = ""
    error: str = ""
    message_id: str | None = None
    retry_after: float | None = None
    warning: str = ""  #: sent, with something the results should still say


def classify_answer(
    status: int, body: bytes, *, retry_after: str | None = None, now: datetime | None = None
) -> Outcome:
    """Classify an HTTP answer by Kaleyra's ``code`` first, then by the HTTP status."""
    doc = _json_object(body)
    code = _text(doc.get("code")) if doc is not None else ""
    if 200 <= status < 300 and code not in ACCOUNT_CODES:  # the common case, answered first
        message_id = _message_id(doc)
        if message_id:
            return Outcome(Kind.SENT, status, code or f"HTTP {status}", "", message_id)
    error = _kaleyra_message(doc) if doc is not None else _describe_non_json(status, body)
    wait = parse_retry_after(retry_after, now=now)

    def outcome(kind: Kind, message_id: str | None = None) -> Outcome:
        return Outcome(kind, status, code or f"HTTP {status}", error, message_id, wait)

    if code in ACCOUNT_CODES or (status == 401 and not code) or 300 <= status < 400:
        # A redirect means base_url/pod points at the wrong place: every row would get it.
        return outcome(Kind.ACCOUNT)
    if status in ENDPOINT_STATUSES:
        said = f" ({error})" if error else ""
        return Outcome(
            Kind.ENDPOINT,
            status,
            f"ENDPOINT_{status}",
            f"the messages endpoint answered HTTP {status}{said}: the URL is wrong",
        )
    if 200 <= status < 300:  # without a message_id (with one, it returned above)
        if doc is None and (salvaged := _salvaged_id(body)) is not None:
            return Outcome(Kind.SENT, status, "WA202", "", salvaged, warning=_SALVAGE_WARNING)
        why = "answer was not JSON" if doc is None else "answer had no data.message_id"
        return Outcome(
            Kind.AMBIGUOUS,
            status,
            code or f"HTTP {status}",
            f"Kaleyra accepted the request but the {why}; it may have been delivered",
        )
    if status in _THROTTLE_STATUSES:
        return outcome(Kind.THROTTLED)
    if code in _SERVER_CODES or status in _SERVER_STATUSES or status >= 500:
        return outcome(Kind.SERVER_ERROR)
    if doc is None and 400 <= status < 500 and _looks_like_html(body):
        # A proxy's HTML page for a 4xx says nothing about the row: the server's problem.
        return outcome(Kind.SERVER_ERROR)
    return outcome(Kind.ROW_FAILED)


#: ``"message_id": "..."`` in a body that is not JSON (Kaleyra's own sample misses commas).
_LOOSE_ID = re.compile(rb'"message_id"\s*:\s*"([A-Za-z0-9._:=+/-]{1,128})"')
_LOOSE_SUCCESS = re.compile(rb'"code"\s*:\s*"WA202"')
_SALVAGE_WARNING = (
    "Kaleyra's answer was not valid JSON; its message_id was read from the text (WA202)"
)


def _salvaged_id(body: bytes) -> str | None:
    """The message_id of a 2xx body that is not JSON but says WA202 and names one id only.

    Kaleyra documents its success answer without the commas between its fields; if it answers
    like its own sample, the id is still unambiguous, and the message was accepted.
    """
    ids: set[bytes] = set(_LOOSE_ID.findall(body))
    if len(ids) != 1 or _LOOSE_SUCCESS.search(body) is None:
        return None
    return ids.pop().decode("ascii")


def classify_failure(failure: TransportError) -> Outcome:
    """Classify an attempt that got no HTTP answer, by whether the request could have left."""
    if failure.cause == "certificate":
        return Outcome(Kind.ENDPOINT, None, "TLS_VERIFY", failure.description)
    if failure.cause == "proxy":
        return Outcome(Kind.ENDPOINT, None, f"PROXY_{failure.status or 0}", failure.description)
    if failure.phase == "connect":
        code = "DNS_ERROR" if failure.cause == "dns" else "CONNECT_ERROR"
        return Outcome(Kind.NOT_SENT_YET, None, code, failure.description)
    return Outcome(
        Kind.AMBIGUOUS,
        None,
        "NO_ANSWER",
        f"{failure.description}; the request was sent and may have been delivered",
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped.

    Returns ``None`` for a missing or unparseable header, so the caller falls back to backoff.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _message_id(doc: dict[str, Any] | None) -> str:
    data = doc.get("data") if doc is not None else None
    return _text(data.get("message_id")) if isinstance(data, dict) else ""


def _kaleyra_message(doc: dict[str, Any]) -> str:
    """Kaleyra's own words: ``message``, plus the ``error`` details when they add something."""
    message = _text(doc.get("message"))
    details = doc.get("error")
    extra = []
    if isinstance(details, dict):
        extra = [_text(v) for v in details.values() if _text(v) and _text(v) != message]
    return "; ".join([message, *extra] if message else extra)


def _looks_like_html(body: bytes) -> bool:
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<body" in head


def _describe_non_json(status: int, body: bytes) -> str:
    if _looks_like_html(body):
        return f"HTTP {status} with an HTML page (a proxy or gateway error, not Kaleyra's JSON)"
    text = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}: {text}" if text else f"HTTP {status} with an empty body"
