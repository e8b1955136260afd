"""Files that cannot be written, a damaged journal, a planner killed for memory: one line each,
the right exit code, what was sent kept on record, and the same command recovers."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from bulk_sender.input import plan_process
from bulk_sender.model import Record
from bulk_sender.record import atomic
from bulk_sender.record import journal as journal_module
from bulk_sender.record.journal import Journal, JournalError
from bulk_sender.sandbox.server import Sandbox
from tests.conftest import CliRunner, Run, read_results, write_config, write_csv

NUMBERS = [f"+9198765{i:05d}" for i in range(6)]


def _campaign(tmp_path: Path, sandbox: Sandbox, rows: int = len(NUMBERS)) -> tuple[Path, Path]:
    numbers = NUMBERS if rows == len(NUMBERS) else [f"+9197{i:08d}" for i in range(rows)]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    return campaign, write_config(tmp_path / "config.toml", sandbox.url)


def _one_line(run: Run, code: int, *phrases: str) -> None:
    assert run.code == code, run.err
    assert "Traceback" not in run.err
    last = run.err.strip().splitlines()[-1]
    assert last.startswith("bulk-sender: "), run.err
    assert sum(line.startswith("bulk-sender: ") for line in run.err.splitlines()) == 1
    for phrase in phrases:
        assert phrase in last, last


def _disk_full_for(monkeypatch: pytest.MonkeyPatch, *targets: Path) -> None:
    """Atomic writes of ``targets`` go to /dev/full: every write fails with ENOSPC."""
    create = atomic._create_beside

    def full(path: Path) -> tuple[int, Path]:
        if path in targets:
            return os.open("/dev/full", os.O_WRONLY), path.with_name(".never-created")
        return create(path)

    monkeypatch.setattr(atomic, "_create_beside", full)


@pytest.mark.parametrize("which", ["r.csv", "r.failed.csv"])
def test_disk_full_while_writing_results_is_exit_3_and_the_next_run_writes_them(
    tmp_path: Path,
    sandbox: Sandbox,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    """A full disk while the results (or the failed export) are written: exit 3, one line;
    the same command then writes them and sends nothing again."""
    campaign, config = _campaign(tmp_path, sandbox)
    out = tmp_path / "r.csv"
    with monkeypatch.context() as patch:
        _disk_full_for(patch, tmp_path / which)
        run = cli("send", campaign, "--config", config, "--out", out)
    _one_line(run, 3, "cannot write the", str(tmp_path / which), "No space left on device")
    assert len(sandbox.received) == len(NUMBERS)
    assert not (tmp_path / which).exists()
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    assert len(sandbox.received) == len(NUMBERS)
    assert [r["status"] for r in read_results(out)] == ["sent"] * len(NUMBERS)


def test_disk_full_while_writing_the_summary_removes_the_old_one(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A summary JSON that cannot be written: exit 3, one line, and the previous run's summary
    is gone, so no job reads it as this run's."""
    campaign, config = _campaign(tmp_path, sandbox)
    summary = tmp_path / "s.json"
    assert cli("send", campaign, "--config", config, "--summary-json", summary).code == 0
    _disk_full_for(monkeypatch, summary)
    run = cli("send", campaign, "--config", config, "--summary-json", summary)
    _one_line(run, 3, "cannot write the summary JSON", "the older summary there was removed")
    assert not summary.exists()


def test_a_summary_that_cannot_be_written_never_removes_another_file(tmp_path: Path) -> None:
    """Only a summary document is removed when its replacement fails, never another file."""
    from bulk_sender.errors import OutputWriteError
    from bulk_sender.record.summary import write_summary_json

    data = tmp_path / "data.json"
    data.write_text('{"not": "a summary"}')
    with pytest.MonkeyPatch.context() as patch:
        _disk_full_for(patch, data)
        with pytest.raises(OutputWriteError):
            write_summary_json(data, {"version": 1})
    assert data.read_text() == '{"not": "a summary"}'


def _garble_messages(path: Path) -> None:
    """Overwrite every page of the journal but its header, ``meta`` and ``carried`` tables:
    the identity still reads, the messages do not."""
    with sqlite3.connect(path) as db:
        keep = {1} | {
            page
            for name, page in db.execute("SELECT name, rootpage FROM sqlite_master")
            if name != "messages"
        }
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with path.open("r+b") as file:
        for page in set(range(1, pages + 1)) - keep:
            file.seek((page - 1) * size)
            file.write(b"\xa5" * size)


