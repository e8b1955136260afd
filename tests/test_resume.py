"""Crash safety: kills, resumes, refusals, locks, and the failed-row export, over real HTTP."""

from __future__ import annotations

import contextlib
import csv
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from bulk_sender.sandbox.server import Behaviour, Sandbox
from tests.conftest import CliRunner, read_results, spawn, write_config, write_csv


def _numbers(n: int) -> list[str]:
    return [f"+9198765{i:05d}" for i in range(n)]


def _wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the time limit")
        time.sleep(0.01)


def _journal_status(path: Path, row: int) -> str | None:
    """The journal's status for ``row`` as another process sees it (None before it exists)."""
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        try:
            found = db.execute("SELECT status FROM messages WHERE row = ?", (row,)).fetchone()
        except sqlite3.OperationalError:  # the schema is being created
            return None
    return None if found is None else str(found[0])


def _progressed(sandbox: Sandbox, proc: subprocess.Popen[str], count: int) -> Callable[[], bool]:
    return lambda: len(sandbox.received) >= count or proc.poll() is not None


@pytest.mark.slow
def test_sigkill_at_random_moments_never_sends_twice(tmp_path: Path, sandbox: Sandbox) -> None:
    """Killed with SIGKILL several times and resumed: at most one request per recipient, ever."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    numbers = _numbers(400)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(
        tmp_path / "config.toml", sandbox.url, sending={"rate_per_second": 150, "concurrency": 8}
    )
    sandbox.faults.latency = 0.02
    out = tmp_path / "results.csv"
    args = ("send", campaign, "--config", config, "--out", out, "-q")
    kills = 0
    for _ in range(4):
        before = len(sandbox.received)
        proc = spawn(*args)
        _wait_for(_progressed(sandbox, proc, before + 10))
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
    final = spawn(*args)
    _, stderr = final.communicate(timeout=120)
    assert final.returncode in (0, 1), f"seed {seed}: {stderr}"
    counts = sandbox.counts()
    assert max(counts.values()) == 1, f"seed {seed}: a recipient got two requests"
    rows = read_results(out)
    assert [int(r["row"]) for r in rows] == list(range(1, 401)), f"seed {seed}"
    statuses = [r["status"] for r in rows]
    assert set(statuses) <= {"sent", "unknown"}, f"seed {seed}"
    assert statuses.count("unknown") <= 8 * kills, f"seed {seed}"
    sent = {r["to"]: r["message_id"] for r in rows if r["status"] == "sent"}
    accepted = {r.to: r.message_id for r in sandbox.accepted()}
    assert all(accepted[to] == mid for to, mid in sent.items()), f"seed {seed}"
    # Every recipient without a request is one that never got one: it must not be 'unknown'.
    for r in rows:
        if r["status"] == "unknown":
            assert r["code"] == "INTERRUPTED"


def test_resume_after_account_stop_sends_exactly_the_rest(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """After a low-balance stop and a top-up, the same command sends exactly the remaining rows."""
    numbers = _numbers(120)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"concurrency": 4})
    out = tmp_path / "r.csv"
    sandbox.faults.balance = 40
    first = cli("send", campaign, "--config", config, "--out", out)
    assert first.code == 3
    sandbox.faults.balance = None
    second = cli("send", campaign, "--config", config, "--out", out)
    assert second.code == 0, second.out
    assert "already_done=40" in second.err
    accepted = [r.to for r in sandbox.accepted()]
    assert sorted(accepted) == sorted(numbers)
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["sent"] * 120


def test_rerun_of_a_finished_campaign_sends_nothing(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Running a finished campaign again sends nothing and rewrites the same results."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(5)])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    first = out.read_text()
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    assert len(sandbox.received) == 5
    assert out.read_text() == first


def test_changed_campaign_is_refused_until_restart(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A changed file is refused (exit 2); --restart keeps the old journal, sends only new rows."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(3)])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    write_csv(campaign, ["to"], [[n] for n in _numbers(4)])
    refused = cli("send", campaign, "--config", config, "--out", out)
    assert refused.code == 2
    assert "the campaign file's contents changed" in refused.err
    assert "--restart" in refused.err
    assert len(sandbox.received) == 3
    restarted = cli("send", campaign, "--config", config, "--out", out, "--restart")
    assert restarted.code == 0
    assert len(list(tmp_path.glob("r.csv.journal.*.bak"))) == 1
    assert len(sandbox.received) == 3 + 1  # the three sent before are carried over


def test_changed_body_text_is_refused(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """Changing a setting that changes the message (body text) is refused like a changed file."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(2)])
    out = tmp_path / "r.csv"
    config = write_config(tmp_path / "config.toml", sandbox.url)
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    config = write_config(tmp_path / "config.toml", sandbox.url, campaign={"body_text": "New!"})
    refused = cli("send", campaign, "--config", config, "--out", out)
    assert refused.code == 2
    assert "settings that change the message" in refused.err


