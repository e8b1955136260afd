"""Classifying Kaleyra's answers and transport failures, with the seed's own bodies."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_sender.errors import TransportError
from bulk_sender.sending.outcome import (
    ACCOUNT_CODES,
    RETRY_AFTER_CAP,
    Kind,
    Outcome,
    classify_answer,
    classify_failure,
    parse_retry_after,
)
from tests.seed import (
    SEED_E110,
    SEED_RBC001,
    SEED_WA202,
    SEED_WA202_AS_PRINTED,
    SEED_WA400,
    SEED_WA401,
    SEED_WA401_ACCOUNT,
    SEED_WA401_VERSION,
    SEED_WA500,
)
from tests.strategies_http import (
    account_codes,
    any_bodies,
    http_dates,
    json_values,
    message_ids,
    retry_after_texts,
    statuses,
)

NOW: Final = datetime(2024, 5, 17, 12, 0, 0, tzinfo=UTC)

# The seed's bodies, verbatim (the 202 sample with its missing commas restored).
HTML_502: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def body(doc: Any) -> bytes:
    """``doc`` as an answer body."""
    return orjson.dumps(doc)


# --------------------------------------------------------------------------- SENT


def test_seed_202_is_sent_with_its_message_id() -> None:
    """The seed's 202 WA202 answer is SENT and carries Kaleyra's message id."""
    outcome = classify_answer(202, body(SEED_WA202))
    assert outcome == Outcome(Kind.SENT, 202, "WA202", "", "AXXXXXXXXXXXXXXXXXXX")


def test_200_wa200_is_sent() -> None:
    """A 200 with code WA200 and a message id is SENT."""
    doc = {"code": "WA200", "message": "OK", "data": {"message_id": "m-1"}, "error": {}}
    outcome = classify_answer(200, body(doc))
    assert (outcome.kind, outcome.code, outcome.message_id) == (Kind.SENT, "WA200", "m-1")


def test_sent_ignores_retry_after() -> None:
    """A SENT outcome carries no retry_after even when the answer had the header."""
    outcome = classify_answer(202, body(SEED_WA202), retry_after="5")
    assert outcome.kind is Kind.SENT
    assert outcome.retry_after is None


def test_seed_202_sample_as_printed_is_sent_with_a_warning() -> None:
    """The seed's literal 202 text is malformed JSON but names one id and WA202: SENT, warned."""
    outcome = classify_answer(202, SEED_WA202_AS_PRINTED)
    assert outcome.kind is Kind.SENT
    assert outcome.message_id == "AXXXXXXXXXXXXXXXXXXX"
    assert outcome.warning


# --------------------------------------------------------------------------- AMBIGUOUS 2xx


@pytest.mark.parametrize(
    ("status", "raw", "why"),
    [
        (202, b"Request Accepted", "not JSON"),
        (200, b"", "not JSON"),
        (202, HTML_502, "not JSON"),
        (202, b"[1, 2]", "not JSON"),
        (202, body({"code": "WA202", "data": {}}), "no data.message_id"),
        (202, body({"code": "WA202", "data": {"message_id": ""}}), "no data.message_id"),
        (202, body({"code": "WA202", "data": {"message_id": "   "}}), "no data.message_id"),
        (202, body({"code": "WA202", "data": {"message_id": 42}}), "no data.message_id"),
        (202, body({"code": "WA202", "data": []}), "no data.message_id"),
        (204, body({"code": "WA202"}), "no data.message_id"),
    ],
)
def test_2xx_without_json_or_message_id_is_ambiguous(status: int, raw: bytes, why: str) -> None:
    """A 2xx that is not JSON or has no string data.message_id is AMBIGUOUS and says why."""
    outcome = classify_answer(status, raw)
    assert outcome.kind is Kind.AMBIGUOUS
    assert outcome.http_status == status
    assert why in outcome.error
    assert outcome.message_id is None


