"""--restart carries over what was sent; an unreadable journal is never a silent fresh start.

Issue 13.2: following the tool's own advice must never send anyone the campaign twice.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bulk_sender.sandbox.server import Sandbox
from tests.conftest import CliRunner, read_results, write_config, write_csv


def _numbers(n: int) -> list[str]:
    return [f"+9198451{i:05d}" for i in range(n)]


def _stopped_after(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, rows: int, accepted: int
) -> tuple[Path, Path, Path, list[str]]:
    """A campaign stopped by a low balance after ``accepted`` messages (exit 3)."""
    numbers = _numbers(rows)
    campaign = write_csv(tmp_path / "c.csv", ["to", "name"], [[n, "x"] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"concurrency": 1})
    out = tmp_path / "r.csv"
    sandbox.faults.balance = accepted
    assert cli("send", campaign, "--config", config, "--out", out).code == 3
    sandbox.faults.balance = None
    return campaign, config, out, numbers


def test_edit_then_restart_sends_only_the_rest(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Stopped after 7 of 20, one cell edited: the advice names --restart, which sends the 13."""
    campaign, config, out, numbers = _stopped_after(tmp_path, sandbox, cli, 20, 7)
    text = campaign.read_text().replace(f"{numbers[15]},x", f"{numbers[15]},edited")
    campaign.write_text(text)
    refused = cli("send", campaign, "--config", config, "--out", out)
    assert refused.code == 2
    assert "--restart" in refused.err
    assert "is sent again" in refused.err
    restarted = cli("send", campaign, "--config", config, "--out", out, "--restart")
    assert restarted.code == 0, restarted.err
    assert "bulk_sender.carried_over" in restarted.err
    assert sorted(r.to for r in sandbox.accepted()) == sorted(numbers)
    rows = read_results(out)
    suppressed = [r for r in rows if r["status"] == "suppressed"]
    assert len(suppressed) == 7
    assert all("before --restart" in r["error"] for r in suppressed)
    assert len(list(tmp_path.glob("r.csv.journal.*.bak"))) == 1


def test_a_restarted_campaign_keeps_its_carried_recipients_on_resume(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Restart, stop again, resume, restart again: still nobody receives a second request."""
    campaign, config, out, numbers = _stopped_after(tmp_path, sandbox, cli, 15, 4)
    sandbox.faults.balance = 8
    assert cli("send", campaign, "--config", config, "--out", out, "--restart").code == 3
    sandbox.faults.balance = None
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    assert cli("send", campaign, "--config", config, "--out", out, "--restart").code == 0
    assert sorted(r.to for r in sandbox.accepted()) == sorted(numbers)
    assert {r["status"] for r in read_results(out)} == {"suppressed"}


def test_restart_over_a_rehearsal_carries_nothing(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A rehearsal's journal at the same --out never holds back the real send."""
    numbers = _numbers(5)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out, "--sandbox").code == 0
    real = cli("send", campaign, "--config", config, "--out", out, "--restart")
    assert real.code == 0, real.err
    assert sorted(sandbox.counts()) == sorted(numbers)
    assert {r["status"] for r in read_results(out)} == {"sent"}


def test_unreadable_journal_stops_with_recovery_advice(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A journal SQLite cannot read: exit 3, one line naming .dump; nothing is sent."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(3)])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    (tmp_path / "r.csv.journal").write_bytes(b"this is not SQLite at all " * 200)
    run = cli("send", campaign, "--config", config, "--out", out)
    assert run.code == 3
    assert ".dump |" in run.err
    assert "do not delete it" in run.err
    assert "Traceback" not in run.err
    assert sandbox.received == []


def test_journal_without_tables_names_the_missing_wal(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A journal whose tables were in a deleted -wal file is refused, not restarted silently."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(3)])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    with sqlite3.connect(tmp_path / "r.csv.journal") as db:
        db.execute("PRAGMA user_version = 1")  # a valid, non-empty database with no tables
    db.close()
    run = cli("send", campaign, "--config", config, "--out", out)
    assert run.code == 3
    assert "-wal" in run.err
    assert "every row would be sent again" in run.err
    assert sandbox.received == []


def test_empty_journal_file_is_a_fresh_start(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A 0-byte journal (a disk that was full when it was created) holds nothing: the run sends."""
    numbers = _numbers(3)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    (tmp_path / "r.csv.journal").write_bytes(b"")
    run = cli("send", campaign, "--config", config, "--out", out)
    assert run.code == 0, run.err
    assert sorted(sandbox.counts()) == sorted(numbers)


def test_empty_journal_beside_results_is_refused(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """An emptied journal of a campaign that has results (a recovery gone wrong) is refused."""
    numbers = _numbers(3)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    for leftover in tmp_path.glob("r.csv.journal*"):
        leftover.unlink()
    (tmp_path / "r.csv.journal").write_bytes(b"")
    run = cli("send", campaign, "--config", config, "--out", out)
    assert run.code == 3
    assert "holds no bulk-sender tables" in run.err
    assert len(sandbox.received) == 3
