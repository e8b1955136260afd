"""``report`` end to end: a campaign sent to the sandbox, callbacks through a real receiver,
the results rewritten, the funnel, the exports; also while the receiver is still receiving."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulk_sender.record.results import DELIVERY_COLUMNS, RESULT_COLUMNS
from bulk_sender.sandbox.server import Sandbox
from tests.conftest import CliRunner, read_results, write_config, write_csv
from tests.delivery_helpers import ThreadedReceiver, post, sqlite_store, store_factory, v2_status

NUMBERS = [f"+9198450{n:05d}" for n in range(1, 9)]
#: What Kaleyra and Meta say about each accepted message, by its position in NUMBERS.
PLAN: dict[int, list[tuple[str, int | None]]] = {
    0: [("SENT", None), ("DELIVERED", None), ("READ", None)],
    1: [("DELIVERED", None), ("SENT", None)],
    2: [("FAILED", 131047)],
    3: [("FAILED", 131026)],
    4: [("NOT-SENT", None)],
    5: [("FAILED", 130429)],
    6: [("SENT", None)],
    7: [],
}


def _sent(tmp_path: Path, sandbox: Sandbox, cli: CliRunner, store: str) -> dict[str, Any]:
    """A sent campaign of eight numbers (and one invalid row), its config (callbacks stored
    at ``store``) and results."""
    rows = [[n, f"C{i}", "diwali"] for i, n in enumerate(NUMBERS)] + [["12345", "C9", "diwali"]]
    csv = write_csv(tmp_path / "c.csv", ["phone", "ref", "ref1"], rows)
    callbacks = {"port": 0, "store": store}
    config = write_config(tmp_path / "config.toml", sandbox.url, callbacks=callbacks)
    out = tmp_path / "r.csv"
    run = cli("send", csv, "--config", config, "--out", out)
    assert run.code == 1, run.err  # the invalid row
    ids = {r["to"]: r["message_id"] for r in read_results(out)}
    return {"csv": csv, "config": config, "out": out, "ids": ids, "store": store}


@pytest.fixture
def campaign(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> dict[str, Any]:
    """A sent campaign whose callbacks go to callbacks.db beside its config (SQLite)."""
    return _sent(tmp_path, sandbox, cli, sqlite_store(tmp_path))


@pytest.fixture
def on_any(tmp_path: Path, sandbox: Sandbox, cli: CliRunner, backend: str) -> dict[str, Any]:
    """A sent campaign whose callbacks go to a store on each backend."""
    return _sent(tmp_path, sandbox, cli, backend)


def _callbacks(
    url: str, ids: dict[str, str], plan: dict[int, list[tuple[str, int | None]]]
) -> None:
    for index, steps in plan.items():
        number = NUMBERS[index]
        for step, (name, code) in enumerate(steps):
            doc = v2_status(
                name, ids=(f"wamid.{index}", f"wamid.{index}", ids[number]),
                timestamp=1_764_000_000 + 60 * step + index, recipient=number[1:], code=code,
            )  # fmt: skip
            assert post(url + "/kaleyra/status", doc)[0] == 200


def test_report_rewrites_the_results_prints_the_funnel_and_exports_what_can_be_resent(
    tmp_path: Path, on_any: dict[str, Any], cli: CliRunner
) -> None:
    """Delivery columns after today's, the funnel with codes in words, the resend export."""
    with ThreadedReceiver(store_factory(on_any["store"])) as url:
        _callbacks(url, on_any["ids"], PLAN)
    failed, summary = tmp_path / "again.csv", tmp_path / "s.json"
    run = cli("report", on_any["out"], "--config", on_any["config"], "--failed", failed,
              "--summary-json", summary)  # fmt: skip
    assert run.code == 0, run.err
    rows = {r["to"]: r for r in read_results(on_any["out"])}
    header = (on_any["out"]).read_text(encoding="utf-8").splitlines()[0].split(",")
    assert tuple(header) == RESULT_COLUMNS and tuple(header[-6:]) == DELIVERY_COLUMNS
    got = [rows[n]["delivery_status"] for n in NUMBERS]
    assert got == ["read", "delivered", "failed", "failed", "not_sent", "failed", "sent", ""]
    assert rows[NUMBERS[2]]["delivery_code"] == "131047"
    assert rows[NUMBERS[2]]["delivery_error"] == "error 131047: details"
    assert rows[NUMBERS[0]]["read_at"] == "2025-11-24T16:02:00.000Z"
    assert rows[NUMBERS[0]]["delivered_at"] == "2025-11-24T16:01:00.000Z"
    assert rows["12345"]["delivery_status"] == ""
    assert "accepted by Kaleyra               8" in run.out
    assert "delivered                         2   25.0 %" in run.out
    assert "the number cannot receive WhatsApp messages" in run.out
    assert "waiting for a callback            1   12.5 % of accepted" in run.out
    exported = read_results(failed)
    assert [r["phone"] for r in exported] == [NUMBERS[4], NUMBERS[5]]
    assert exported[0]["error"].startswith("not sent:")
    assert "rate limit" in exported[1]["error"]
    doc = orjson.loads(summary.read_bytes())
    assert doc["funnel"] == {"accepted": 8, "sent": 3, "delivered": 2, "read": 1, "failed": 4}
    assert doc["waiting"] == 1 and doc["failed_rows"] == 2


