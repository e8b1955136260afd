"""The request body of Send Catalog Messages, checked against the seed's sample."""

from __future__ import annotations

from typing import Any, Final

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_sender.config import WA_SOURCES
from bulk_sender.sending.payload import REF_MAX, Fields, build_body, clip_ref
from tests.seed import SEED_SAMPLE, SEED_TEXT
from tests.strategies_http import payload_fields

SEED_FIELDS: Final = Fields(
    to="+91XXXXXXXXXX",
    body_text=SEED_TEXT,
    thumbnail_product_retailer_id="2lxxxxxxpt",
    ref="customer1",
    ref1="marketing",
    ref2="dictionary",
    wa_source="api",
)


def parsed(fields: Fields) -> dict[str, Any]:
    """The body built for ``fields``, parsed back."""
    doc = orjson.loads(build_body(fields))
    assert isinstance(doc, dict)
    return doc


def key_order(doc: object) -> object:
    """The keys of every object in ``doc``, nested, in order."""
    if isinstance(doc, dict):
        return [(key, key_order(value)) for key, value in doc.items()]
    return None


def test_seed_sample_is_reproduced_field_for_field() -> None:
    """The seed's sample fields give exactly the seed's sample body, keys in the seed's order."""
    doc = parsed(SEED_FIELDS)
    assert doc == SEED_SAMPLE
    assert key_order(doc) == key_order(SEED_SAMPLE)


def test_body_is_compact_utf8_json() -> None:
    """The body is UTF-8 JSON bytes that keep non-ASCII text as it is."""
    raw = build_body(SEED_FIELDS._replace(body_text="Namaste 🙏 — ₹499"))
    assert isinstance(raw, bytes)
    assert "Namaste 🙏 — ₹499".encode() in raw


@pytest.mark.parametrize("name", ["ref", "ref1", "ref2"])
def test_empty_ref_is_omitted(name: str) -> None:
    """An empty ref is left out of extra_info, never sent as ""."""
    extra = parsed(SEED_FIELDS._replace(**{name: ""}))["extra_info"]
    assert name not in extra
    assert set(extra) == {"ref", "ref1", "ref2", "wa_source"} - {name}


def test_no_refs_leaves_only_wa_source() -> None:
    """With no refs at all, extra_info holds just wa_source."""
    doc = parsed(Fields(to="+919812345678", body_text="Hi"))
    assert doc["extra_info"] == {"wa_source": "api"}


def test_empty_retailer_id_is_omitted() -> None:
    """Without a thumbnail retailer id, parameters carries no empty id."""
    doc = parsed(SEED_FIELDS._replace(thumbnail_product_retailer_id=""))
    action = doc["messaging_object"]["interactive"]["action"]
    assert action == {"name": "catalog_message", "parameters": {}}


def test_body_text_is_sent() -> None:
    """The body text goes in interactive.body.text."""
    doc = parsed(SEED_FIELDS._replace(body_text="Our new range is here"))
    assert doc["messaging_object"]["interactive"]["body"] == {"text": "Our new range is here"}


@pytest.mark.parametrize("source", sorted(WA_SOURCES))
def test_known_wa_source_is_kept(source: str) -> None:
    """A documented wa_source is sent as is."""
    doc = parsed(SEED_FIELDS._replace(wa_source=source))
    assert doc["extra_info"]["wa_source"] == source


@pytest.mark.parametrize(
    ("given_source", "sent"),
    [("Shopify", "shopify"), ("  HubSpot ", "hubspot"), ("API", "api"), ("MoEngage", "moengage")],
)
def test_wa_source_is_case_insensitive(given_source: str, sent: str) -> None:
    """A documented wa_source in any case, with spaces around it, is sent in lower case."""
    doc = parsed(SEED_FIELDS._replace(wa_source=given_source))
    assert doc["extra_info"]["wa_source"] == sent


@pytest.mark.parametrize("source", ["", "excel", "whatsapp", "shop ify", "zapier2"])
def test_unknown_wa_source_becomes_api(source: str) -> None:
    """A wa_source outside the seed's list is sent as "api", as the API itself would do."""
    doc = parsed(SEED_FIELDS._replace(wa_source=source))
    assert doc["extra_info"]["wa_source"] == "api"


@pytest.mark.parametrize(
    ("length", "cut"), [(0, False), (1, False), (254, False), (255, False), (256, True)]
)
def test_clip_ref_at_255(length: int, cut: bool) -> None:
    """clip_ref keeps up to 255 characters and says whether it cut."""
    value = "x" * length
    assert clip_ref(value) == (value[:REF_MAX], cut)


def test_clip_ref_counts_characters_not_bytes() -> None:
    """255 non-ASCII characters are kept whole: the limit is in characters."""
    value = "é" * 255
    assert clip_ref(value) == (value, False)
    assert clip_ref(value + "é") == (value, True)


@given(value=st.text(max_size=600))
def test_clip_ref_property(value: str) -> None:
    """clip_ref returns a prefix of at most 255 characters, cut exactly when it was longer."""
    clipped, cut = clip_ref(value)
    assert value.startswith(clipped)
    assert len(clipped) == min(len(value), REF_MAX)
    assert cut == (len(value) > REF_MAX)


@given(fields=payload_fields())
def test_body_always_parses_and_keeps_to(fields: Fields) -> None:
    """Any fields give JSON with the seed's fixed values, ``to`` and the body text unchanged."""
    doc = parsed(fields)
    message = doc["messaging_object"]
    assert message["to"] == fields.to
    assert (message["messaging_product"], message["recipient_type"], message["type"]) == (
        "whatsapp",
        "individual",
        "interactive",
    )
    assert message["interactive"]["type"] == "catalog_message"
    assert message["interactive"]["body"]["text"] == fields.body_text
    assert message["interactive"]["action"]["name"] == "catalog_message"
    assert doc["extra_info"]["wa_source"] in WA_SOURCES


@given(fields=payload_fields())
def test_clipped_refs_are_1_to_255_characters(fields: Fields) -> None:
    """With refs clipped as the campaign loader does, every ref sent is 1..255 characters."""
    clipped = fields._replace(
        ref=clip_ref(fields.ref)[0],
        ref1=clip_ref(fields.ref1)[0],
        ref2=clip_ref(fields.ref2)[0],
    )
    extra = parsed(clipped)["extra_info"]
    for name in ("ref", "ref1", "ref2"):
        value = getattr(clipped, name)
        if value:
            assert extra[name] == value
            assert 1 <= len(extra[name]) <= REF_MAX
        else:
            assert name not in extra


@given(fields=payload_fields())
def test_no_empty_string_is_ever_sent(fields: Fields) -> None:
    """No string value anywhere in the body is empty."""

    def strings(node: object) -> list[str]:
        if isinstance(node, dict):
            return [s for value in node.values() for s in strings(value)]
        return [node] if isinstance(node, str) else []

    assert "" not in strings(parsed(fields))
