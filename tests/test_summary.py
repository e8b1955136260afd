"""The end-of-run summary: one document shape for a send and a dry run, counted one way."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulk_sender.input.campaign import LoadStats
from bulk_sender.model import Record, Status
from bulk_sender.record.results import Totals
from bulk_sender.record.summary import (
    DryRunResult,
    SendResult,
    stop_line,
    summary_dict,
    summary_text,
)
from bulk_sender.sending.advice import ACCOUNT_ADVICE
from bulk_sender.sending.engine import StopReason
from bulk_sender.sending.outcome import ACCOUNT_CODES
from bulk_sender.sending.stats import RunStats

COMMAND = ["bulk-sender", "send", "c.csv", "--config", "k.toml"]


def _totals(*records: Record) -> Totals:
    totals = Totals(rows=len(records))
    for record in records:
        totals.count(record)
    return totals


def _send(stop: StopReason | None = None, *records: Record) -> SendResult:
    return SendResult(
        campaign=Path("c.csv"), results=Path("c.results.csv"), failed=Path("c.results.failed.csv"),
        totals=_totals(*records), load=LoadStats(), stats=RunStats(target_rate=10),
        stop=stop, resumed_done=0, crashed_unknown=0, duration=1.5,
    )  # fmt: skip


def test_every_account_code_has_its_advice() -> None:
    """Each code that stops a run (outcome.ACCOUNT_CODES) has what-and-what-to-do advice."""
    assert set(ACCOUNT_ADVICE) == ACCOUNT_CODES


def test_totals_count_statuses_codes_and_warnings_once_for_both_kinds_of_run() -> None:
    """A status is counted for every message, a code only when it was not sent, and what makes
    the exit code 1 (unsent) covers a dry run's invalid rows as well as a send's failures."""
    send = _totals(
        Record(row=1, status=Status.SENT, code="HTTP 202", warning="landline?"),
        Record(row=2, status=Status.FAILED, code="WA400"),
        Record(row=3, status=Status.DUPLICATE),
    )
    assert send.statuses == {Status.SENT: 1, Status.FAILED: 1, Status.DUPLICATE: 1}
    assert send.codes == {"WA400": 1}
    assert (send.messages, send.warnings, send.unsent) == (3, 1, 1)
    dry = _totals(Record(row=1, status=Status.VALID), Record(row=2, status=Status.INVALID))
    assert dry.unsent == 1
    assert _totals(Record(row=1, status=Status.VALID)).unsent == 0


def test_a_dry_run_and_a_send_write_the_same_fields() -> None:
    """Both documents carry every field, so a reader never has to ask which mode wrote it."""
    dry = DryRunResult(
        campaign=Path("c.csv"), verdicts=None, totals=_totals(), load=LoadStats(), duration=0.2,
        example_request=None,
    )  # fmt: skip
    dry_doc = summary_dict(dry, exit_code=0, command=COMMAND)
    send_doc = summary_dict(_send(), exit_code=0, command=COMMAND)
    assert list(dry_doc) == list(send_doc)
    assert (dry_doc["mode"], dry_doc["results"], dry_doc["resume_command"]) == (
        "dry-run",
        None,
        None,
    )
    assert list(dry_doc["statuses"]) == ["valid", "invalid", "duplicate", "suppressed"]
    assert "sent" in send_doc["statuses"]
    assert stop_line(dry, error_threshold=5) is None
    assert summary_text(dry_doc, None).startswith("Dry run of c.csv: finished")


@pytest.mark.parametrize(
    ("stop", "line"),
    [
        (StopReason("account", "E110", ""), "Kaleyra says the balance is low (E110). Top up,"),
        (StopReason("account", "HTTP 401", "Denied"), "Kaleyra says Denied (HTTP 401). Fix it,"),
        (StopReason("threshold", "WA400", "bad"), "Stopped after 5 failed rows in a row (last"),
        (StopReason("signal", "SIGTERM", ""), "Stopped by SIGTERM. To continue, run the same"),
        (
            StopReason("endpoint", "TLS_VERIFY", "the TLS certificate of h:443 could not be x"),
            "Stopped (TLS_VERIFY): the TLS certificate of h:443 could not be x. If your network",
        ),
    ],
)
def test_the_stop_line_says_what_stopped_the_run_and_what_to_do(
    stop: StopReason, line: str
) -> None:
    """An account stop gets its code's advice (Kaleyra's words for a code without any); other
    stops say what happened; each ends with the rows a resume will send."""
    result = _send(stop, Record(row=1, status=Status.NOT_SENT))
    text = stop_line(result, error_threshold=5)
    assert text is not None
    assert text.startswith(line)
    assert text.endswith("send the remaining 1 rows.")
    assert stop_line(_send(None), error_threshold=5) is None
