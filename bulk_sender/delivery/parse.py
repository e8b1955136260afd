"""Pure: a callback request's decoded body (or query) -> the events to store, or a rejection.

Two shapes are read, for both endpoints:

* **Kaleyra's v2 shape.** Statuses: ``meta_object.value.statuses[]`` (``id``, ``status``,
  ``timestamp``, ``recipient_id``, ``errors[]`` with ``code``, ``title``, ``message``,
  ``error_data.details``), ``extra_info`` (``message_id``, ``ref``, ``ref1``, ``ref2``; ``trace_id``
  and ``waba_id`` are ignored) and the top-level ``status`` and ``message_id``. Incoming messages:
  ``meta_object.value.messages[]`` (``from``, ``id``, ``timestamp``, ``type``, ``text.body``).
* **The flat shape** of a callback profile built from "dynamic variables" (a JSON object, or the
  query string of a GET), with the names in :data:`FLAT_STATUS` and :data:`FLAT_INCOMING`; the
  first name present wins. A v2 body without statuses (Kaleyra's NOT-SENT, which never reached
  Meta) is read the same way, from its top-level fields.

Where the ids go: a status's ids are its own ``id`` plus ``extra_info.message_id`` and the
top-level ``message_id``, the request-level two only when the request carries one status (or
all its statuses share one ``id``), so that one request's ids never spill onto another
message. Status names are case-insensitive (``NOT-SENT``, ``not-sent``, ``not_sent``).

Anything else is rejected with :class:`CallbackRejected` and a short reason: not a JSON object,
a field of the wrong type, an unknown status, a time that is not one, no status, a status with
neither a message id nor a recipient. Every function here is total over any JSON value.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from bulk_sender.delivery.events import (
    Callback,
    DeliveryStatus,
    IncomingMessage,
    StatusEvent,
)
from bulk_sender.errors import BulkSenderError

__all__ = [
    "FLAT_INCOMING",
    "FLAT_STATUS",
    "CallbackRejected",
    "decode",
    "format_time",
    "parse_incoming",
    "parse_status",
]

#: Flat status fields: what we read -> the names accepted, in order of preference.
FLAT_STATUS: Final[Mapping[str, tuple[str, ...]]] = {
    "message_id": ("message_id", "id", "wamid", "msg_id"),
    "status": ("status", "message_status"),
    "recipient": ("recipient_id", "recipient", "to", "mobile", "wa_id"),
    "at": ("timestamp", "time", "created_at", "updated_at"),
    "code": ("error_code", "code"),
    "title": ("error_title", "title", "error_message", "reason", "error"),
    "detail": ("error_details", "error_detail", "details"),
    "ref": ("ref",),
    "ref1": ("ref1",),
    "ref2": ("ref2",),
}
#: Flat incoming-message fields, likewise.
FLAT_INCOMING: Final[Mapping[str, tuple[str, ...]]] = {
    "sender": ("from", "mobile", "wa_id"),
    "message_id": ("id", "message_id", "wamid"),
    "at": ("timestamp", "created_at", "time"),
    "type": ("type",),
    "body": ("body", "message", "text"),
}

_STATUSES: Final[Mapping[str, DeliveryStatus]] = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
    "not-sent": DeliveryStatus.NOT_SENT,
    "not_sent": DeliveryStatus.NOT_SENT,
    "notsent": DeliveryStatus.NOT_SENT,
    "not sent": DeliveryStatus.NOT_SENT,
}
_MAX_TEXT: Final = 4096
#: Unix times outside 2001..2286 are not times a callback can carry.
_EARLIEST, _LATEST = 1_000_000_000, 9_999_999_999


class CallbackRejected(BulkSenderError):
    """A callback that cannot be stored as it is; ``reason`` is one short sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(body: bytes) -> object:
    """The JSON value of a request body."""
    if not body.strip():
        raise CallbackRejected("The body is empty; a callback is a JSON object.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CallbackRejected("The body is not valid JSON.") from None


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds, as the journal writes times."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------- status callbacks


def parse_status(document: object, *, received_at: str) -> Callback:
    """The status events of a status callback (decoded JSON, or a GET's query as a dict)."""
    doc = _object(document, "the body")
    extra = _object(doc.get("extra_info", {}), "extra_info")
    statuses = _v2_list(doc, "statuses")
    if not statuses and _v2_list(doc, "messages"):
        raise CallbackRejected(
            "This is an incoming message, not a status; point it at /kaleyra/incoming."
        )
    if not statuses:
        return Callback(statuses=(_flat_status(doc, extra, received_at),))
    shared = _request_ids(doc, extra, statuses)
    events: list[StatusEvent] = []
    for i, entry in enumerate(statuses):
        try:
            events.append(_v2_status(_object(entry, _EACH), doc, extra, shared, received_at))
        except CallbackRejected as exc:  # name the entry (the usual case pays for no names)
            raise CallbackRejected(exc.reason.replace(_EACH, f"statuses[{i}]", 1)) from None
    return Callback(statuses=tuple(events))


def _v2_list(doc: Mapping[str, Any], name: str) -> list[object]:
    """``meta_object.value.<name>`` as a list ([] when absent)."""
    meta = doc.get("meta_object")
    if meta is None:
        return []
    value = _object(meta, "meta_object").get("value")
    if value is None:
        return []
    items = _object(value, "meta_object.value").get(name)
    if items is None:
        return []
    if not isinstance(items, list):
        raise CallbackRejected(f"meta_object.value.{name} must be a list.")
    return items


def _request_ids(
    doc: Mapping[str, Any], extra: Mapping[str, Any], statuses: Sequence[object]
) -> tuple[str, ...]:
    """The request-level ids, if they may be given to every status (see the module docstring)."""
    if len(statuses) > 1:
        own = {
            _text(s.get("id"), f"statuses[{i}].id")
            for i, s in enumerate(statuses)
            if isinstance(s, dict)
        }
        if len(own) > 1:
            return ()
    found = (_text(doc.get("message_id"), "message_id"),
             _text(extra.get("message_id"), "extra_info.message_id"))  # fmt: skip
    return tuple(i for i in found if i)


#: A status entry in a rejection's reason, until parse_status names which one.
_EACH: Final = "statuses[]"


def _v2_status(
    entry: Mapping[str, Any],
    doc: Mapping[str, Any],
    extra: Mapping[str, Any],
    shared: tuple[str, ...],
    received_at: str,
) -> StatusEvent:
    name = entry.get("status", doc.get("status"))
    code, title, detail = _errors(entry.get("errors"), "statuses[].errors")
    if not code and not title:
        code, title, detail = _errors(doc.get("errors"), "errors")
    ids = _distinct([_text(entry.get("id"), "statuses[].id"), *shared])
    return _event(
        ids=ids,
        status=_status(name, "statuses[].status"),
        at=_time(entry.get("timestamp"), "statuses[].timestamp", received_at),
        recipient=_number(entry.get("recipient_id"), "statuses[].recipient_id"),
        refs=_refs(extra, doc),
        code=code, title=title, detail=detail,
    )  # fmt: skip


def _flat_status(doc: Mapping[str, Any], extra: Mapping[str, Any], received_at: str) -> StatusEvent:
    found = {field: _first(doc, names) for field, names in FLAT_STATUS.items()}
    if found["status"] is None:
        raise CallbackRejected(
            "No status: expected meta_object.value.statuses[] or a top-level status field."
        )
    code, title, detail = _errors(doc.get("errors"), "errors")
    error = doc.get("error")
    if isinstance(error, dict):
        code, title, detail = _errors([error], "error")
        found["title"] = None
    ids = _distinct(
        [_text(found["message_id"], "message_id"), _text(extra.get("message_id"), "extra_info")]
    )
    return _event(
        ids=ids,
        status=_status(found["status"], "status"),
        at=_time(found["at"], "timestamp", received_at),
        recipient=_number(found["recipient"], "recipient"),
        refs=_refs(extra, doc),
        code=code or _text(found["code"], "error_code"),
        title=title or _text(found["title"], "error_title"),
        detail=detail or _text(found["detail"], "error_details"),
    )


def _event(
    *,
    ids: tuple[str, ...],
    status: DeliveryStatus,
    at: str,
    recipient: str,
    refs: tuple[str, str, str],
    code: str,
    title: str,
    detail: str,
) -> StatusEvent:
    if not ids and not recipient:
        raise CallbackRejected(
            "The status carries neither a message id nor a recipient, so no message can be "
            "matched to it."
        )
    return StatusEvent(
        message_ids=ids, status=status, at=at, recipient=recipient, ref=refs[0], ref1=refs[1],
        ref2=refs[2], code=code, title=title, detail=detail,
    )  # fmt: skip


def _errors(value: object, where: str) -> tuple[str, str, str]:
    """(code, title, detail) of the first entry of an ``errors`` list."""
    if value is None:
        return "", "", ""
    if not isinstance(value, list):
        raise CallbackRejected(f"{where} must be a list.")
    if not value:
        return "", "", ""
    first = _object(value[0], f"{where}[0]")
    data = _object(first.get("error_data", {}), f"{where}[0].error_data")
    title = _text(first.get("title"), f"{where}[0].title")
    message = _text(first.get("message"), f"{where}[0].message")
    detail = _text(data.get("details"), f"{where}[0].error_data.details")
    return (
        _text(first.get("code"), f"{where}[0].code"),
        title or message,
        detail or (message if title and message != title else ""),
    )


def _refs(extra: Mapping[str, Any], doc: Mapping[str, Any]) -> tuple[str, str, str]:
    return (
        _text(extra.get("ref", doc.get("ref")), "extra_info.ref"),
        _text(extra.get("ref1", doc.get("ref1")), "extra_info.ref1"),
        _text(extra.get("ref2", doc.get("ref2")), "extra_info.ref2"),
    )


def _status(value: object, where: str) -> DeliveryStatus:
    name = _text(value, where).lower()
    status = _STATUSES.get(name)
    if status is None:
        shown = name[:40] or "(empty)"
        raise CallbackRejected(
            f"{where} {shown!r} is not a status; expected sent, delivered, read, failed or "
            "not-sent."
        )
    return status


# --------------------------------------------------------------------------- incoming messages


def parse_incoming(document: object, *, received_at: str) -> Callback:
    """The messages of an incoming-message callback."""
    doc = _object(document, "the body")
    messages = _v2_list(doc, "messages")
    if _v2_list(doc, "statuses") and not messages:
        raise CallbackRejected(
            "This is a status callback, not an incoming message; point it at /kaleyra/status."
        )
    if messages:
        found = [
            _v2_message(_object(m, f"messages[{i}]"), f"messages[{i}]", received_at)
            for i, m in enumerate(messages)
        ]
        return Callback(incoming=tuple(found))
    return Callback(incoming=(_flat_message(doc, received_at),))


def _v2_message(entry: Mapping[str, Any], where: str, received_at: str) -> IncomingMessage:
    kind = _text(entry.get("type"), f"{where}.type") or "text"
    return _message(
        sender=_number(entry.get("from"), f"{where}.from"),
        message_id=_text(entry.get("id"), f"{where}.id"),
        at=_time(entry.get("timestamp"), f"{where}.timestamp", received_at),
        kind=kind,
        body=_message_text(entry, kind, where),
    )


def _message_text(entry: Mapping[str, Any], kind: str, where: str) -> str:
    """The words of a message: text, a button's label, a reply's title or a caption."""
    part = entry.get(kind)
    if not isinstance(part, dict):
        return ""
    for name in ("body", "text", "caption", "title", "payload"):
        if name in part:
            return _text(part[name], f"{where}.{kind}.{name}")
    for reply in ("button_reply", "list_reply"):
        if isinstance(part.get(reply), dict):
            return _text(part[reply].get("title"), f"{where}.{kind}.{reply}.title")
    return ""


def _flat_message(doc: Mapping[str, Any], received_at: str) -> IncomingMessage:
    found = {field: _first(doc, names) for field, names in FLAT_INCOMING.items()}
    if found["sender"] is None:
        raise CallbackRejected(
            "No message: expected meta_object.value.messages[] or a top-level from field."
        )
    return _message(
        sender=_number(found["sender"], "from"),
        message_id=_text(found["message_id"], "id"),
        at=_time(found["at"], "timestamp", received_at),
        kind=_text(found["type"], "type") or "text",
        body=_text(found["body"], "body"),
    )


def _message(*, sender: str, message_id: str, at: str, kind: str, body: str) -> IncomingMessage:
    if not sender:
        raise CallbackRejected("The message has no sender (from).")
    if not message_id:  # a stable id, so that a retried delivery is stored once
        message_id = "no-id:" + "\x1f".join((sender, at, kind, body))[:_MAX_TEXT]
    return IncomingMessage(message_id=message_id, sender=sender, at=at, type=kind, body=body)


# --------------------------------------------------------------------------- values


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise CallbackRejected(f"{where} must be a JSON object.")
    return value


def _first(doc: Mapping[str, Any], names: tuple[str, ...]) -> object:
    for name in names:
        value = doc.get(name)
        if value is not None and value != "":
            return value
    return None


def _text(value: object, where: str) -> str:
    """A string field (numbers allowed, as Meta's codes are), cleaned; "" when absent."""
    if type(value) is str and value.isprintable():  # the usual case, first
        return value.strip()[:_MAX_TEXT]
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CallbackRejected(f"{where} must be a string.")
    if isinstance(value, float) and not math.isfinite(value):
        raise CallbackRejected(f"{where} must be a string.")
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():  # control characters, and the failure-key separator
        text = "".join(c if c.isprintable() else " " for c in text)
    return text.strip()[:_MAX_TEXT]


def _number(value: object, where: str) -> str:
    """A phone number as digits only ("" when absent)."""
    text = _text(value, where)
    digits = text.removeprefix("+").replace(" ", "")
    if text and not (digits.isascii() and digits.isdigit() and 6 <= len(digits) <= 20):
        raise CallbackRejected(f"{where} must be a phone number.")
    return digits


def _distinct(ids: Sequence[str]) -> tuple[str, ...]:
    found: list[str] = []
    for i in ids:
        if i and i not in found:
            found.append(i)
    return tuple(found)


def _time(value: object, where: str, received_at: str) -> str:
    """A time as ISO-8601 UTC: unix seconds or milliseconds (number or digits), or ISO-8601."""
    if value is None or value == "":
        return received_at
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CallbackRejected(f"{where} must be a unix time or an ISO-8601 time.")
    seconds = _unix_seconds(value)
    if seconds is not None:
        return _unix_time(seconds)
    assert isinstance(value, str)
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        plausible = _EARLIEST <= moment.timestamp() <= _LATEST
    except (ValueError, OverflowError):
        raise CallbackRejected(f"{where} must be a unix time or an ISO-8601 time.") from None
    if not plausible:
        raise CallbackRejected(f"{where} is not a plausible time.")
    return format_time(moment)


@functools.lru_cache(maxsize=4096)
def _unix_time(seconds: float) -> str:
    """ISO-8601 of a unix time; cached, as a flood of callbacks shares its seconds."""
    return format_time(datetime.fromtimestamp(seconds, UTC))


def _unix_seconds(value: str | int | float) -> float | None:
    """Unix seconds from a number or a string of digits (milliseconds too); None otherwise."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.replace(".", "", 1).isdigit()):
            return None
        number = float(text)
    else:
        number = float(value)
    if not math.isfinite(number):
        raise CallbackRejected("The timestamp is not a number.")
    if number > _LATEST:
        number /= 1000.0
    if not _EARLIEST <= number <= _LATEST:
        raise CallbackRejected("The timestamp is not a plausible unix time.")
    return number
