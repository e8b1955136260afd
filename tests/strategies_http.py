"""Hypothesis strategies for the pure HTTP-side modules: answers, outcomes, rate events, bodies."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import strategies as st

from bulk_sender.config import WA_SOURCES
from bulk_sender.sending.outcome import ACCOUNT_CODES, Kind, Outcome
from bulk_sender.sending.payload import Fields

__all__ = [
    "account_codes",
    "any_bodies",
    "http_dates",
    "json_values",
    "kaleyra_docs",
    "message_ids",
    "outcomes",
    "payload_fields",
    "rate_events",
    "retry_after_texts",
    "statuses",
]

#: Every status an HTTP answer can carry.
statuses = st.integers(min_value=100, max_value=599)

#: Kaleyra codes that mean the account cannot send.
account_codes = st.sampled_from(sorted(ACCOUNT_CODES))

#: A message id that survives stripping: at least one visible character.
message_ids = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)

#: Any JSON document orjson can write.
json_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

_codes = st.sampled_from(["WA202", "WA200", "WA400", "WA500", "XYZ", "", *sorted(ACCOUNT_CODES)])

#: Objects shaped roughly like Kaleyra's answers, with every key optional and of any type.
kaleyra_docs: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "code": _codes | json_values,
        "message": st.text(max_size=30) | json_values,
        "data": st.fixed_dictionaries({}, optional={"message_id": message_ids | json_values})
        | json_values,
        "error": st.dictionaries(st.text(max_size=8), st.text(max_size=20) | json_values)
        | json_values,
    },
)

_html = st.sampled_from(
    [
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        b"<!DOCTYPE html><html><body>Service Unavailable</body></html>",
        b"  \n<HTML><BODY>oops</BODY></HTML>",
    ]
)

#: Any answer body: raw bytes, any JSON, Kaleyra-shaped JSON, or a proxy's HTML page.
any_bodies: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=200),
    json_values.map(orjson.dumps),
    kaleyra_docs.map(orjson.dumps),
    _html,
)

#: Aware datetimes rendered as HTTP-dates (RFC 9110 IMF-fixdate).
http_dates: st.SearchStrategy[str] = st.datetimes(
    min_value=datetime(1980, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.just(UTC),
).map(lambda d: email.utils.format_datetime(d, usegmt=True))

#: Any text a ``Retry-After`` header could hold, plausible or not.
retry_after_texts: st.SearchStrategy[str | None] = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.floats().map(repr),
    http_dates,
)

_kinds_with_retry_after = {Kind.THROTTLED, Kind.SERVER_ERROR}


@st.composite
def outcomes(draw: st.DrawFn, kind: Kind) -> Outcome:
    """An outcome of ``kind`` with plausible extras (``retry_after`` only where it can occur)."""
    retry_after = (
        draw(st.none() | st.floats(min_value=0, max_value=120))
        if kind in _kinds_with_retry_after
        else None
    )
    return Outcome(
        kind,
        draw(st.none() | statuses),
        draw(_codes),
        draw(st.text(max_size=20)),
        draw(message_ids) if kind is Kind.SENT else None,
        retry_after,
    )


#: One answer seen by the rate controller: (seconds since the previous one, was it a 429,
#: the 429's Retry-After).
rate_events: st.SearchStrategy[list[tuple[float, bool, float | None]]] = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=10),
        st.booleans(),
        st.none() | st.floats(min_value=0, max_value=120),
    ),
    max_size=60,
)

_wa_sources = st.sampled_from(sorted(WA_SOURCES)) | st.text(max_size=12)


@st.composite
def payload_fields(draw: st.DrawFn) -> Fields:
    """Any recipient's fields, refs of any length (the caller clips them)."""
    return Fields(
        to=draw(st.text(min_size=1, max_size=20)),
        body_text=draw(st.text(min_size=1, max_size=1024)),
        thumbnail_product_retailer_id=draw(st.text(max_size=30)),
        ref=draw(st.text(max_size=300)),
        ref1=draw(st.text(max_size=300)),
        ref2=draw(st.text(max_size=300)),
        wa_source=draw(_wa_sources),
    )
