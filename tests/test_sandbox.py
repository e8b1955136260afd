"""The Kaleyra sandbox, exercised over real HTTP on 127.0.0.1 with an aiohttp client."""

from __future__ import annotations

import asyncio
import copy
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
import pytest

from bulk_sender.sandbox.server import (
    Account,
    Behaviour,
    Faults,
    Sandbox,
    ThreadedSandbox,
    body_problem,
)
from tests.seed import (
    SEED_E110,
    SEED_RBC001,
    SEED_SAMPLE,
    SEED_WA400,
    SEED_WA401,
    SEED_WA401_ACCOUNT,
    SEED_WA401_VERSION,
    SEED_WA500,
)

SID: Final = Account().sid
KEY: Final = Account().api_key
SENDER: Final = "919000000001"
TO: Final = "+919812345678"
JSON: Final = "application/json"

SAMPLE: Final[Mapping[str, Any]] = {
    **SEED_SAMPLE,
    "messaging_object": {**SEED_SAMPLE["messaging_object"], "to": TO},
}

REMOVE: Final = object()

# The seed's failure bodies, copied verbatim, so the sandbox is checked against the documentation.
# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Reply:
    """What the client got back."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def changed(path: str, value: object) -> dict[str, Any]:
    """The sample body with the value at dotted ``path`` replaced, or removed for REMOVE."""
    body: dict[str, Any] = copy.deepcopy(dict(SAMPLE))
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    if value is REMOVE:
        del node[last]
    else:
        node[last] = value
    return body


def messages_url(base: str, *, sid: str = SID, sender: str = SENDER) -> str:
    return f"{base}/v2/{sid}/whatsapp/{sender}/messages"


async def send(
    session: aiohttp.ClientSession,
    url: str,
    body: object = SAMPLE,
    *,
    api_key: str | None = KEY,
    content_type: str | None = JSON,
    time_limit: float | None = None,
) -> Reply:
    """POST ``body`` (bytes as they are, anything else as JSON) to ``url``."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"cache-control": "no-cache"}
    if api_key is not None:
        headers["api-key"] = api_key
    if content_type is not None:
        headers["Content-Type"] = content_type
    limits = aiohttp.ClientTimeout(total=time_limit)
    async with session.post(url, data=data, headers=headers, timeout=limits) as response:
        return Reply(response.status, response.headers, await response.read())


def post(
    base: str,
    body: object = SAMPLE,
    *,
    sid: str = SID,
    sender: str = SENDER,
    api_key: str | None = KEY,
    content_type: str | None = JSON,
    timeout: float | None = None,
) -> Reply:
    """One request from a fresh client session, from sync test code."""

    async def go() -> Reply:
        async with aiohttp.ClientSession() as session:
            url = messages_url(base, sid=sid, sender=sender)
            return await send(
                session, url, body, api_key=api_key, content_type=content_type, time_limit=timeout
            )

    return asyncio.run(go())


def post_many(base: str, bodies: list[object]) -> list[Reply]:
    """Send every body at once (concurrently) and return the replies in order."""

    async def go() -> list[Reply]:
        async with aiohttp.ClientSession() as session:
            url = messages_url(base)
            return list(await asyncio.gather(*(send(session, url, body) for body in bodies)))

    return asyncio.run(go())


def get(url: str) -> Reply:
    async def go() -> Reply:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return Reply(response.status, response.headers, await response.read())

    return asyncio.run(go())


def failure_of(base: str, *, timeout: float | None = None) -> BaseException:
    """The exception the client raised for one sample request (fails if it got an answer)."""
    try:
        reply = post(base, timeout=timeout)
    except Exception as exc:
        return exc
    pytest.fail(f"expected the request to fail, got HTTP {reply.status}")


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with ThreadedSandbox() as running:
        yield running


# --------------------------------------------------------------------------- the happy path


