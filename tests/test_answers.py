"""Kaleyra's answer as its documentation prints it, and unreadable answers that keep coming.

Issue 13.11: a 2xx that is not JSON but names one message_id and WA202 is ``sent`` (with a
warning); the same unreadable accepted answer row after row stops the run.
"""

from __future__ import annotations

from pathlib import Path

from bulk_sender.sandbox.server import Behaviour, Sandbox
from bulk_sender.sending.garbled import GARBLED_IN_A_ROW, GarbledAnswers
from bulk_sender.sending.outcome import Kind, Outcome, classify_answer
from tests.conftest import CliRunner, read_results, write_config, write_csv
from tests.seed import SEED_WA202_AS_PRINTED


def test_the_documented_sample_is_sent_with_its_id_and_a_warning() -> None:
    """The seed's 202 sample, byte for byte, is a sent message with its id and a warning."""
    outcome = classify_answer(202, SEED_WA202_AS_PRINTED)
    assert outcome.kind is Kind.SENT
    assert outcome.message_id == "AXXXXXXXXXXXXXXXXXXX"
    assert "not valid JSON" in outcome.warning


def test_two_ids_in_an_unreadable_answer_are_not_guessed() -> None:
    """An unreadable body naming two different ids is ambiguous: the row is unknown."""
    body = SEED_WA202_AS_PRINTED + b'\n"message_id":"BYYYY"'
    assert classify_answer(202, body).kind is Kind.AMBIGUOUS


def test_an_unreadable_answer_without_wa202_is_not_guessed() -> None:
    """An id without Kaleyra's success code is not taken as accepted."""
    body = SEED_WA202_AS_PRINTED.replace(b"WA202", b"WA999")
    assert classify_answer(202, body).kind is Kind.AMBIGUOUS


def _garbled(error: str = "the answer was not JSON") -> Outcome:
    return Outcome(Kind.AMBIGUOUS, 200, "HTTP 200", error)


def test_garbled_answers_stop_only_when_they_keep_coming() -> None:
    """Nine in a row, then a readable answer: no stop; ten in a row: stop."""
    rule = GarbledAnswers()
    assert not any(rule.judge(_garbled()) for _ in range(GARBLED_IN_A_ROW - 1))
    assert not rule.judge(Outcome(Kind.SENT, 202, "WA202", "", "A1"))
    verdicts = [rule.judge(_garbled()) for _ in range(GARBLED_IN_A_ROW)]
    assert verdicts == [False] * (GARBLED_IN_A_ROW - 1) + [True]


def test_a_different_kind_of_garbled_answer_starts_the_count_again() -> None:
    """Alternating kinds of unreadable answer are not 'the same kind, many in a row'."""
    rule = GarbledAnswers()
    kinds = [_garbled("the answer was not JSON"), _garbled("the answer had no data.message_id")]
    assert not any(rule.judge(kinds[i % 2]) for i in range(3 * GARBLED_IN_A_ROW))


def test_a_timeout_neither_counts_nor_resets() -> None:
    """A request without an answer says nothing about how answers read."""
    rule = GarbledAnswers()
    for _ in range(GARBLED_IN_A_ROW - 1):
        rule.judge(_garbled())
    assert not rule.judge(Outcome(Kind.AMBIGUOUS, None, "NO_ANSWER", "read timeout"))
    assert rule.judge(_garbled())


def test_a_campaign_answered_as_documented_is_sent(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Every answer in the documented comma-less format: every row sent with its own id."""
    sandbox.faults.default = Behaviour.AS_DOCUMENTED
    numbers = [f"+9198452{i:05d}" for i in range(30)]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    run = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
    assert run.code == 0, run.err
    rows = read_results(tmp_path / "r.csv")
    assert {r["status"] for r in rows} == {"sent"}
    assert {r["message_id"] for r in rows} == {a.message_id for a in sandbox.accepted()}
    assert all("not valid JSON" in r["warning"] for r in rows)


def test_unreadable_accepted_answers_stop_the_run(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A server answering 200 with a web page to every row: stop after ten, the rest not_sent."""
    sandbox.faults.default = Behaviour.NOT_JSON
    numbers = [f"+9198453{i:05d}" for i in range(40)]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"concurrency": 1})
    run = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
    assert run.code == 3
    assert "could not read" in run.out
    statuses = [r["status"] for r in read_results(tmp_path / "r.csv")]
    assert statuses.count("unknown") == GARBLED_IN_A_ROW
    assert statuses.count("not_sent") == 40 - GARBLED_IN_A_ROW
    assert len(sandbox.received) == GARBLED_IN_A_ROW