def test_131047_is_resent_only_once_the_customer_wrote_again(
    tmp_path: Path, on_any: dict[str, Any], cli: CliRunner
) -> None:
    """A re-engagement failure joins the export when its customer wrote in the last 24 hours."""
    import time

    wrote = {"meta_object": {"value": {"messages": [{"from": NUMBERS[2][1:], "id": "wamid.in",
             "timestamp": str(int(time.time()) - 3600), "type": "text",
             "text": {"body": "Show me the catalog"}}]}}}  # fmt: skip
    with ThreadedReceiver(store_factory(on_any["store"])) as url:
        _callbacks(url, on_any["ids"], {2: PLAN[2], 3: PLAN[3]})
        assert post(url + "/kaleyra/incoming", wrote)[0] == 200
    failed = tmp_path / "again.csv"
    assert cli("report", on_any["out"], "--config", on_any["config"], "--failed", failed).code == 0
    exported = read_results(failed)
    assert [r["phone"] for r in exported] == [NUMBERS[2]]
    assert "the customer wrote at" in exported[0]["error"]


def test_report_without_callbacks_shows_every_accepted_row_waiting(
    campaign: dict[str, Any], cli: CliRunner
) -> None:
    """No store yet: the delivery columns are empty and the report says none are stored."""
    run = cli("report", campaign["out"], "--config", campaign["config"])
    assert run.code == 0, run.err
    assert "none stored yet" in run.out
    assert "waiting for a callback            8  100.0 % of accepted" in run.out
    assert all(r["delivery_status"] == "" for r in read_results(campaign["out"]))


def test_a_send_that_finds_callbacks_merges_them(
    tmp_path: Path, on_any: dict[str, Any], cli: CliRunner
) -> None:
    """Running the same send again (nothing left to send) fills the delivery columns too."""
    with ThreadedReceiver(store_factory(on_any["store"])) as url:
        _callbacks(url, on_any["ids"], {0: PLAN[0]})
    run = cli("send", on_any["csv"], "--config", on_any["config"], "--out", on_any["out"])
    assert run.code == 1, run.err
    rows = {r["to"]: r for r in read_results(on_any["out"])}
    assert rows[NUMBERS[0]]["delivery_status"] == "read"