# --------------------------------------------------------------------------- THROTTLED


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"Too Many Requests",
        body({"code": "WA429", "message": "Too many requests"}),
        body(SEED_WA500),
        HTML_502,
    ],
)
def test_429_with_any_body_is_throttled(raw: bytes) -> None:
    """A 429 is THROTTLED whatever its body (short of an account code)."""
    outcome = classify_answer(429, raw, retry_after="3", now=NOW)
    assert outcome.kind is Kind.THROTTLED
    assert outcome.retry_after == 3.0


def test_503_is_throttled_with_parsed_retry_after_date() -> None:
    """A 503 is THROTTLED and an HTTP-date Retry-After becomes seconds from ``now``."""
    when = "Fri, 17 May 2024 12:00:07 GMT"
    outcome = classify_answer(503, b"Service Unavailable", retry_after=when, now=NOW)
    assert outcome.kind is Kind.THROTTLED
    assert outcome.retry_after == 7.0


def test_throttled_without_retry_after_has_none() -> None:
    """A 429 without the header leaves retry_after None so the policy uses backoff."""
    outcome = classify_answer(429, b"")
    assert outcome.kind is Kind.THROTTLED
    assert outcome.retry_after is None
    assert outcome.code == "HTTP 429"


# --------------------------------------------------------------------------- SERVER_ERROR


@pytest.mark.parametrize("status", [500, 502, 504])
def test_500_502_504_with_seed_wa500_are_server_errors(status: int) -> None:
    """500/502/504 with the seed's WA500 body are SERVER_ERROR with Kaleyra's words."""
    outcome = classify_answer(status, body(SEED_WA500))
    assert outcome.kind is Kind.SERVER_ERROR
    assert outcome.code == "WA500"
    assert outcome.error == "Please try again later; Internal server error"


@pytest.mark.parametrize("status", [500, 502, 504, 599])
def test_5xx_without_body_is_server_error(status: int) -> None:
    """A bare 5xx other than 503 is SERVER_ERROR named by its status."""
    outcome = classify_answer(status, b"")
    assert outcome.kind is Kind.SERVER_ERROR
    assert outcome.code == f"HTTP {status}"
    assert "empty body" in outcome.error


def test_wa500_code_at_a_4xx_status_is_server_error() -> None:
    """Kaleyra's WA500 code wins over an odd 4xx status."""
    assert classify_answer(400, body(SEED_WA500)).kind is Kind.SERVER_ERROR


def test_html_502_page_is_server_error() -> None:
    """An nginx 502 page is SERVER_ERROR and the error says it came from a proxy."""
    outcome = classify_answer(502, HTML_502)
    assert outcome.kind is Kind.SERVER_ERROR
    assert outcome.code == "HTTP 502"
    assert "HTML page" in outcome.error


@pytest.mark.parametrize("status", [400, 403, 413])
def test_html_page_at_4xx_is_server_error(status: int) -> None:
    """A proxy's HTML page with a 4xx says nothing about the row: SERVER_ERROR, retried."""
    page = b"<!DOCTYPE html><html><body><h1>Forbidden</h1></body></html>"
    assert classify_answer(status, page).kind is Kind.SERVER_ERROR


def test_server_error_keeps_retry_after() -> None:
    """A 500 with Retry-After carries the parsed seconds."""
    assert classify_answer(500, b"", retry_after="2.5").retry_after == 2.5


# --------------------------------------------------------------------------- ENDPOINT


@pytest.mark.parametrize("status", [404, 405])
@pytest.mark.parametrize(
    "raw",
    [
        b"Not Found",
        b"<!DOCTYPE html><html><body><h1>404</h1></body></html>",
        b'{"code":"404","message":"Not found."}',
        b'{"code":"WA404","message":"Invalid phone number"}',
    ],
    ids=["text", "html", "sandbox-json", "kaleyra-like-json"],
)
def test_404_and_405_mean_a_wrong_url(status: int, raw: bytes) -> None:
    """404/405 with any body is ENDPOINT (the run stops): every row would get the same."""
    outcome = classify_answer(status, raw)
    assert (outcome.kind, outcome.code, outcome.http_status) == (
        Kind.ENDPOINT,
        f"ENDPOINT_{status}",
        status,
    )
    assert outcome.error.startswith(f"the messages endpoint answered HTTP {status}")
    assert outcome.error.endswith(": the URL is wrong")


