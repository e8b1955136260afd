"""Pure: one recipient's fields -> the exact JSON body of Kaleyra's Send Catalog Messages API.

The shape is the seed's, field for field. Limits applied here: ``ref``/``ref1``/``ref2`` longer
than 255 characters are truncated (the API would truncate them too; we do it so the results
file shows what was really sent, and count it); a ``wa_source`` outside the documented list is
sent as ``"api"`` (what the API would do). Empty optional fields are omitted, never sent as
``""``. The body text limit (1 to 1024 characters) is checked by the caller, because a row
that breaks it is ``invalid`` and must not be sent at all.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, NamedTuple

import orjson

from bulk_sender.config import WA_SOURCES

__all__ = ["BODY_TEXT_MAX", "REF_MAX", "Fields", "build_body", "clip_ref", "content_key"]

BODY_TEXT_MAX = 1024
REF_MAX = 255


class Fields(NamedTuple):
    """What varies between two catalog messages (a named tuple: one is made per message)."""

    to: str
    body_text: str
    thumbnail_product_retailer_id: str = ""
    ref: str = ""
    ref1: str = ""
    ref2: str = ""
    wa_source: str = "api"


def clip_ref(value: str) -> tuple[str, bool]:
    """``value`` cut to the API's 255 characters, and whether it had to be cut."""
    return (value[:REF_MAX], True) if len(value) > REF_MAX else (value, False)


def build_body(fields: Fields) -> bytes:
    """The request body for one message, serialised with orjson."""
    parameters: dict[str, Any] = {}
    if fields.thumbnail_product_retailer_id:
        parameters["thumbnail_product_retailer_id"] = fields.thumbnail_product_retailer_id
    interactive: dict[str, Any] = {"type": "catalog_message"}
    if fields.body_text:
        interactive["body"] = {"text": fields.body_text}
    interactive["action"] = {"name": "catalog_message", "parameters": parameters}
    extra: dict[str, str] = {
        key: value
        for key, value in (("ref", fields.ref), ("ref1", fields.ref1), ("ref2", fields.ref2))
        if value
    }
    source = fields.wa_source.strip().lower()
    extra["wa_source"] = source if source in WA_SOURCES else "api"
    return orjson.dumps(
        {
            "messaging_object": {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": fields.to,
                "type": "interactive",
                "interactive": interactive,
            },
            "extra_info": extra,
        }
    )


@functools.lru_cache(maxsize=8192)  # a campaign's bodies repeat (one text, or few names)
def content_key(body_text: str, thumbnail_product_retailer_id: str) -> int:
    """A 63-bit identity of what the customer sees: the body text and the catalog's thumbnail.

    Two messages with the same key are "the same message" to the repeat guard, whatever their
    refs or ``wa_source`` (which the customer never sees). Stable across processes and runs.
    """
    text = f"{body_text}\x1f{thumbnail_product_retailer_id}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1