def test_seed_sample_is_accepted_and_recorded(sandbox: Sandbox) -> None:
    """The seed's sample body gets 202 WA202 with a fresh message_id and is recorded as sent."""
    reply = post(sandbox.url)
    document = reply.json()
    assert reply.status == 202
    assert document["code"] == "WA202"
    assert document["message"] == "Request Accepted"
    assert document["error"] == {}
    assert re.fullmatch(r"A[0-9A-F]{19}", document["data"]["message_id"])
    [record] = sandbox.received
    assert (record.to, record.status, record.code) == (TO, 202, "WA202")
    assert record.message_id == document["data"]["message_id"]
    assert record.path == f"/v2/{SID}/whatsapp/{SENDER}/messages"
    assert record.headers["api-key"] == KEY
    assert record.headers["cache-control"] == "no-cache"
    assert orjson.loads(record.body) == SAMPLE
    assert sandbox.count(TO) == 1
    assert sandbox.accepted() == [record]


def test_message_ids_are_unique(sandbox: Sandbox) -> None:
    """Every accepted request gets its own message_id."""
    replies = post_many(
        sandbox.url, [changed("messaging_object.to", f"+9198{i:08d}") for i in range(40)]
    )
    ids = {reply.json()["data"]["message_id"] for reply in replies}
    assert len(ids) == 40
    assert sandbox.counts() == {f"+9198{i:08d}": 1 for i in range(40)}


@pytest.mark.parametrize("sender", ["+919000000001", "919000000001", "%2B919000000001"])
def test_sender_is_matched_by_digits(sandbox: Sandbox, sender: str) -> None:
    """The business number in the URL may carry "+", "%2B" or no prefix at all."""
    assert post(sandbox.url, sender=sender).status == 202


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(changed("messaging_object.interactive.body.text", "x" * 1024), id="text-1024"),
        pytest.param(
            changed("messaging_object.interactive.body.text", "😀" * 1024), id="emoji-1024"
        ),
        pytest.param(changed("extra_info.ref", "r" * 255), id="ref-255"),
        pytest.param(changed("messaging_object.interactive.body", REMOVE), id="no-body"),
        pytest.param(changed("extra_info", REMOVE), id="no-extra-info"),
        pytest.param(changed("messaging_object.recipient_type", REMOVE), id="no-recipient-type"),
        pytest.param(
            changed("messaging_object.interactive.action.parameters", {}), id="no-thumbnail"
        ),
        pytest.param(changed("messaging_object.to", "919812345678"), id="to-without-plus"),
        pytest.param(changed("messaging_object.to", "+919812345678,+14155550100"), id="two-to"),
        pytest.param(changed("extra_info.wa_source", "some-crm"), id="unknown-wa-source"),
    ],
)
def test_valid_variants_are_accepted(sandbox: Sandbox, body: dict[str, Any]) -> None:
    """Optional fields may be omitted, and values at the documented limits pass."""
    reply = post(sandbox.url, body)
    assert (reply.status, reply.json()["code"]) == (202, "WA202")


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8"])
def test_charset_utf8_content_type_is_accepted(sandbox: Sandbox, charset: str) -> None:
    """``application/json; charset=utf-8`` is as good as ``application/json``."""
    assert post(sandbox.url, content_type=f"application/json; charset={charset}").status == 202


def test_body_problem_is_none_for_the_sample() -> None:
    """The pure validator finds nothing wrong with the seed's sample."""
    assert body_problem(copy.deepcopy(dict(SAMPLE))) is None


# --------------------------------------------------------------------------- auth and sender


@pytest.mark.parametrize(
    ("sid", "api_key"),
    [
        pytest.param(SID, "wrong-key", id="wrong-key"),
        pytest.param(SID, None, id="missing-key"),
        pytest.param("HXAP16OTHER97IN", KEY, id="wrong-sid"),
    ],
)
def test_wrong_credentials_get_rbc001(sandbox: Sandbox, sid: str, api_key: str | None) -> None:
    """A wrong or missing api-key, or a wrong SID, gets the seed's 401 RBC001."""
    reply = post(sandbox.url, sid=sid, api_key=api_key)
    assert (reply.status, reply.json()) == (401, SEED_RBC001)
    assert sandbox.received[0].code == "RBC001"
    assert sandbox.accepted() == []