def test_account_code_in_a_404_is_still_account() -> None:
    """An account code wins over the status, 404 included."""
    assert classify_answer(404, body(SEED_E110)).kind is Kind.ACCOUNT


# --------------------------------------------------------------------------- ROW_FAILED


def test_seed_400_wa400_is_row_failed_with_kaleyras_message() -> None:
    """The seed's 400 WA400 is ROW_FAILED and the error quotes Kaleyra's message and details."""
    outcome = classify_answer(400, body(SEED_WA400))
    assert outcome.kind is Kind.ROW_FAILED
    assert outcome.code == "WA400"
    assert outcome.error == "Refer to correct payload format; Incorrect payload format"


@pytest.mark.parametrize("status", [409, 422])
def test_other_4xx_json_is_row_failed_with_message(status: int) -> None:
    """Another 4xx with a Kaleyra JSON body is ROW_FAILED with Kaleyra's message."""
    doc = {"code": f"WA{status}", "message": "Invalid phone number", "data": {}, "error": {}}
    outcome = classify_answer(status, body(doc))
    assert outcome.kind is Kind.ROW_FAILED
    assert outcome.code == f"WA{status}"
    assert outcome.error == "Invalid phone number"


@pytest.mark.parametrize("status", [409, 422])
def test_other_4xx_plain_text_is_row_failed_quoting_text(status: int) -> None:
    """A 4xx with plain text is ROW_FAILED, coded by status, quoting the text."""
    outcome = classify_answer(status, b"Not Found")
    assert outcome.kind is Kind.ROW_FAILED
    assert outcome.code == f"HTTP {status}"
    assert outcome.error == f"HTTP {status}: Not Found"


def test_error_details_repeating_the_message_are_not_doubled() -> None:
    """Details equal to the message are not repeated in ``error``."""
    doc = {"code": "WA422", "message": "Bad number", "error": {"to": "Bad number"}}
    assert classify_answer(422, body(doc)).error == "Bad number"


def test_error_details_without_message_are_used() -> None:
    """With no ``message``, the ``error`` details are the error text."""
    doc = {"code": "WA422", "error": {"to": "Bad number", "ref": "Too long"}}
    assert classify_answer(422, body(doc)).error == "Bad number; Too long"


# --------------------------------------------------------------------------- ACCOUNT


@pytest.mark.parametrize(
    ("status", "doc"),
    [
        (401, SEED_RBC001),
        (401, SEED_WA401),
        (401, SEED_WA401_ACCOUNT),
        (401, SEED_WA401_VERSION),
        (400, SEED_E110),
        (402, SEED_E110),
        (200, SEED_E110),
        (403, {"code": "WAV2101", "message": "Version not enabled", "data": {}, "error": {}}),
    ],
    ids=[
        "RBC001",
        "WA401",
        "WA-401-account",
        "WA-401-version",
        "E110-400",
        "E110-402",
        "E110-200",
        "WAV2101",
    ],
)
def test_seed_account_codes_are_account(status: int, doc: dict[str, Any]) -> None:
    """Every account-level code of the seed is ACCOUNT, keeping Kaleyra's code and message."""
    outcome = classify_answer(status, body(doc))
    assert outcome.kind is Kind.ACCOUNT
    assert outcome.code == doc["code"]
    assert outcome.error.startswith(str(doc["message"]))


@pytest.mark.parametrize("raw", [b"", b"Unauthorized", HTML_502, b"{}"])
def test_bare_401_is_account(raw: bytes) -> None:
    """A 401 without a Kaleyra code is ACCOUNT: the key or SID is wrong."""
    outcome = classify_answer(401, raw)
    assert outcome.kind is Kind.ACCOUNT
    assert outcome.code == "HTTP 401"


def test_account_code_wins_over_429() -> None:
    """An account code inside a 429 still stops the run."""
    assert classify_answer(429, body(SEED_E110)).kind is Kind.ACCOUNT


