"""Callback parsing: Kaleyra's v2 shape, the flat shape, and every way a body is refused."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given

from bulk_sender.delivery.events import DeliveryStatus
from bulk_sender.delivery.parse import CallbackRejected, decode, parse_incoming, parse_status
from tests.strategies import json_values

NOW = "2026-11-24T21:33:17.110Z"


def v2(*statuses: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A status callback in Kaleyra's v2 shape."""
    doc: dict[str, Any] = {
        "meta_object": {"value": {"messaging_product": "whatsapp", "statuses": list(statuses)}},
        "extra_info": {"message_id": "A1", "ref": "c1", "ref1": "r1", "ref2": "r2",
                       "trace_id": "t", "waba_id": "w"},
        "status": "sent",
        "message_id": "wamid.TOP",
    }  # fmt: skip
    doc.update(top)
    return doc


def status(**fields: Any) -> dict[str, Any]:
    """One entry of ``statuses[]``."""
    entry = {"id": "wamid.X", "status": "SENT", "timestamp": "1722834665",
             "recipient_id": "919407000001"}  # fmt: skip
    entry.update(fields)
    return entry


def test_v2_status_takes_every_id_refs_recipient_and_time() -> None:
    """A one-status v2 callback gives its three ids, the refs, the recipient and Meta's time."""
    (event,) = parse_status(v2(status()), received_at=NOW).statuses
    assert event.message_ids == ("wamid.X", "wamid.TOP", "A1")
    assert event.status is DeliveryStatus.SENT
    assert event.at == "2024-08-05T05:11:05.000Z"
    assert event.recipient == "919407000001"
    assert (event.ref, event.ref1, event.ref2) == ("c1", "r1", "r2")


def test_v2_failure_reads_code_title_and_details() -> None:
    """A failed status carries Meta's code, title and error_data.details."""
    error = {"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
             "error_data": {"details": "24 hours passed"}}  # fmt: skip
    failed = status(status="failed", errors=[error])
    (event,) = parse_status(v2(failed), received_at=NOW).statuses
    assert (event.status, event.code, event.title, event.detail) == (
        DeliveryStatus.FAILED,
        "131047",
        "Re-engagement message",
        "24 hours passed",
    )


@pytest.mark.parametrize("name", ["NOT-SENT", "not-sent", "Not_Sent", "NOTSENT"])
def test_not_sent_is_read_in_any_case_and_spelling(name: str) -> None:
    """Kaleyra's NOT-SENT arrives as not-sent or NOT-SENT; both are not_sent."""
    (event,) = parse_status(v2(status(status=name)), received_at=NOW).statuses
    assert event.status is DeliveryStatus.NOT_SENT


def test_several_statuses_of_different_messages_keep_only_their_own_ids() -> None:
    """With statuses of two messages, request-level ids are not given to either."""
    callback = parse_status(
        v2(status(id="wamid.1", status="delivered"), status(id="wamid.2", status="read")),
        received_at=NOW,
    )
    assert [e.message_ids for e in callback.statuses] == [("wamid.1",), ("wamid.2",)]
    assert [e.status for e in callback.statuses] == [DeliveryStatus.DELIVERED, DeliveryStatus.READ]


def test_several_statuses_of_one_message_share_the_request_ids() -> None:
    """Statuses that all carry one id also get the request-level ids."""
    callback = parse_status(v2(status(status="sent"), status(status="delivered")), received_at=NOW)
    assert all(e.message_ids == ("wamid.X", "wamid.TOP", "A1") for e in callback.statuses)


def test_v2_without_statuses_is_read_from_its_top_level() -> None:
    """Kaleyra's NOT-SENT, which never reached Meta, has no statuses[]: the top level counts."""
    doc = {"extra_info": {"message_id": "A1", "ref": "c1"}, "status": "NOT-SENT",
           "message_id": "A1", "meta_object": {}}  # fmt: skip
    (event,) = parse_status(doc, received_at=NOW).statuses
    assert (event.status, event.message_ids, event.at) == (DeliveryStatus.NOT_SENT, ("A1",), NOW)


def test_flat_shape_maps_the_documented_names() -> None:
    """A dynamic-variables body: message_id, status, mobile, created_at, error_code/title."""
    doc = {"message_id": "A9", "status": "Failed", "mobile": "+91 9407000001",
           "created_at": "2026-11-24T10:00:00+05:30", "error_code": "131026",
           "error_title": "Message undeliverable", "ref": "c1"}  # fmt: skip
    (event,) = parse_status(doc, received_at=NOW).statuses
    assert event.message_ids == ("A9",)
    assert event.recipient == "919407000001"
    assert event.at == "2026-11-24T04:30:00.000Z"
    assert (event.code, event.title, event.ref) == ("131026", "Message undeliverable", "c1")