def test_a_garbled_journal_page_found_on_resume_is_one_line_exit_3(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A journal whose message pages are damaged: found while resuming, it stops with exit 3,
    one line and how to recover it; nothing is sent."""
    campaign, config = _campaign(tmp_path, sandbox, rows=600)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    sent = len(sandbox.received)
    _garble_messages(tmp_path / "r.csv.journal")
    run = cli("send", campaign, "--config", config, "--out", out)
    _one_line(run, 3, "cannot read the journal", "malformed", ".dump |", "do not delete it")
    assert len(sandbox.received) == sent


def test_a_garbled_page_found_while_reading_records_is_a_journal_error(tmp_path: Path) -> None:
    """records() meeting a damaged page raises JournalError with the recovery advice."""
    path = tmp_path / "r.csv.journal"
    identity = {"file_sha256": "x"}
    journal = Journal.open(path, identity=identity, destination="t")

    async def write() -> None:
        journal.start_writer()
        for row in range(1, 2000):
            journal.write_later(Record(row=row, to=f"+9198765{row:05d}", status="sent"))
        await journal.flush()

    asyncio.run(write())
    journal.close()  # the last connection: the write-ahead log goes into the file
    _garble_messages(path)
    journal = Journal.open(path, identity=identity, destination="t")
    with pytest.raises(JournalError, match=r"cannot read the journal .*\.dump"):
        list(journal.records())
    journal.close()


def _failing_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's creation fails after its tables exist, before its identity is stored
    (what a full disk does half-way through)."""

    def full() -> str:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(journal_module, "utc_now", full)


def test_a_journal_that_cannot_be_created_leaves_nothing_that_blocks_the_next_run(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while the journal is created: exit 3, nothing sent, no half-made journal; the
    same command then sends every row once."""
    campaign, config = _campaign(tmp_path, sandbox)
    out = tmp_path / "r.csv"
    with monkeypatch.context() as patch:
        _failing_once(patch)
        run = cli("send", campaign, "--config", config, "--out", out)
    _one_line(run, 3, "cannot create the journal", "Nothing was sent")
    assert sandbox.received == []
    assert not list(tmp_path.glob("r.csv.journal*"))
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    assert sorted(sandbox.counts().values()) == [1] * len(NUMBERS)


def test_a_restart_that_cannot_create_its_journal_puts_the_old_one_back(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--restart whose new journal cannot be created restores the old journal, so the next
    --restart still carries over what it sent: nobody gets the message twice."""
    campaign, config = _campaign(tmp_path, sandbox)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    with monkeypatch.context() as patch:
        _failing_once(patch)
        run = cli("send", campaign, "--config", config, "--out", out, "--restart")
    _one_line(run, 3, "cannot create the journal")
    assert (tmp_path / "r.csv.journal").exists()
    assert not list(tmp_path.glob("*.bak"))
    assert cli("send", campaign, "--config", config, "--out", out, "--restart").code == 0
    assert sorted(sandbox.counts().values()) == [1] * len(NUMBERS)
    assert {r["status"] for r in read_results(out)} == {"suppressed"}


def _planner_killed_after(frames: int) -> Callable[[], list[str]]:
    """The planning process's command, as one that SIGKILLs itself after ``frames`` frames
    (the out-of-memory killer's signal, at a known point)."""
    code = (
        "import os, signal, sys\n"
        "from bulk_sender.input import plan_process as p\n"
        "sent, real = [], p._send\n"
        "def send(out, frame):\n"
        "    real(out, frame)\n"
        "    sent.append(frame)\n"
        f"    if len(sent) == {frames}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "p._send = send\n"
        "sys.exit(p.main())\n"
    )
    return lambda: [sys.executable, "-P", "-c", code]


def test_a_planner_killed_for_memory_writes_the_results_and_says_so(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planning process SIGKILLed (out of memory) after its first batch: exit 3, one line
    naming the signal and the likely cause; the results show what was sent and the rest
    not_sent; the same command sends the rest, nobody twice."""
    numbers = [f"+9197{i:08d}" for i in range(200)]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"planner": "process"})
    out, summary = tmp_path / "r.csv", tmp_path / "s.json"
    with monkeypatch.context() as patch:
        patch.setattr(plan_process, "command", _planner_killed_after(2))  # hello, first batch
        run = cli("send", campaign, "--config", config, "--out", out, "--summary-json", summary)
    _one_line(run, 3, "killed by SIGKILL", "out-of-memory", "run the same command again")
    assert orjson.loads(summary.read_bytes())["exit_code"] == 3
    statuses = [r["status"] for r in read_results(out)]
    first_batch = plan_process._FIRST_BATCH
    assert statuses == ["sent"] * first_batch + ["not_sent"] * (200 - first_batch)
    assert len(sandbox.received) == first_batch
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    assert sorted(sandbox.counts().values()) == [1] * 200