def test_account_code_is_matched_after_stripping() -> None:
    """Whitespace around Kaleyra's code does not hide an account code."""
    assert classify_answer(400, body({"code": " E110 "})).kind is Kind.ACCOUNT


# --------------------------------------------------------------------------- transport failures


def test_connect_failure_is_not_sent_yet() -> None:
    """A failure before the request left is NOT_SENT_YET with its description."""
    failure = TransportError("connection refused", phase="connect")
    assert classify_failure(failure) == Outcome(
        Kind.NOT_SENT_YET, None, "CONNECT_ERROR", "connection refused"
    )


def test_dns_failure_is_not_sent_yet_with_its_own_code() -> None:
    """A name that does not resolve never left: NOT_SENT_YET, coded DNS_ERROR."""
    failure = TransportError("cannot resolve api.x.test: no address", phase="connect", cause="dns")
    outcome = classify_failure(failure)
    assert (outcome.kind, outcome.code) == (Kind.NOT_SENT_YET, "DNS_ERROR")
    assert outcome.error == "cannot resolve api.x.test: no address"


def test_unverifiable_certificate_stops_the_run() -> None:
    """A certificate that cannot be verified is ENDPOINT (TLS_VERIFY), saying which check
    failed (the advice is sending/advice.py's)."""
    failure = TransportError(
        "the TLS certificate of api.in.kaleyra.io:443 could not be verified: certificate has "
        "expired",
        phase="connect",
        cause="certificate",
    )
    outcome = classify_failure(failure)
    assert (outcome.kind, outcome.code, outcome.http_status) == (Kind.ENDPOINT, "TLS_VERIFY", None)
    assert outcome.error == failure.description


@pytest.mark.parametrize("status", [407, 401, 403, 502, None])
def test_proxy_refusal_stops_with_its_status(status: int | None) -> None:
    """A proxy that refuses is ENDPOINT coded PROXY_<status>, with the proxy's words."""
    failure = TransportError(
        "the proxy 10.0.0.1:3128 refused the connection to api.in.kaleyra.io:443: 407",
        phase="connect",
        cause="proxy",
        status=status,
    )
    outcome = classify_failure(failure)
    assert (outcome.kind, outcome.code) == (Kind.ENDPOINT, f"PROXY_{status or 0}")
    assert outcome.error == failure.description


def test_failure_after_send_is_ambiguous() -> None:
    """A failure after the request went out is AMBIGUOUS and says it may have been delivered."""
    outcome = classify_failure(TransportError("read timeout", phase="after_send"))
    assert outcome.kind is Kind.AMBIGUOUS
    assert outcome.code == "NO_ANSWER"
    assert outcome.http_status is None
    assert outcome.error.startswith("read timeout; ")
    assert "may have been delivered" in outcome.error


# --------------------------------------------------------------------------- parse_retry_after


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("-3", 0.0),
        ("120", RETRY_AFTER_CAP),
        ("3600", RETRY_AFTER_CAP),
        ("1e9", RETRY_AFTER_CAP),
    ],
)
def test_retry_after_seconds(text: str, seconds: float) -> None:
    """Delay-seconds (whole or fractional) parse, negatives become 0, big values are capped."""
    assert parse_retry_after(text, now=NOW) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Fri, 17 May 2024 12:00:30 GMT", 30.0),
        ("Fri, 17 May 2024 12:01:00 +0000", 60.0),
        ("Fri, 17 May 2024 14:00:05 +0200", 5.0),
        ("Fri, 17 May 2024 11:59:00 GMT", 0.0),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Fri, 17 May 2024 13:00:00 GMT", RETRY_AFTER_CAP),
    ],
)
def test_retry_after_http_date(text: str, seconds: float) -> None:
    """An HTTP-date is seconds from ``now``: past dates are 0, far ones capped."""
    assert parse_retry_after(text, now=NOW) == seconds


