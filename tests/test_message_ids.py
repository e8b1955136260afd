"""A message_id seen twice: the answer belonged to another request (issue 13, finding 8)."""

from __future__ import annotations

from pathlib import Path

import orjson

from bulk_sender.sending.message_ids import RecentIds
from bulk_sender.sending.outcome import Kind, Outcome
from tests.conftest import CliRunner, read_results, write_config, write_csv
from tests.rawhttp import Peer, ThreadedRawServer, reply


def sent(message_id: str) -> Outcome:
    """A SENT outcome carrying ``message_id``."""
    return Outcome(Kind.SENT, 202, "WA202", "", message_id)


def test_an_id_seen_before_makes_the_outcome_ambiguous() -> None:
    """The second SENT with the same id is AMBIGUOUS (DUPLICATE_ID), without that id."""
    ids = RecentIds()
    assert ids.judge(sent("m-1")) == sent("m-1")
    again = ids.judge(sent("m-1"))
    assert (again.kind, again.code, again.message_id) == (Kind.AMBIGUOUS, "DUPLICATE_ID", None)
    assert "m-1" in again.error and "may have been delivered" in again.error


def test_other_outcomes_pass_and_are_not_remembered() -> None:
    """Non-SENT outcomes pass unchanged and do not enter the memory."""
    ids = RecentIds()
    refused = Outcome(Kind.ROW_FAILED, 400, "WA400", "bad", None)
    assert ids.judge(refused) is refused
    assert ids.judge(sent("m-1")).kind is Kind.SENT


def test_only_the_latest_ids_are_remembered() -> None:
    """The memory is a window of the last ``size`` ids: older ones are forgotten."""
    ids = RecentIds(size=2)
    for message_id in ("m-1", "m-2", "m-3"):
        ids.judge(sent(message_id))
    assert ids.judge(sent("m-1")).kind is Kind.SENT  # forgotten
    assert ids.judge(sent("m-3")).kind is Kind.AMBIGUOUS


def kaleyra_answer(message_id: str) -> bytes:
    """Kaleyra's 202 with ``message_id``."""
    body = {"code": "WA202", "message": "Request Accepted", "data": {"message_id": message_id}}
    return reply(orjson.dumps(body), "Content-Type: application/json")


def test_a_stray_answer_on_a_reused_connection_is_not_taken_as_the_next_rows(
    tmp_path: Path, cli: CliRunner
) -> None:
    """The server answers row 2 with row 1's answer again (a stray duplicate), its real answer
    still due. Row 2 ends unknown (DUPLICATE_ID, no id), the connection is dropped, and row 3
    gets its own answer on a new one instead of row 2's late one."""
    count = 0

    async def script(peer: Peer) -> None:
        nonlocal count
        late: bytes | None = None
        while await peer.request() is not None:
            count += 1
            if late is not None:  # this connection is out of step: row 2's answer comes now
                await peer.send(late)
                late = None
            elif count == 2:
                await peer.send(kaleyra_answer("m-1"))  # the stray: row 1's answer once more
                late = kaleyra_answer("m-2")
            else:
                await peer.send(kaleyra_answer(f"m-{count}"))

    with ThreadedRawServer(script) as server:
        config = write_config(
            tmp_path / "config.toml", f"http://127.0.0.1:{server.port}", sending={"concurrency": 1}
        )
        numbers = ["+919876543210", "+919876543211", "+919876543212"]
        campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
        run = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
        connections = server.connections
    rows = read_results(tmp_path / "r.csv")
    assert [(r["status"], r["message_id"], r["code"]) for r in rows] == [
        ("sent", "m-1", "WA202"),
        ("unknown", "", "DUPLICATE_ID"),
        ("sent", "m-3", "WA202"),
    ]
    assert run.code == 1
    assert connections == 2