@pytest.mark.parametrize("sender", ["919000000002", "+919000000002", "91900000000x", "abc"])
def test_unknown_sender_gets_wa401(sandbox: Sandbox, sender: str) -> None:
    """A business number that is not the account's gets the seed's 401 WA401."""
    reply = post(sandbox.url, sender=sender)
    assert (reply.status, reply.json()) == (401, SEED_WA401)


def test_credentials_are_checked_before_the_sender(sandbox: Sandbox) -> None:
    """A wrong key with an unknown sender is RBC001, not WA401."""
    reply = post(sandbox.url, sender="919000000002", api_key="wrong")
    assert reply.json()["code"] == "RBC001"


def test_sender_is_checked_before_the_body(sandbox: Sandbox) -> None:
    """An unknown sender with a malformed body is WA401, not WA400."""
    reply = post(sandbox.url, {"nonsense": True}, sender="919000000002")
    assert reply.json()["code"] == "WA401"


# --------------------------------------------------------------------------- malformed bodies


def _text_of(length: int) -> dict[str, Any]:
    return changed("messaging_object.interactive.body.text", "x" * length)


MALFORMED: Final = [
    pytest.param({**SAMPLE, "foo": 1}, "foo is not a field", id="unknown-top-key"),
    pytest.param(
        changed("messaging_object.interactive.header", {"type": "text"}),
        "messaging_object.interactive.header is not a field",
        id="unknown-nested-key",
    ),
    pytest.param(
        changed("extra_info.ref3", "x"), "extra_info.ref3 is not a field", id="unknown-extra-key"
    ),
    pytest.param(
        changed("messaging_object", REMOVE),
        "messaging_object is required",
        id="no-messaging-object",
    ),
    pytest.param(
        changed("messaging_object.to", REMOVE), "messaging_object.to is required", id="no-to"
    ),
    pytest.param(
        changed("messaging_object.interactive", REMOVE),
        "messaging_object.interactive is required",
        id="no-interactive",
    ),
    pytest.param(
        changed("messaging_object.interactive.action.parameters", REMOVE),
        "messaging_object.interactive.action.parameters is required",
        id="no-parameters",
    ),
    pytest.param(
        _text_of(1025),
        "messaging_object.interactive.body.text is longer than 1024 characters",
        id="text-1025",
    ),
    pytest.param(_text_of(0), "messaging_object.interactive.body.text is empty", id="empty-text"),
    pytest.param(
        changed("messaging_object.interactive.body", {}),
        "messaging_object.interactive.body.text is required",
        id="body-without-text",
    ),
    pytest.param(changed("extra_info.ref", ""), "extra_info.ref is empty", id="empty-ref"),
    pytest.param(
        changed("extra_info.ref2", "r" * 256),
        "extra_info.ref2 is longer than 255 characters",
        id="ref2-256",
    ),
    pytest.param(
        changed("extra_info.wa_source", ""), "extra_info.wa_source is empty", id="empty-wa-source"
    ),
    pytest.param(
        changed("messaging_object.interactive.action.parameters.thumbnail_product_retailer_id", ""),
        "thumbnail_product_retailer_id is empty",
        id="empty-thumbnail",
    ),
    pytest.param(
        changed("messaging_object.messaging_product", "sms"),
        'messaging_object.messaging_product must be "whatsapp"',
        id="wrong-product",
    ),
    pytest.param(
        changed("messaging_object.recipient_type", "group"),
        'messaging_object.recipient_type must be "individual"',
        id="wrong-recipient-type",
    ),
    pytest.param(
        changed("messaging_object.type", "text"),
        'messaging_object.type must be "interactive"',
        id="wrong-type",
    ),
    pytest.param(
        changed("messaging_object.interactive.type", "product_list"),
        'messaging_object.interactive.type must be "catalog_message"',
        id="wrong-interactive-type",
    ),
    pytest.param(
        changed("messaging_object.interactive.action.name", "catalog"),
        'messaging_object.interactive.action.name must be "catalog_message"',
        id="wrong-action-name",
    ),
    pytest.param(
        changed("messaging_object.to", 919812345678),
        "messaging_object.to must be a string",
        id="numeric-to",
    ),
    pytest.param(changed("messaging_object.to", "+91 98123 45678"), "E.164", id="to-with-spaces"),
    pytest.param(changed("messaging_object.to", "+9112345"), "E.164", id="to-7-digits"),
    pytest.param(changed("messaging_object.to", "+9198123456789012"), "E.164", id="to-16-digits"),
    pytest.param(changed("messaging_object.to", ""), "E.164", id="empty-to"),
    pytest.param(changed("messaging_object.to", "+919812345678,"), "E.164", id="trailing-comma"),
    pytest.param(
        changed("extra_info.ref1", None), "extra_info.ref1 must be a string", id="null-ref"
    ),
    pytest.param(
        changed("extra_info", "x"), "extra_info must be a JSON object", id="extra-not-object"
    ),
    pytest.param(b"{not json", "not valid JSON", id="not-json"),
    pytest.param(b"[]", "The request body must be a JSON object", id="array-body"),
]


