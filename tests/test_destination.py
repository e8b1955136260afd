"""A journal knows where it sent: a rehearsal never stands in for the real send (issue 13.1)."""

from __future__ import annotations

from pathlib import Path

from bulk_sender.sandbox.server import Account, Sandbox, ThreadedSandbox
from tests.conftest import API_KEY, SENDER, SID, CliRunner, read_results, write_config, write_csv


def _numbers(n: int) -> list[str]:
    return [f"+9198450{i:05d}" for i in range(n)]


def test_rehearsal_then_real_send_sends_every_row(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A --sandbox run without --out keeps its own results; the real run then sends every row."""
    numbers = _numbers(12)
    campaign = write_csv(tmp_path / "camp.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    rehearsal = cli("send", campaign, "--config", config, "--sandbox")
    assert rehearsal.code == 0, rehearsal.err
    assert len(read_results(tmp_path / "camp.sandbox.results.csv")) == 12
    assert sandbox.received == []
    real = cli("send", campaign, "--config", config)
    assert real.code == 0, real.err
    assert sorted(r.to for r in sandbox.accepted()) == sorted(numbers)
    ids = {r["message_id"] for r in read_results(tmp_path / "camp.results.csv")}
    assert ids == {r.message_id for r in sandbox.accepted()}


def test_real_send_into_a_rehearsals_journal_is_refused(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """The same --out for a rehearsal and the real send: the real run exits 2 and sends nothing."""
    campaign = write_csv(tmp_path / "camp.csv", ["to"], [[n] for n in _numbers(6)])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--sandbox", "--out", out).code == 0
    before = out.read_text()
    real = cli("send", campaign, "--config", config, "--out", out)
    assert real.code == 2
    assert "the sandbox (a rehearsal)" in real.err
    assert "6 messages sent" in real.err
    assert "Traceback" not in real.err
    assert sandbox.received == []
    assert out.read_text() == before


def test_destination_may_change_while_nothing_arrived(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A wrong SID stops the run with nothing sent; fixing it and resuming sends every row once."""
    numbers = _numbers(8)
    campaign = write_csv(tmp_path / "camp.csv", ["to"], [[n] for n in numbers])
    out = tmp_path / "r.csv"
    wrong = write_config(tmp_path / "wrong.toml", sandbox.url, kaleyra={"sid": "HXAP16WRONG00IN"})
    first = cli("send", campaign, "--config", wrong, "--out", out)
    assert first.code == 3
    assert sandbox.accepted() == []
    right = write_config(tmp_path / "right.toml", sandbox.url)
    second = cli("send", campaign, "--config", right, "--out", out)
    assert second.code == 0, second.err
    assert sorted(r.to for r in sandbox.accepted()) == sorted(numbers)


def test_destination_is_bound_once_a_message_arrived(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """After some rows reached one server, resuming against another is refused (exit 2)."""
    campaign = write_csv(tmp_path / "camp.csv", ["to"], [[n] for n in _numbers(10)])
    out = tmp_path / "r.csv"
    sandbox.faults.balance = 4
    config = write_config(tmp_path / "a.toml", sandbox.url, sending={"concurrency": 1})
    assert cli("send", campaign, "--config", config, "--out", out).code == 3
    account = Account(sid=SID, api_key=API_KEY, senders=frozenset({SENDER}))
    with ThreadedSandbox(account) as other:
        moved = write_config(tmp_path / "b.toml", other.url)
        run = cli("send", campaign, "--config", moved, "--out", out)
        assert run.code == 2
        assert "4 messages sent" in run.err
        assert other.received == []
    assert len(sandbox.accepted()) == 4