def test_second_concurrent_run_is_refused(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """While one run sends to results.csv a second one exits 75 (busy) in one line, naming it."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(200)])
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"rate_per_second": 5})
    out = tmp_path / "r.csv"
    first = spawn("send", campaign, "--config", config, "--out", out, "-q")
    try:
        _wait_for(lambda: len(sandbox.received) >= 1)
        second = cli("send", campaign, "--config", config, "--out", out)
        assert second.code == 75
        assert f"process {first.pid} is already sending" in second.err
        assert len(second.err.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()


def test_lock_of_a_killed_run_is_taken_over(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A lock file left by a dead process does not block the next run, which says it took over."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "r.csv"
    (tmp_path / "r.csv.lock").write_text(f"{dead.pid}\n")
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(2)])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    run = cli("send", campaign, "--config", config, "--out", out)
    assert run.code == 0
    assert f"previous_pid={dead.pid}" in run.err


def test_unknown_rows_are_resent_only_on_request(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """An unknown row is not sent again by a plain re-run, only with --resend-unknown."""
    a, b = _numbers(2)
    sandbox.faults.scripts[a] = [Behaviour.DROP]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[a], [b]])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 1
    assert cli("send", campaign, "--config", config, "--out", out).code == 1
    assert sandbox.count(a) == 1
    run = cli("send", campaign, "--config", config, "--out", out, "--resend-unknown")
    assert run.code == 0
    assert sandbox.count(a) == 2
    assert [r["status"] for r in read_results(out)] == ["sent", "sent"]


def test_failed_export_round_trips(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """The failed export keeps the input's header and cells plus `error`, and is itself sendable."""
    numbers = _numbers(4)
    sandbox.faults.scripts[numbers[1]] = [Behaviour.WA400]
    header = ["Mobile", "first_name", "ref", "notes"]
    rows = [
        [numbers[0], "Asha", "r1", 'vip; "gold"'],
        [numbers[1], "Ravi", "r2", "line one\nline two"],
        ["12", "Meena", "r3", ""],
        [numbers[3], "Arjun", "r4", "x"],
    ]
    campaign = write_csv(tmp_path / "c.csv", header, rows)
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "results.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 1
    failed = tmp_path / "results.failed.csv"
    with failed.open(newline="", encoding="utf-8") as handle:
        exported = list(csv.reader(handle))
    assert exported[0] == [*header, "error"]
    assert [line[:-1] for line in exported[1:]] == [rows[1], rows[2]]
    assert exported[1][-1].startswith("failed: WA400")
    assert exported[2][-1].startswith("invalid: ")
    retry = cli("send", failed, "--config", config, "--out", tmp_path / "retry1.csv")
    assert retry.code == 1
    again = read_results(tmp_path / "retry1.csv")
    assert [(r["to"], r["status"]) for r in again] == [(numbers[1], "sent"), ("12", "invalid")]
    assert sandbox.count(numbers[1]) == 2
    assert sandbox.count(numbers[0]) == 1
    with (tmp_path / "retry1.failed.csv").open(newline="", encoding="utf-8") as handle:
        second_export = list(csv.reader(handle))
    assert second_export[0] == [*header, "error"]


def test_kill_while_waiting_to_retry_resends_on_resume(tmp_path: Path, sandbox: Sandbox) -> None:
    """A row killed while waiting out a Retry-After was not acted on: the resume sends it."""
    a, b = _numbers(2)
    sandbox.faults.retry_after = "30"
    sandbox.faults.scripts[a] = [Behaviour.THROTTLE]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[a], [b]])
    # One worker: b waits behind a's retry, so the kill finds nothing else in flight.
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"concurrency": 1})
    out = tmp_path / "r.csv"
    proc = spawn("send", campaign, "--config", config, "--out", out, "-q")
    _wait_for(lambda: _journal_status(tmp_path / "r.csv.journal", 1) == "not_sent")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    resumed = spawn("send", campaign, "--config", config, "--out", out, "-q")
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert sandbox.count(a) == 2
    assert sandbox.count(b) == 1
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["sent", "sent"]
    assert rows[0]["attempts"] == "2"


def _in_flight(path: Path) -> int | None:
    """Rows the journal has in flight, as another process sees it (None before it exists)."""
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        try:
            (count,) = db.execute(
                "SELECT count(*) FROM messages WHERE status = 'in_flight'"
            ).fetchone()
        except sqlite3.OperationalError:  # the schema is being created
            return None
    return int(count)