@pytest.mark.parametrize(("body", "reason"), MALFORMED)
def test_malformed_body_gets_wa400_with_reason(sandbox: Sandbox, body: object, reason: str) -> None:
    """A body that strays from the seed gets the seed's WA400 with ``error.payload`` saying why."""
    reply = post(sandbox.url, body)
    document = reply.json()
    assert reply.status == 400
    assert {**document, "error": None} == {**SEED_WA400, "error": None}
    assert list(document["error"]) == ["payload"]
    assert reason in document["error"]["payload"]
    assert sandbox.received[0].code == "WA400"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", None, "application/json; charset=latin-1"],
)
def test_wrong_content_type_gets_wa400(sandbox: Sandbox, content_type: str | None) -> None:
    """Only application/json (optionally with charset=utf-8) is accepted."""
    reply = post(sandbox.url, content_type=content_type)
    assert reply.status == 400
    assert reply.json()["error"]["payload"] == "Content-Type must be application/json."


def test_malformed_body_does_not_consume_a_script(sandbox: Sandbox) -> None:
    """Validation comes before the faults: a WA400 leaves the recipient's script untouched."""
    sandbox.faults.scripts[TO] = [Behaviour.WA500]
    assert post(sandbox.url, changed("extra_info.ref", "")).status == 400
    assert sandbox.faults.scripts[TO] == [Behaviour.WA500]
    assert post(sandbox.url).status == 500


# --------------------------------------------------------------------------- behaviours

BEHAVIOURS: Final = [
    # behaviour, status, code ("" for non-JSON), content type, Retry-After expected
    (Behaviour.OK, 202, "WA202", JSON, False),
    (Behaviour.WA500, 500, "WA500", JSON, False),
    (Behaviour.HTML_502, 502, "", "text/html", False),
    (Behaviour.S503, 503, "503", JSON, True),
    (Behaviour.S504, 504, "", "text/html", False),
    (Behaviour.THROTTLE, 429, "429", JSON, True),
    (Behaviour.WA400, 400, "WA400", JSON, False),
    (Behaviour.E110, 400, "E110", JSON, False),
    (Behaviour.WAV2101, 400, "WAV2101", JSON, False),
    (Behaviour.RBC001, 401, "RBC001", JSON, False),
    (Behaviour.WA401, 401, "WA401", JSON, False),
    (Behaviour.WA401_ACCOUNT, 401, "WA-401", JSON, False),
    (Behaviour.WA401_VERSION, 401, "WA-401", JSON, False),
    (Behaviour.NOT_JSON, 200, "", "text/html", False),
    (Behaviour.NO_MESSAGE_ID, 202, "WA202", JSON, False),
]


