"""Quiet hours in the recipient's local time, on a fake clock: held rows are not_sent, the summary
says when to run again, and the same command sends them once the quiet hours are over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from bulk_sender.api import exit_code
from bulk_sender.audience.gate import AudienceGate, Rules
from bulk_sender.audience.quiet import parse_quiet_hours
from bulk_sender.audience.rules import Limits
from bulk_sender.config import load_settings
from bulk_sender.input.campaign import Planned
from bulk_sender.model import Record, Status
from bulk_sender.record.summary import summary_dict, summary_text
from bulk_sender.runner import RunOptions, run_loop, send
from bulk_sender.sandbox.server import Sandbox
from tests.conftest import API_KEY, KEY_ENV, read_results, write_config, write_csv

INDIA, UK = "+919845012345", "+447700900123"


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


class FakeClock:
    """POSIX milliseconds that only move when the test moves them."""

    def __init__(self, at: str) -> None:
        self.now = _ms(at)

    def __call__(self) -> int:
        return self.now


def test_rows_in_quiet_hours_wait_for_the_next_run_after_they_end(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """17:00 UTC is 22:30 in India and 17:00 in London: the Indian row is not_sent with the
    reason and exit 1, the summary names 03:30 UTC; run again after it: sent."""
    config = write_config(
        tmp_path / "config.toml", sandbox.url, audience={"quiet_hours": "21:00-09:00"}
    )
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[INDIA], [UK]])
    settings = load_settings(config)
    options = RunOptions(campaign=campaign, results=tmp_path / "r.csv")
    clock = FakeClock("2026-11-20T17:00:00")
    first = run_loop(send(settings, options, environ={KEY_ENV: API_KEY}, clock=clock))
    rows = {r["to"]: r for r in read_results(tmp_path / "r.csv")}
    assert rows[UK]["status"] == "sent"
    assert (rows[INDIA]["status"], rows[INDIA]["code"]) == ("not_sent", "QUIET_HOURS")
    assert rows[INDIA]["error"].startswith("quiet hours (21:00-09:00 in Asia/")
    assert rows[INDIA]["error"].endswith("after 2026-11-21 03:30 UTC")
    assert exit_code(first) == 1
    doc = summary_dict(first, exit_code=1, command=["bulk-sender", "send", str(campaign)])
    assert doc["audience"]["quiet_hours"] == {
        "rows": 1,
        "send_after": "2026-11-21T03:30:00Z",
        "all_by": "2026-11-21T03:30:00Z",
    }
    assert "run the same command again after 2026-11-21 03:30 UTC" in summary_text(doc, None)
    assert sandbox.counts() == {UK: 1}
    clock.now = _ms("2026-11-21T03:31:00")
    second = run_loop(send(settings, options, environ={KEY_ENV: API_KEY}, clock=clock))
    assert exit_code(second) == 0
    assert sandbox.counts() == {UK: 1, INDIA: 1}


def test_a_row_screened_before_quiet_hours_is_held_if_they_began_before_it_left() -> None:
    """Screened at 20:59 in India it may go; at its turn to leave it is 21:00: not_sent."""
    clock = FakeClock("2026-11-20T15:29:00")  # 20:59 IST
    rules = Rules(limits=Limits(repeat_ms=0), quiet=parse_quiet_hours("21:00-09:00"))
    gate = AudienceGate(rules, ledger=None, campaign=None, clock=clock)
    item = Planned(Record(row=1, to=INDIA, status=Status.NOT_SENT), b"{}", 7)

    async def run() -> list[Planned]:
        return await gate.screen([item])

    assert asyncio.run(run()) == [item]
    clock.now = _ms("2026-11-20T15:30:00")  # 21:00 IST
    taken = gate.take(item)
    assert isinstance(taken, Record)
    assert (taken.status, taken.code) == (Status.NOT_SENT, "QUIET_HOURS")
    assert gate.report.quiet_from == _ms("2026-11-21T03:30:00")