def test_flat_shape_reads_unix_milliseconds() -> None:
    """A 13-digit timestamp is milliseconds."""
    (event,) = parse_status(
        {"id": "A1", "status": "read", "timestamp": 1722834665123}, received_at=NOW
    ).statuses
    assert event.at == "2024-08-05T05:11:05.123Z"


def test_a_repeated_callback_has_the_same_key_and_a_new_status_another() -> None:
    """The same content gives the same event key; another status or time a different one."""
    first = parse_status(v2(status()), received_at=NOW).statuses[0]
    again = parse_status(v2(status()), received_at="2030-01-01T00:00:00.000Z").statuses[0]
    later = parse_status(v2(status(status="delivered")), received_at=NOW).statuses[0]
    assert first.key == again.key
    assert first.key != later.key


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "must be a JSON object"),
        ({"meta_object": {"value": {"statuses": {}}}}, "statuses must be a list"),
        (v2(status(status="deleted")), "is not a status"),
        (v2(status(status=7)), "is not a status"),
        (v2(status(timestamp="yesterday")), "must be a unix time"),
        (v2(status(timestamp="99")), "not a plausible unix time"),
        (v2(status(recipient_id="someone")), "must be a phone number"),
        (v2(status(errors="bad")), "errors must be a list"),
        (v2(status(id={"x": 1})), "must be a string"),
        ({"status": "sent"}, "neither a message id nor a recipient"),
        ({"hello": "world"}, "No status"),
        (
            {"meta_object": {"value": {"messages": [{"from": "91"}]}}},
            "point it at /kaleyra/incoming",
        ),
    ],
)
def test_malformed_status_callbacks_are_rejected_with_a_reason(
    document: object, reason: str
) -> None:
    """Wrong shapes and types raise CallbackRejected naming the problem."""
    with pytest.raises(CallbackRejected, match=reason):
        parse_status(document, received_at=NOW)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"timestamp": "yesterday"}, "statuses[1].timestamp"),
        ({"errors": [{"title": ["x"]}]}, "statuses[1].errors[0].title"),
        ({"id": 7.5e400}, "statuses[1].id"),
    ],
)
def test_a_rejection_names_the_status_entry_at_fault(bad: dict[str, Any], named: str) -> None:
    """The second of two statuses is wrong: the reason names statuses[1], not statuses[0]."""
    with pytest.raises(CallbackRejected) as caught:
        parse_status(v2(status(id="w1"), status(**{"id": "w2", **bad})), received_at=NOW)
    assert named in caught.value.reason


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"nul\x00l"])
def test_bodies_that_are_not_json_are_rejected(body: bytes) -> None:
    """Empty or broken JSON is refused before any parsing."""
    with pytest.raises(CallbackRejected):
        decode(body)


def test_incoming_v2_message_gives_sender_time_and_text() -> None:
    """meta_object.value.messages[] gives the sender's number, the time and text.body."""
    doc = {"meta_object": {"value": {"messages": [{"from": "919407000001", "id": "wamid.IN",
           "timestamp": "1722834665", "type": "text", "text": {"body": "STOP"}}]}}}  # fmt: skip
    (message,) = parse_incoming(doc, received_at=NOW).incoming
    assert (message.sender, message.message_id, message.at, message.body) == (
        "919407000001",
        "wamid.IN",
        "2024-08-05T05:11:05.000Z",
        "STOP",
    )


def test_incoming_button_reply_keeps_its_label() -> None:
    """An interactive reply's title is its text."""
    doc = {"meta_object": {"value": {"messages": [{"from": "919407000001", "id": "w",
           "type": "interactive", "interactive": {"type": "button_reply",
           "button_reply": {"id": "b", "title": "Stop promotions"}}}]}}}  # fmt: skip
    assert parse_incoming(doc, received_at=NOW).incoming[0].body == "Stop promotions"


def test_incoming_flat_message_without_id_gets_a_stable_one() -> None:
    """A flat message with no id is keyed by its content, so a retry is stored once."""
    doc = {"from": "919407000001", "body": "hi", "created_at": "1722834665"}
    first = parse_incoming(doc, received_at=NOW).incoming[0]
    assert first.message_id == parse_incoming(doc, received_at="x").incoming[0].message_id


def test_a_status_posted_to_incoming_is_refused() -> None:
    """A status callback sent to /kaleyra/incoming is a 400 naming the right endpoint."""
    with pytest.raises(CallbackRejected, match="/kaleyra/status"):
        parse_incoming(v2(status()), received_at=NOW)


@given(json_values())
def test_status_parsing_is_total(document: object) -> None:
    """Any JSON value either parses or is rejected with CallbackRejected; nothing else."""
    with contextlib.suppress(CallbackRejected):
        parse_status(document, received_at=NOW)


@given(json_values())
def test_incoming_parsing_is_total(document: object) -> None:
    """Any JSON value either parses as incoming messages or is rejected; nothing else."""
    with contextlib.suppress(CallbackRejected):
        parse_incoming(document, received_at=NOW)