@pytest.mark.parametrize(("behaviour", "status", "code", "content_type", "retry_after"), BEHAVIOURS)
def test_each_behaviour_answers_as_specified(
    sandbox: Sandbox,
    behaviour: Behaviour,
    status: int,
    code: str,
    content_type: str,
    retry_after: bool,
) -> None:
    """Each scripted behaviour has its status, code, content type and Retry-After header."""
    sandbox.faults.default = behaviour
    reply = post(sandbox.url)
    assert reply.status == status
    assert reply.headers["Content-Type"].startswith(content_type)
    assert reply.headers.get("Retry-After") == ("1" if retry_after else None)
    if code:
        assert reply.json()["code"] == code
    else:
        assert reply.body.lstrip().startswith(b"<html")
    [record] = sandbox.received
    assert (record.status, record.code) == (status, code)
    assert (record.message_id is not None) == (behaviour is Behaviour.OK)


@pytest.mark.parametrize(
    ("behaviour", "document"),
    [
        (Behaviour.WA500, SEED_WA500),
        (Behaviour.WA400, SEED_WA400),
        (Behaviour.E110, SEED_E110),
        (Behaviour.RBC001, SEED_RBC001),
        (Behaviour.WA401, SEED_WA401),
        (Behaviour.WA401_ACCOUNT, SEED_WA401_ACCOUNT),
        (Behaviour.WA401_VERSION, SEED_WA401_VERSION),
        (
            Behaviour.NO_MESSAGE_ID,
            {"code": "WA202", "message": "Request Accepted", "data": {}, "error": {}},
        ),
    ],
)
def test_seed_codes_use_the_seed_json(
    sandbox: Sandbox, behaviour: Behaviour, document: dict[str, Any]
) -> None:
    """Every code the seed documents is answered with the seed's JSON, byte for byte in meaning."""
    sandbox.faults.default = behaviour
    assert post(sandbox.url).json() == document


def test_wav2101_says_the_daily_limit_is_exhausted(sandbox: Sandbox) -> None:
    """WAV2101 carries the daily-limit message."""
    sandbox.faults.default = Behaviour.WAV2101
    document = post(sandbox.url).json()
    assert document["message"] == "Daily limit exhausted for the account."


@pytest.mark.parametrize("behaviour", [Behaviour.THROTTLE, Behaviour.S503])
def test_retry_after_follows_the_faults(sandbox: Sandbox, behaviour: Behaviour) -> None:
    """429 and 503 carry faults.retry_after as given, and no header when it is None."""
    sandbox.faults.default = behaviour
    sandbox.faults.retry_after = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert post(sandbox.url).headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    sandbox.faults.retry_after = None
    assert "Retry-After" not in post(sandbox.url).headers


def test_drop_reads_the_request_then_disconnects(sandbox: Sandbox) -> None:
    """DROP closes the connection after reading the request: the client sees a disconnect."""
    sandbox.faults.default = Behaviour.DROP
    error = failure_of(sandbox.url)
    assert isinstance(error, aiohttp.ServerDisconnectedError)
    [record] = sandbox.received
    assert (record.status, record.code, record.message_id) == (0, "", None)
    assert orjson.loads(record.body) == SAMPLE


def test_hang_makes_the_client_time_out(sandbox: Sandbox) -> None:
    """HANG never answers: a client with a 0.5 s timeout times out, and the request is recorded."""
    sandbox.faults.default = Behaviour.HANG
    started = time.monotonic()
    error = failure_of(sandbox.url, timeout=0.5)
    assert isinstance(error, TimeoutError)
    assert time.monotonic() - started >= 0.5
    [record] = sandbox.received
    assert (record.to, record.status, record.code) == (TO, 0, "")


def test_stop_ends_a_hanging_request_promptly() -> None:
    """Stopping the server while a request hangs takes well under a second and disconnects it."""

    async def scenario() -> tuple[float, BaseException | None]:
        sandbox = Sandbox(faults=Faults(default=Behaviour.HANG))
        url = await sandbox.start()
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(send(session, messages_url(url), time_limit=30))
            for _ in range(500):  # the request reaches the handler within milliseconds
                if sandbox.received:
                    break
                await asyncio.sleep(0.01)
            started = time.monotonic()
            await sandbox.stop()
            stopped_in = time.monotonic() - started
            outcome = (await asyncio.gather(request, return_exceptions=True))[0]
        return stopped_in, outcome if isinstance(outcome, BaseException) else None

    stopped_in, error = asyncio.run(scenario())
    assert stopped_in < 1.0
    assert isinstance(error, aiohttp.ServerDisconnectedError)


