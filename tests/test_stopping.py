"""Stopping the command line from outside: the grace period, SIGHUP, the lock while stopping.

Real processes, real signals, the sandbox over real HTTP. Events are ordered by what can be
observed (the sandbox received a request, the lock file says "stopping", a log line was
written); a recipient scripted to HANG holds its request until the sandbox stops, so a grace
period can only run out on it. No test waits for a time to pass.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from bulk_sender.sandbox.server import Behaviour, Sandbox
from tests.conftest import CliRunner, read_results, spawn, write_config, write_csv


def _numbers(n: int) -> list[str]:
    return [f"+9198765{i:05d}" for i in range(n)]


def _wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the time limit")
        time.sleep(0.01)


def _hanging(tmp_path: Path, sandbox: Sandbox, *, grace: float) -> tuple[list[str], Path, Path]:
    """30 rows sent one at a time; the sixth recipient's request is never answered.

    ``timeout_seconds`` is 60: a run that ends before then did not wait for the request.
    """
    numbers = _numbers(30)
    sandbox.faults.scripts[numbers[5]] = [Behaviour.HANG]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(
        tmp_path / "config.toml",
        sandbox.url,
        sending={"concurrency": 1, "timeout_seconds": 60, "stop_grace_seconds": grace},
    )
    return numbers, campaign, config


def _arrived(sandbox: Sandbox, to: str) -> Callable[[], bool]:
    return lambda: any(r.to == to for r in sandbox.received)


def _lock_says(lock: Path, word: str) -> Callable[[], bool]:
    return lambda: lock.exists() and word in lock.read_text()


def test_sigterm_abandons_a_hung_request_after_the_grace(tmp_path: Path, sandbox: Sandbox) -> None:
    """SIGTERM with a request hanging at the server: exit 143 while the server still holds it,
    long before its timeout; the hung row is unknown and a resume does not send it again."""
    numbers, campaign, config = _hanging(tmp_path, sandbox, grace=0.2)
    out = tmp_path / "r.csv"
    proc = spawn("send", campaign, "--config", config, "--out", out)
    _wait_for(_arrived(sandbox, numbers[5]))
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=50)  # timeout_seconds=60 has not expired
    assert proc.returncode == 143, stderr
    assert "bulk_sender.abandoned" in stderr
    assert "Stopped by SIGTERM" in stdout
    assert sandbox.received[5].status == 0  # never answered: the sandbox still holds it
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["sent"] * 5 + ["unknown"] + ["not_sent"] * 24
    resumed = spawn("send", campaign, "--config", config, "--out", out)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 1, err
    assert sandbox.count(numbers[5]) == 1
    assert max(sandbox.counts().values()) == 1 and len(sandbox.counts()) == 30


def test_sighup_stops_like_sigterm(tmp_path: Path, sandbox: Sandbox) -> None:
    """SIGHUP (a closed terminal or SSH session) stops gracefully: exit 129, results written."""
    numbers, campaign, config = _hanging(tmp_path, sandbox, grace=0.2)
    out = tmp_path / "r.csv"
    proc = spawn("send", campaign, "--config", config, "--out", out, "-q")
    _wait_for(_arrived(sandbox, numbers[5]))
    proc.send_signal(signal.SIGHUP)
    stdout, stderr = proc.communicate(timeout=50)
    assert proc.returncode == 129, stderr
    assert "Stopped by SIGHUP" in stdout
    assert len(read_results(out)) == 30
    assert (tmp_path / "r.failed.csv").exists()


def test_summary_json_says_running_while_the_run_runs(tmp_path: Path, sandbox: Sandbox) -> None:
    """--summary-json is replaced by "running" when a run starts, so a killed run never leaves
    an earlier run's "finished, exit 0" behind; the end replaces it again."""
    numbers, campaign, config = _hanging(tmp_path, sandbox, grace=0.2)
    summary = tmp_path / "s.json"
    summary.write_text('{"outcome": "finished", "exit_code": 0}\n', encoding="utf-8")
    proc = spawn("send", campaign, "--config", config, "--summary-json", summary, "-q")
    _wait_for(_arrived(sandbox, numbers[5]))
    running = orjson.loads(summary.read_bytes())
    assert (running["outcome"], running["exit_code"], running["pid"]) == ("running", None, proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert orjson.loads(summary.read_bytes())["outcome"] == "running"  # not the old success


def test_a_symlinked_lock_file_is_refused(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """A symbolic link at the lock's name is refused in one line; the file it points at is kept."""
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me\n", encoding="utf-8")
    (tmp_path / "r.csv.lock").symlink_to(victim)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(2)])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    run = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
    assert run.code == 2
    assert run.err.strip().count("\n") == 0 and "symbolic link" in run.err
    assert victim.read_text(encoding="utf-8") == "do not truncate me\n"
    assert sandbox.received == []


def _stopping_first_run(
    tmp_path: Path, sandbox: Sandbox
) -> tuple[list[str], Path, Path, subprocess.Popen[str]]:
    """A run stopped by SIGTERM that stays in its (600 s) grace on a request that never ends."""
    numbers, campaign, config = _hanging(tmp_path, sandbox, grace=600)
    first = spawn("send", campaign, "--config", config, "--out", tmp_path / "r.csv", "-q")
    _wait_for(_arrived(sandbox, numbers[5]))
    first.send_signal(signal.SIGTERM)
    _wait_for(_lock_says(tmp_path / "r.csv.lock", f"{first.pid} stopping"))
    return numbers, campaign, config, first


def test_a_second_run_waits_for_a_stopping_first_run_then_resumes(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """A run that finds the lock held by a stopping run says so and waits; when the first run
    ends it takes over and resumes, and no recipient gets two messages."""
    numbers, campaign, config, first = _stopping_first_run(tmp_path, sandbox)
    second = spawn("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
    assert second.stderr is not None
    waiting = second.stderr.readline()
    assert "bulk_sender.lock_wait" in waiting and f"holder_pid={first.pid}" in waiting
    first.send_signal(signal.SIGTERM)  # a second signal: the first run ends at once
    first.communicate(timeout=60)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1, err  # the first run's hung row is unknown
    assert "bulk_sender.lock_acquired" in err
    assert [r["status"] for r in read_results(tmp_path / "r.csv")].count("sent") == 29
    assert sandbox.count(numbers[5]) == 1
    assert max(sandbox.counts().values()) == 1 and len(sandbox.counts()) == 30


def test_a_stopping_run_that_outlasts_the_wait_leaves_the_second_busy(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """If the stopping run still holds the lock when --wait-lock runs out: exit 75, one line."""
    _, campaign, config, first = _stopping_first_run(tmp_path, sandbox)
    try:
        run = cli(
            "send", campaign, "--config", config, "--out", tmp_path / "r.csv", "--wait-lock", "0"
        )
        assert run.code == 75
        last = run.err.strip().splitlines()[-1]
        assert last.startswith("bulk-sender: ") and "is stopping but still holds" in last
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=60)
