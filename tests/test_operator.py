"""Operator experience: summaries, signals, non-TTY output, and the key never leaking."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import orjson

from bulk_sender.sandbox.server import Behaviour, Sandbox
from tests.conftest import API_KEY, CliRunner, read_results, spawn, write_config, write_csv

SUMMARY_FIELDS = {
    "version", "mode", "campaign", "outcome", "stop", "exit_code", "rows", "messages",
    "statuses", "codes", "warnings", "refs_truncated", "this_run", "duration_seconds",
    "mean_rate", "latency_ms", "rate", "in_flight", "results", "failed", "failed_rows",
    "resume_command", "retry_command", "invalid_reasons", "example_request", "audience",
}  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _mixed(tmp_path: Path, sandbox: Sandbox) -> tuple[Path, Path]:
    sandbox.faults.scripts["+919876500001"] = [Behaviour.WA400]
    sandbox.faults.scripts["+919876500002"] = [Behaviour.DROP]
    campaign = write_csv(
        tmp_path / "c.csv",
        ["to", "ref"],
        [
            ["+919876500000", "a"],
            ["+919876500001", "b"],
            ["+919876500002", "c"],
            ["bogus", "d"],
            ["+919876500000", "e"],
            ["+919876500005, +919876500006", "f"],
        ],
    )
    return campaign, write_config(tmp_path / "config.toml", sandbox.url)


def test_summary_json_adds_up_and_has_the_documented_fields(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--summary-json has every documented field and its status counts add up to the messages."""
    campaign, config = _mixed(tmp_path, sandbox)
    summary = tmp_path / "summary.json"
    run = cli("send", campaign, "--config", config, "--summary-json", summary)
    assert run.code == 1
    doc = orjson.loads(summary.read_bytes())
    assert set(doc) == SUMMARY_FIELDS
    assert doc["rows"] == 6
    assert doc["messages"] == 7
    assert sum(doc["statuses"].values()) == doc["messages"]
    assert doc["statuses"] == {
        "sent": 3, "failed": 1, "invalid": 1, "duplicate": 1, "suppressed": 0, "unknown": 1,
        "not_sent": 0,
    }  # fmt: skip
    assert doc["codes"]["WA400"] == 1
    assert doc["exit_code"] == 1
    assert doc["outcome"] == "finished"
    assert doc["this_run"]["requests"] == 5
    assert set(doc["latency_ms"]) == {"p50", "p95", "p99"}
    assert doc["latency_ms"]["p50"] is not None
    assert doc["retry_command"].startswith("bulk-sender send ")
    assert len(read_results(tmp_path / "c.results.csv")) == 7


def test_text_summary_lists_counts_and_paths(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """The printed summary shows the counts by status, the codes, latency and the file paths."""
    campaign, config = _mixed(tmp_path, sandbox)
    run = cli("send", campaign, "--config", config)
    assert "sent 3" in run.out and "failed 1" in run.out and "unknown 1" in run.out
    assert "WA400 x1" in run.out
    assert "p95" in run.out
    assert "c.results.csv" in run.out and "c.results.failed.csv" in run.out
    assert "to retry the failed rows: bulk-sender send" in run.out


def test_non_tty_output_has_no_control_characters(tmp_path: Path, sandbox: Sandbox) -> None:
    """Run as a job (stdout not a TTY), the output has no control characters and no progress bar."""
    campaign, config = _mixed(tmp_path, sandbox)
    proc = spawn("send", campaign, "--config", config)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert not _CONTROL.search(out), out
    assert not _CONTROL.search(err), err
    assert "━" not in err


def test_json_logs_are_one_object_per_line(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--log-format json writes one JSON object per stderr line, each with a stable event name."""
    campaign, config = _mixed(tmp_path, sandbox)
    run = cli("send", campaign, "--config", config, "--log-format", "json", "-v")
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert lines
    events = [orjson.loads(line) for line in lines]
    assert all(e["event"].startswith("bulk_sender.") for e in events)


def test_api_key_never_appears_anywhere(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """With -v, the key is absent from stdout, stderr and every file the run wrote."""
    campaign, config = _mixed(tmp_path, sandbox)
    summary = tmp_path / "summary.json"
    run = cli("send", campaign, "--config", config, "-vv", "--summary-json", summary)
    assert API_KEY not in run.out
    assert API_KEY not in run.err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


def test_sigterm_stops_gracefully_and_resumes(tmp_path: Path, sandbox: Sandbox) -> None:
    """SIGTERM mid-run: exit 143, whole results, and a resume sends the rest with no duplicates."""
    numbers = [f"+9198765{i:05d}" for i in range(300)]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(
        tmp_path / "config.toml", sandbox.url, sending={"rate_per_second": 60, "concurrency": 4}
    )
    out = tmp_path / "r.csv"
    proc = spawn("send", campaign, "--config", config, "--out", out)
    deadline = time.monotonic() + 60
    while len(sandbox.received) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Stopped by SIGTERM" in stdout
    rows = read_results(out)
    assert len(rows) == 300
    assert {r["status"] for r in rows} <= {"sent", "not_sent"}
    assert (tmp_path / "r.failed.csv").exists()
    resumed = spawn("send", campaign, "--config", config, "--out", out)
    resumed.communicate(timeout=60)
    assert resumed.returncode == 0
    assert max(sandbox.counts().values()) == 1
    assert len(sandbox.counts()) == 300
    assert {r["status"] for r in read_results(out)} == {"sent"}


def test_closed_stdout_is_not_a_traceback(tmp_path: Path, sandbox: Sandbox) -> None:
    """Piping the summary into a reader that quits early (`| head -1`) gives no traceback."""
    campaign, config = _mixed(tmp_path, sandbox)
    proc = spawn("send", campaign, "--config", config)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the summary is printed
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert proc.returncode == 1
    assert (tmp_path / "c.results.csv").exists()


def test_printed_commands_of_python_m_paste_as_they_are(tmp_path: Path, sandbox: Sandbox) -> None:
    """Run as ``python -m bulk_sender``, the retry command starts with those three words."""
    campaign, config = _mixed(tmp_path, sandbox)
    summary = tmp_path / "s.json"
    proc = spawn("send", campaign, "--config", config, "--summary-json", summary)
    proc.communicate(timeout=60)
    retry = orjson.loads(summary.read_bytes())["retry_command"]
    assert retry.startswith("python -m bulk_sender send "), retry