def _start_a_long_hold(tmp_path: Path, sandbox: Sandbox) -> tuple[subprocess.Popen[str], Path]:
    """Start a run whose row 60 is answered 429 with Retry-After: 60 (then 202), and return
    once the run is in that hold: row 60 waits not_sent, and no row is in flight.

    At 1,000/s with 16 workers, several rows are between their in_flight commit and their
    request when the 429 arrives; they must not wait out the hold in flight.
    """
    numbers = _numbers(200)
    sandbox.faults.retry_after = "60"
    sandbox.faults.scripts[numbers[59]] = [Behaviour.THROTTLE, Behaviour.OK]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(
        tmp_path / "config.toml", sandbox.url, sending={"rate_per_second": 1000, "concurrency": 16}
    )
    out = tmp_path / "r.csv"
    proc = spawn("send", campaign, "--config", config, "--out", out, "-q")
    journal = tmp_path / "r.csv.journal"
    # Well under the 60 s hold: a run that keeps rows in flight through it fails here.
    _wait_for(
        lambda: _journal_status(journal, 60) == "not_sent" and _in_flight(journal) == 0,
        timeout=20,
    )
    return proc, out


def test_sigterm_during_a_retry_after_hold_stops_at_once(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """SIGTERM during a 60 s Retry-After hold: the run exits at once (143), no request reaches
    the server after the signal, the rows left are not_sent, and a resume sends each once."""
    proc, out = _start_a_long_hold(tmp_path, sandbox)
    try:
        received, signalled = len(sandbox.received), time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert time.monotonic() - signalled < 20, "the stop waited for the hold"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    assert len(sandbox.received) == received
    assert all(r.at < signalled for r in sandbox.received)
    rows = read_results(out)
    assert {r["status"] for r in rows} == {"sent", "not_sent"}
    assert (rows[59]["status"], rows[59]["http_status"], rows[59]["attempts"]) == (
        "not_sent",
        "429",
        "1",
    )
    sent_before = {r["to"] for r in rows if r["status"] == "sent"}
    assert sent_before == {r.to for r in sandbox.accepted()}
    sandbox.faults.retry_after = "0"
    config = tmp_path / "config.toml"
    resumed = cli("send", tmp_path / "c.csv", "--config", config, "--out", out)
    assert resumed.code == 0, resumed.out
    assert [r["status"] for r in read_results(out)] == ["sent"] * 200
    counts = sandbox.counts()
    assert counts.pop(_numbers(200)[59]) == 2  # the 429, then the 202
    assert set(counts.values()) == {1}


def test_sigkill_during_a_retry_after_hold_leaves_no_false_unknown(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """SIGKILL during a 60 s Retry-After hold: every row the next run finds unknown (it was in
    flight) is one the server received; the rows held back are sent by the resume, once."""
    proc, out = _start_a_long_hold(tmp_path, sandbox)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    received = {r.to for r in sandbox.received}
    sandbox.faults.retry_after = "0"
    resumed = cli("send", tmp_path / "c.csv", "--config", tmp_path / "config.toml", "--out", out)
    rows = read_results(out)
    unknown = {r["to"] for r in rows if r["status"] == "unknown"}
    assert unknown <= received
    assert unknown == set()  # in a hold nothing is in flight
    assert resumed.code == 0, resumed.out
    assert [r["status"] for r in rows] == ["sent"] * 200
    counts = sandbox.counts()
    assert counts.pop(_numbers(200)[59]) == 2
    assert set(counts.values()) == {1}


def test_clean_exit_leaves_no_pid_in_the_lock(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """After a clean run the next run finds no PID, so it does not report a taken-over lock."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(2)])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    assert (tmp_path / "r.csv.lock").read_text() == ""
    again = cli("send", campaign, "--config", config, "--out", out)
    assert "lock_taken_over" not in again.err


def test_stopped_run_offers_only_the_resume(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """After a stop the summary offers the resume, not the export, so not_sent rows go once."""
    sandbox.faults.balance = 2
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(10)])
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"concurrency": 1})
    summary = tmp_path / "s.json"
    run = cli("send", campaign, "--config", config, "--summary-json", summary)
    assert run.code == 3
    assert "to resume: bulk-sender send" in run.out
    assert "never both" in run.out
    assert "to retry the failed rows" not in run.out
    doc = orjson.loads(summary.read_bytes())
    assert doc["retry_command"] is None
    assert doc["resume_command"].startswith("bulk-sender send ")


def test_summary_json_is_replaced_when_the_run_cannot_start(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """An exit-2 run overwrites an old --summary-json, so a stale success is never read."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(1)])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    summary = tmp_path / "s.json"
    assert cli("send", campaign, "--config", config, "--summary-json", summary).code == 0
    write_csv(campaign, ["to"], [[n] for n in _numbers(2)])
    assert cli("send", campaign, "--config", config, "--summary-json", summary).code == 2
    doc = orjson.loads(summary.read_bytes())
    assert (doc["outcome"], doc["exit_code"]) == ("error", 2)
    assert "changed" in doc["error"]