def test_report_while_the_receiver_is_still_receiving(
    tmp_path: Path, on_any: dict[str, Any], cli: CliRunner
) -> None:
    """Reports run during a flood of callbacks never fail nor lose a row; the last one has all."""
    half = threading.Event()
    done = threading.Event()
    statuses = ["SENT", "DELIVERED", "READ"]

    def flood(url: str) -> None:
        for round_, name in enumerate(statuses * 20):
            for number in NUMBERS:
                doc = v2_status(
                    name, ids=("w", "w", on_any["ids"][number]),
                    timestamp=1_764_000_000 + round_, recipient=number[1:],
                )  # fmt: skip
                assert post(url + "/kaleyra/status", doc)[0] == 200
            if round_ == 2:
                half.set()
        done.set()

    with ThreadedReceiver(store_factory(on_any["store"])) as url:
        poster = threading.Thread(target=flood, args=(url,))
        poster.start()
        assert half.wait(timeout=60)
        reports = 0
        while not done.is_set() or reports < 2:
            run = cli("report", on_any["out"], "--config", on_any["config"])
            assert run.code == 0, run.err
            rows = read_results(on_any["out"])
            assert len(rows) == len(NUMBERS) + 1
            assert {r["delivery_status"] for r in rows} <= {"sent", "delivered", "read", ""}
            reports += 1
        poster.join()
    run = cli("report", on_any["out"], "--config", on_any["config"])
    assert [r["delivery_status"] for r in read_results(on_any["out"])][:8] == ["read"] * 8


def test_report_needs_the_journal_and_the_campaign_file(
    tmp_path: Path, campaign: dict[str, Any], cli: CliRunner
) -> None:
    """No journal, a moved or changed campaign file: exit 2 with what to do; --campaign helps."""
    run = cli("report", tmp_path / "nothing.csv", "--config", campaign["config"])
    assert (run.code, "no journal" in run.err) == (2, True)
    moved = tmp_path / "elsewhere" / "c.csv"
    moved.parent.mkdir()
    campaign["csv"].rename(moved)
    run = cli("report", campaign["out"], "--config", campaign["config"])
    assert (run.code, "--campaign" in run.err) == (2, True)
    assert (
        cli("report", campaign["out"], "--config", campaign["config"], "--campaign", moved).code
        == 0
    )
    moved.write_text("phone\n+919845000001\n", encoding="utf-8")
    run = cli("report", campaign["out"], "--config", campaign["config"], "--campaign", moved)
    assert (run.code, "not the file this campaign was sent from" in run.err) == (2, True)


def test_a_store_that_cannot_be_read_stops_the_report_with_exit_3(
    tmp_path: Path, campaign: dict[str, Any], cli: CliRunner
) -> None:
    """A callbacks file that is not a store: exit 3 naming it; the results file is untouched."""
    (tmp_path / "callbacks.db").write_bytes(b"this is not a database" * 100)
    before = campaign["out"].read_bytes()
    summary = tmp_path / "s.json"
    run = cli("report", campaign["out"], "--config", campaign["config"], "--summary-json", summary)
    assert run.code == 3
    assert "callbacks.db" in run.err
    assert campaign["out"].read_bytes() == before
    assert orjson.loads(summary.read_bytes())["exit_code"] == 3


@pytest.mark.parametrize("where", ["campaign", "store", "results"])
def test_an_output_over_the_campaign_the_store_or_the_results_is_refused(
    tmp_path: Path, campaign: dict[str, Any], cli: CliRunner, where: str
) -> None:
    """--html over the campaign file, the callback store or the results file: exit 2, nothing
    written."""
    with ThreadedReceiver(store_factory(sqlite_store(tmp_path))) as url:
        _callbacks(url, campaign["ids"], {0: PLAN[0]})
    target = {"campaign": campaign["csv"], "store": tmp_path / "callbacks.db",
              "results": campaign["out"]}[where]  # fmt: skip
    before = target.read_bytes()
    run = cli("report", campaign["out"], "--config", campaign["config"], "--html", target)
    assert run.code == 2, run.err
    assert target.read_bytes() == before