# --------------------------------------------------------------------------- faults


def test_scripts_are_consumed_per_recipient_then_ok(sandbox: Sandbox) -> None:
    """A recipient's script answers its first requests in order; then it is back to normal."""
    other = "+14155550100"
    sandbox.faults.scripts[TO] = [Behaviour.WA500, Behaviour.THROTTLE]
    statuses = [post(sandbox.url).status for _ in range(3)]
    assert statuses == [500, 429, 202]
    assert post(sandbox.url, changed("messaging_object.to", other)).status == 202
    assert sandbox.faults.scripts[TO] == []
    assert sandbox.count(TO) == 3
    assert sandbox.counts() == {TO: 3, other: 1}
    assert [record.code for record in sandbox.received] == ["WA500", "429", "WA202", "WA202"]


def test_balance_runs_out_into_e110(sandbox: Sandbox) -> None:
    """After ``balance`` accepted messages every further valid request gets 400 E110."""
    sandbox.faults.balance = 2
    replies = [post(sandbox.url) for _ in range(4)]
    assert [reply.status for reply in replies] == [202, 202, 400, 400]
    assert replies[3].json() == SEED_E110
    assert len(sandbox.accepted()) == 2


def test_daily_limit_runs_out_into_wav2101(sandbox: Sandbox) -> None:
    """After ``daily_limit`` accepted messages every further valid request gets 400 WAV2101."""
    sandbox.faults.daily_limit = 1
    codes = [post(sandbox.url).json()["code"] for _ in range(3)]
    assert codes == ["WA202", "WAV2101", "WAV2101"]


def test_balance_comes_before_daily_limit_and_after_scripts(sandbox: Sandbox) -> None:
    """A script still answers once the balance is gone; E110 wins over WAV2101."""
    sandbox.faults.balance = 0
    sandbox.faults.daily_limit = 0
    sandbox.faults.scripts[TO] = [Behaviour.OK]
    codes = [post(sandbox.url).json()["code"] for _ in range(2)]
    assert codes == ["WA202", "E110"]


def test_max_rate_throttles_a_burst(sandbox: Sandbox) -> None:
    """Above ``max_rate`` requests in the trailing second the sandbox answers 429 + Retry-After."""
    sandbox.faults.max_rate = 5
    replies = post_many(sandbox.url, [SAMPLE] * 20)
    throttled = [reply for reply in replies if reply.status == 429]
    assert len(throttled) >= 10
    assert all(reply.headers["Retry-After"] == "1" for reply in throttled)
    assert all(reply.status in (202, 429) for reply in replies)
    assert len(sandbox.accepted()) == 20 - len(throttled)


def test_latency_is_applied(sandbox: Sandbox) -> None:
    """Every answer waits at least ``latency`` seconds."""
    sandbox.faults.latency = 0.3
    started = time.monotonic()
    assert post(sandbox.url).status == 202
    assert post(sandbox.url, api_key="wrong").status == 401
    assert time.monotonic() - started >= 0.6


def test_request_is_recorded_before_the_latency(sandbox: Sandbox) -> None:
    """A client that gives up during the latency still leaves a record of what the server did."""
    sandbox.faults.latency = 5.0
    assert isinstance(failure_of(sandbox.url, timeout=0.3), TimeoutError)
    [record] = sandbox.received
    assert record.status == 202
    assert record.message_id is not None


def test_reset_clears_records_and_faults(sandbox: Sandbox) -> None:
    """reset() forgets records and counters and restores the default Faults."""
    sandbox.faults.balance = 1
    post(sandbox.url)
    assert post(sandbox.url).json()["code"] == "E110"
    sandbox.reset()
    assert sandbox.received == []
    assert sandbox.faults == Faults()
    sandbox.faults.balance = 1
    assert post(sandbox.url).status == 202