@pytest.mark.parametrize("text", [None, "", "   ", "soon", "nan", "12s", "0x10", "Fri, 99 Foo"])
def test_retry_after_garbage_is_none(text: str | None) -> None:
    """A missing or unparseable Retry-After is None, so the caller falls back to backoff."""
    assert parse_retry_after(text, now=NOW) is None


@settings(max_examples=300)
@given(text=retry_after_texts)
def test_retry_after_is_none_or_within_cap(text: str | None) -> None:
    """Any header text parses to None or to seconds in [0, RETRY_AFTER_CAP], never raises."""
    seconds = parse_retry_after(text, now=NOW)
    assert seconds is None or 0.0 <= seconds <= RETRY_AFTER_CAP


@given(delay=st.integers(min_value=-(10**7), max_value=10**7))
def test_retry_after_date_equals_seconds_form(delay: int) -> None:
    """An HTTP-date ``delay`` seconds from now means the same as the number ``delay``."""
    when = email.utils.format_datetime(NOW + timedelta(seconds=delay), usegmt=True)
    assert parse_retry_after(when, now=NOW) == parse_retry_after(str(delay), now=NOW)


@given(when=http_dates)
def test_retry_after_any_http_date_is_a_number(when: str) -> None:
    """Every well-formed HTTP-date parses to a number of seconds."""
    assert parse_retry_after(when, now=NOW) is not None


# --------------------------------------------------------------------------- properties


@settings(max_examples=400)
@given(status=statuses, raw=any_bodies, retry_after=retry_after_texts)
def test_classify_answer_never_raises(status: int, raw: bytes, retry_after: str | None) -> None:
    """Any status, any body and any Retry-After give an Outcome carrying the status."""
    outcome = classify_answer(status, raw, retry_after=retry_after, now=NOW)
    assert isinstance(outcome.kind, Kind)
    assert outcome.http_status == status
    assert outcome.code
    assert (outcome.kind is Kind.SENT) == (outcome.message_id is not None)


@given(
    status=st.integers(min_value=200, max_value=299),
    message_id=message_ids,
    code=st.text(max_size=10).filter(lambda c: c.strip() not in ACCOUNT_CODES),
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_2xx_with_message_id_is_sent(
    status: int, message_id: str, code: str, extra: dict[str, Any]
) -> None:
    """Any 2xx JSON object with a non-blank string data.message_id is SENT with that id."""
    doc = {**extra, "code": code, "data": {"message_id": message_id}}
    outcome = classify_answer(status, body(doc))
    assert outcome.kind is Kind.SENT
    assert outcome.message_id == message_id.strip()


@given(
    status=statuses,
    code=account_codes,
    message_id=st.none() | message_ids,
    retry_after=retry_after_texts,
)
def test_account_code_is_account_at_any_status(
    status: int, code: str, message_id: str | None, retry_after: str | None
) -> None:
    """A body whose code is an account code is ACCOUNT whatever the status or other fields."""
    doc: dict[str, Any] = {"code": code, "message": "x"}
    if message_id is not None:
        doc["data"] = {"message_id": message_id}
    outcome = classify_answer(status, body(doc), retry_after=retry_after, now=NOW)
    assert outcome.kind is Kind.ACCOUNT
    assert outcome.code == code


@given(raw=any_bodies, retry_after=retry_after_texts)
def test_429_is_throttled_unless_account_code(raw: bytes, retry_after: str | None) -> None:
    """A 429 is THROTTLED for any body without an account code."""
    outcome = classify_answer(429, raw, retry_after=retry_after, now=NOW)
    assert outcome.kind is (Kind.ACCOUNT if outcome.code in ACCOUNT_CODES else Kind.THROTTLED)
    assert outcome.retry_after == parse_retry_after(retry_after, now=NOW)


@given(status=st.integers(min_value=500, max_value=599), raw=any_bodies)
def test_5xx_is_retryable_or_account(status: int, raw: bytes) -> None:
    """A 5xx is never ROW_FAILED, SENT or AMBIGUOUS: the row may succeed later."""
    kind = classify_answer(status, raw).kind
    assert kind in {Kind.SERVER_ERROR, Kind.THROTTLED, Kind.ACCOUNT}