# --------------------------------------------------------------------------- other routes


def test_health_answers_200(sandbox: Sandbox) -> None:
    """GET /health is 200 and is not recorded."""
    assert get(f"{sandbox.url}/health").status == 200
    assert sandbox.received == []


def test_counts_endpoint_reports_requests_per_recipient(sandbox: Sandbox) -> None:
    """GET /_sandbox/counts returns {to: count} over every recorded request."""
    other = "+14155550100"
    post(sandbox.url)
    post(sandbox.url, api_key="wrong")
    post(sandbox.url, changed("messaging_object.to", other))
    assert get(f"{sandbox.url}/_sandbox/counts").json() == {TO: 2, other: 1}


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_unknown_route_is_404_json(sandbox: Sandbox, method: str) -> None:
    """Paths other than the messages endpoint, and other methods on it, get a 404 JSON answer."""

    async def go() -> Reply:
        async with aiohttp.ClientSession() as session:
            url = (
                f"{sandbox.url}/v1/{SID}/messages"
                if method == "POST"
                else messages_url(sandbox.url)
            )
            async with session.request(method, url, json=SAMPLE) as response:
                return Reply(response.status, response.headers, await response.read())

    reply = asyncio.run(go())
    assert (reply.status, reply.json()["code"]) == (404, "404")
    assert sandbox.received[0].status == 404


# --------------------------------------------------------------------------- lifecycle


def test_threaded_sandbox_starts_and_stops_cleanly() -> None:
    """ThreadedSandbox listens inside the block; afterwards its port and thread are gone."""
    with ThreadedSandbox(faults=Faults(default=Behaviour.WA500)) as sandbox:
        url = sandbox.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert get(f"{url}/health").status == 200
        assert post(url).status == 500
    with pytest.raises(aiohttp.ClientConnectorError):
        get(f"{url}/health")
    assert not any(thread.name == "kaleyra-sandbox" for thread in threading.enumerate())
    with pytest.raises(RuntimeError, match="not running"):
        _ = sandbox.url


def test_sandbox_starts_and_stops_in_a_running_loop() -> None:
    """start() binds a free port in the running loop and returns it; stop() is idempotent."""

    async def scenario() -> str:
        sandbox = Sandbox()
        url = await sandbox.start()
        assert url == sandbox.url
        async with aiohttp.ClientSession() as session:
            reply = await send(session, messages_url(url))
        assert reply.status == 202
        await sandbox.stop()
        await sandbox.stop()
        return url

    assert not asyncio.run(scenario()).endswith(":0")


def test_account_rejects_a_sender_that_is_not_a_number() -> None:
    """An Account's senders must be phone numbers."""
    with pytest.raises(ValueError, match="phone number"):
        Account(senders=frozenset({"sales"}))


def test_custom_account_is_enforced() -> None:
    """The sid, key and senders come from the Account given to the sandbox."""
    account = Account(
        sid="HXIN1", api_key="k1", senders=frozenset({"+15550001111", "442071234567"})
    )
    with ThreadedSandbox(account) as sandbox:
        assert post(sandbox.url, sid="HXIN1", api_key="k1", sender="15550001111").status == 202
        assert post(sandbox.url, sid="HXIN1", api_key="k1", sender="+442071234567").status == 202
        assert post(sandbox.url).status == 401


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM handling is POSIX-only")
def test_run_forever_prints_its_url_and_stops_on_sigterm() -> None:
    """run_forever announces itself on stdout, serves, and exits cleanly on SIGTERM."""
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    code = (
        "from bulk_sender.sandbox.server import Account, Faults, run_forever\n"
        "run_forever(host='127.0.0.1', port=0, account=Account(), faults=Faults())\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(
            r"Kaleyra sandbox listening on (http://127\.0\.0\.1:\d+) "
            r"\(sid HXAP16SANDBOX97IN, sender \+919000000001\)\n",
            line,
        )
        assert match, line
        with urllib.request.urlopen(f"{match[1]}/health", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
