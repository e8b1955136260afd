"""Planning in a second process: the same plan as inline, its errors, its signals, its end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest
import uvloop

from bulk_sender.config import CampaignSettings, SendingSettings
from bulk_sender.errors import InputFileError, UsageError
from bulk_sender.input import plan_process as planning
from bulk_sender.input.campaign import Campaign, LoadStats, Planned
from bulk_sender.input.plan_process import (
    PLAN_IN_PROCESS_ROWS,
    PROTOCOL,
    PlanJob,
    PlannerCrashedError,
    PlanProcess,
    _plan_in_process,
    command,
)
from bulk_sender.input.table import Table
from bulk_sender.record.journal import Journal, JournalError, journal_path
from bulk_sender.sandbox.server import Sandbox
from tests.conftest import (
    API_KEY,
    KEY_ENV,
    CliRunner,
    read_results,
    spawn,
    write_config,
    write_csv,
)

#: Columns of a results file that differ from one run to the next by nature.
_PER_RUN = {"message_id", "finished_at"}


def _mixed_campaign(path: Path) -> Path:
    """Every kind of verdict: sent, bad number, empty cell, duplicate, two numbers, bad body."""
    rows = [
        ["+919876500000", "Asha", "r0", ""],
        ["12", "Ravi", "r1", ""],
        ["", "Meena", "r2", ""],
        ["+91 98765 00000", "Asha again", "r3", ""],
        ["+919876500004, +919876500005", "Two", "r4", ""],
        ["+919876500006", "", "r5", ""],  # {first_name} is empty
        ["+919876500007", "Own", "x" * 300, "Own text for {first_name}"],
        ["+919876500008", "Broken", "r7", "Broken {placeholder"],
        ["9876500009", "Local", "r8", ""],
    ]
    return write_csv(path, ["phone", "first_name", "ref", "body_text"], rows)


def _send(
    cli: CliRunner, tmp_path: Path, sandbox: Sandbox, planner: str, name: str
) -> tuple[int, list[dict[str, str]], dict[str, object]]:
    campaign = _mixed_campaign(tmp_path / "c.csv")
    config = write_config(
        tmp_path / f"{name}.toml",
        sandbox.url,
        campaign={"body_text": "Hi {first_name}, our catalog is here."},
        sending={"planner": planner},
        audience={"ledger": f"{name}.ledger.db"},  # each run its own: the same file, sent twice
    )
    out, summary = tmp_path / f"{name}.csv", tmp_path / f"{name}.json"
    run = cli("send", campaign, "--config", config, "--out", out, "--summary-json", summary)
    doc = orjson.loads(summary.read_bytes())
    rows = [{k: v for k, v in r.items() if k not in _PER_RUN} for r in read_results(out)]
    return run.code, rows, doc


def test_process_plan_gives_the_same_results_as_inline(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Every verdict, reason, ref and count is the same whichever process plans the rows."""
    code_a, inline, doc_a = _send(cli, tmp_path, sandbox, "inline", "inline")
    code_b, process, doc_b = _send(cli, tmp_path, sandbox, "process", "process")
    assert code_a == code_b == 1
    assert process == inline
    assert {r["status"] for r in inline} == {"sent", "invalid", "duplicate"}
    for key in ("rows", "messages", "statuses", "warnings", "refs_truncated", "invalid_reasons"):
        assert doc_b[key] == doc_a[key], key
    assert doc_b["refs_truncated"] == 1
    sent = sum(r["status"] == "sent" for r in inline)
    assert len(sandbox.counts()) == sent == 5
    assert set(sandbox.counts().values()) == {2}  # each recipient once per run


def test_process_plan_resumes_with_the_journal_seed(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A resume planned in the child skips done rows and still knows the numbers sent before.

    The first run is killed, so that it never planned row 101 (a stopped run would have recorded
    its duplicate verdict on the way out): only the journal's seed can tell the child that row
    101's number was sent as row 6.
    """
    numbers = [f"+9198765{i:05d}" for i in range(120)]
    numbers[100] = numbers[5]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    slow = write_config(
        tmp_path / "slow.toml",
        sandbox.url,
        sending={"rate_per_second": 60, "concurrency": 4, "planner": "inline"},
    )
    out = tmp_path / "r.csv"
    first = spawn("send", campaign, "--config", slow, "--out", out)
    deadline = time.monotonic() + 60
    while len(sandbox.accepted()) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.kill()
    first.communicate(timeout=60)
    assert _journal_status(out, 101) is None  # never planned
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"planner": "process"})
    second = cli("send", campaign, "--config", config, "--out", out)
    rows = read_results(out)
    unknown = [r for r in rows if r["status"] == "unknown"]  # in flight at the kill
    assert second.code == (1 if unknown else 0), second.out
    accepted = Counter(r.to for r in sandbox.accepted())
    assert max(accepted.values()) == 1
    assert rows[5]["status"] == "sent"
    assert rows[100]["status"] == "duplicate"
    assert rows[100]["error"] == "same number as row 6"
    assert {r["status"] for r in rows} <= {"sent", "duplicate", "unknown"}


def _journal_status(results: Path, row: int) -> str | None:
    with contextlib.closing(sqlite3.connect(journal_path(results))) as db:
        found = db.execute("SELECT status FROM messages WHERE row = ?", (row,)).fetchone()
    return None if found is None else str(found[0])


async def _collect(planner: PlanProcess, stats: LoadStats) -> list[Planned]:
    got: list[Planned] = []
    async for batch in planner.plan(stats):
        got.extend(batch)
    return got


def _job(tmp_path: Path, campaign: Campaign) -> PlanJob:
    journal = tmp_path / "r.csv.journal"
    Journal.open(journal, identity=campaign.identity(), destination="t").close()
    return PlanJob(table=campaign.table, settings=campaign.settings, journal=journal)


def _campaign(path: Path, lines: Sequence[str]) -> Campaign:
    from bulk_sender.input.table import open_table

    path.write_text("\n".join(["to,ref", *lines]) + "\n", encoding="utf-8")
    return Campaign(open_table(path), CampaignSettings(body_text="Hello", default_region="IN"))


def test_file_breaking_part_way_fails_as_it_does_inline(tmp_path: Path) -> None:
    """A row that breaks the file (not scanned: a resume trusts the digest) raises the same
    InputFileError, after the rows before it were handed over."""
    good = [f"+9198765{i:05d},r{i}" for i in range(2500)]
    lines = [*good, "+919876599999,too,many,cells", "+919876599998,r"]
    inline = _campaign(tmp_path / "c.csv", lines)
    before: list[Planned] = []
    with pytest.raises(InputFileError) as expected:
        before.extend(inline.plan(chunk_size=2000))

    child = _campaign(tmp_path / "c.csv", lines)
    stats = LoadStats()
    got: list[Planned] = []

    async def run() -> None:
        with PlanProcess() as planner:
            planner.give(_job(tmp_path, child))
            async for batch in planner.plan(stats):
                got.extend(batch)

    with pytest.raises(InputFileError) as caught:
        asyncio.run(run())
    assert str(caught.value) == str(expected.value)
    assert caught.value.line == expected.value.line == 2502
    assert got == before
    assert len(got) == stats.messages == inline.stats.messages == 2000  # the first chunk


def test_plan_and_stats_match_inline(tmp_path: Path) -> None:
    """The child's planned messages and load statistics are the inline ones, in order."""
    lines = [f"+9198765{i:05d},r{i}" for i in range(3000)] + ["bogus,x", "+919876500001,dup"]
    inline = _campaign(tmp_path / "c.csv", lines)
    expected = list(inline.plan())
    child = _campaign(tmp_path / "c.csv", lines)
    stats = LoadStats()

    async def run() -> list[Planned]:
        with PlanProcess() as planner:
            planner.give(_job(tmp_path, child))
            return await _collect(planner, stats)

    assert asyncio.run(run()) == expected
    assert stats == inline.stats


def test_a_bug_in_the_child_comes_back_with_its_traceback(tmp_path: Path) -> None:
    """An exception in the child ends the plan with PlannerCrashedError and its traceback."""
    campaign = _campaign(tmp_path / "c.csv", ["+919876500000,a"])
    job = PlanJob(table=campaign.table, settings=None, journal=tmp_path / "j")  # type: ignore[arg-type]

    async def run() -> None:
        with PlanProcess() as planner:
            planner.give(job)
            await _collect(planner, LoadStats())

    with pytest.raises(PlannerCrashedError) as caught:
        asyncio.run(run())
    assert "Traceback" in str(caught.value)
    assert "AttributeError" in str(caught.value)


def test_a_child_that_dies_is_not_taken_for_the_end(tmp_path: Path) -> None:
    """A child that exits without its end frame (killed, out of memory) is an error, not an end."""
    campaign = _campaign(tmp_path / "c.csv", ["+919876500000,a"])
    die = [sys.executable, "-c", "import sys; sys.stdin.buffer.read(); sys.exit(3)"]

    async def run() -> None:
        with PlanProcess(die) as planner:
            planner.give(_job(tmp_path, campaign))
            await _collect(planner, LoadStats())

    with pytest.raises(PlannerCrashedError, match="exit code 3"):
        asyncio.run(run())


def _frame(stream: BinaryIO) -> tuple[object, ...]:
    (size,) = struct.unpack("!I", stream.read(4))
    frame: tuple[object, ...] = pickle.loads(stream.read(size))
    return frame


def test_child_exits_when_its_reader_goes(tmp_path: Path) -> None:
    """The child stops at its next write once the parent stops reading (or dies)."""
    campaign = _campaign(tmp_path / "c.csv", [f"+9197{i:08d},r" for i in range(50_000)])
    mine, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [*command(), str(theirs.fileno())], stdin=subprocess.PIPE, pass_fds=(theirs.fileno(),)
    )
    theirs.close()
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps(_job(tmp_path, campaign)))
    proc.stdin.close()
    with mine, mine.makefile("rb") as stream:
        assert _frame(stream) == ("hello", PROTOCOL)
        assert _frame(stream)[0] == "batch"
    assert proc.wait(timeout=60) == 0


def test_a_seed_that_cannot_be_read_is_a_journal_error(tmp_path: Path) -> None:
    """The child's dedupe seed read failing gives the parent a JournalError (exit 3), as inline."""
    campaign = _campaign(tmp_path / "c.csv", ["+919876500000,a"])
    (tmp_path / "broken.journal").write_bytes(b"not a database at all" * 100)
    job = PlanJob(
        table=campaign.table, settings=campaign.settings, journal=tmp_path / "broken.journal"
    )

    async def run() -> None:
        with PlanProcess() as planner:
            planner.give(job)
            await _collect(planner, LoadStats())

    with pytest.raises(JournalError, match="cannot read the journal"):
        asyncio.run(run())


def _descriptors() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_working_directory_cannot_reach_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``csv.py`` that prints and exits, in the directory the run starts from, is not imported
    by the child (``-P``); and on uvloop the stream leaves no descriptor behind."""
    lines = [f"+9198765{i:05d},r{i}" for i in range(3000)]
    campaign = _campaign(tmp_path / "c.csv", lines)
    expected = list(_campaign(tmp_path / "c.csv", lines).plan())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "csv.py").write_text("print('hello from csv.py')\nraise SystemExit(0)\n")
    monkeypatch.chdir(cwd)

    async def run() -> list[Planned]:
        with PlanProcess() as planner:
            planner.give(_job(tmp_path, campaign))
            return await _collect(planner, LoadStats())

    descriptors = _descriptors()
    assert uvloop.run(run()) == expected
    assert _descriptors() == descriptors


def test_child_is_out_of_the_terminals_reach(tmp_path: Path) -> None:
    """The child has its own session: Ctrl-C's SIGINT to the group reaches only the parent."""
    with PlanProcess() as planner:
        assert os.getsid(planner.pid) != os.getsid(0)
        assert os.getpgid(planner.pid) != os.getpgid(0)


def _slow_large_send(tmp_path: Path, sandbox: Sandbox) -> tuple[Path, Path, Path]:
    """A campaign, config and results path for a slow send planned in a process. More rows than
    the socket and the reader's buffer hold, so the child is still planning (blocked on its
    socket) when a signal comes."""
    numbers = [f"+919{i:09d}" for i in range(20_000)]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(
        tmp_path / "config.toml",
        sandbox.url,
        sending={"rate_per_second": 60, "concurrency": 4, "planner": "process"},
    )
    return campaign, config, tmp_path / "r.csv"


def _wait_for_requests(sandbox: Sandbox, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(sandbox.received) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def _assert_stopped_whole(
    proc: subprocess.Popen[str], signame: str, code: int, out: Path, sandbox: Sandbox
) -> None:
    """A graceful stop: its exit code, every row in the results, nobody reached twice."""
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"Stopped by {signame}" in stdout
    rows = read_results(out)
    assert len(rows) == 20_000
    assert {r["status"] for r in rows} <= {"sent", "not_sent"}
    assert max(Counter(r.to for r in sandbox.accepted()).values()) == 1


def test_ctrl_c_to_the_process_group_stops_gracefully(tmp_path: Path, sandbox: Sandbox) -> None:
    """SIGINT to the whole group, as a terminal's Ctrl-C sends it: a graceful stop (exit 130)
    with every row recorded, not a planner killed half-way (which would exit 70)."""
    campaign, config, out = _slow_large_send(tmp_path, sandbox)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulk_sender", "send", str(campaign), "--config", str(config),
         "--out", str(out)],
        env={**os.environ, KEY_ENV: API_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a shell gives a foreground job
    )  # fmt: skip
    _wait_for_requests(sandbox, 20)
    os.killpg(proc.pid, signal.SIGINT)
    _assert_stopped_whole(proc, "SIGINT", 130, out, sandbox)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_sigterm_to_every_process_of_the_job_stops_gracefully(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """SIGTERM to the sender and its planning process at once (systemd's stop, ``kill`` of
    both): a graceful stop (exit 143) with every row recorded; the child ignores it."""
    campaign, config, out = _slow_large_send(tmp_path, sandbox)
    proc = spawn("send", campaign, "--config", config, "--out", out)
    _wait_for_requests(sandbox, 20)
    children = _children(proc.pid)
    assert len(children) == 1
    for pid in (*children, proc.pid):
        os.kill(pid, signal.SIGTERM)
    _assert_stopped_whole(proc, "SIGTERM", 143, out, sandbox)


@pytest.mark.parametrize(
    ("planner", "rows", "expected"),
    [
        ("auto", PLAN_IN_PROCESS_ROWS - 1, False),
        ("inline", PLAN_IN_PROCESS_ROWS * 10, False),
        ("process", 1, True),
    ],
)
def test_when_a_planning_process_is_used(planner: str, rows: int, expected: bool) -> None:
    """Small campaigns plan inline unless told otherwise; the setting always wins."""
    sending = SendingSettings(planner=planner)  # type: ignore[arg-type]
    assert _plan_in_process(sending, rows) is expected


def test_large_campaign_on_two_cores_plans_in_a_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``auto`` plans a large campaign in a process only with a second core to run it on."""
    monkeypatch.setattr(planning, "_CPU_MAX", tmp_path / "no-cgroup-quota")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert _plan_in_process(SendingSettings(), PLAN_IN_PROCESS_ROWS) is True
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert _plan_in_process(SendingSettings(), PLAN_IN_PROCESS_ROWS) is False


def test_a_cpu_quota_of_one_core_plans_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container limited to one core (cgroup v2 ``cpu.max``) plans inline under ``auto``."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(planning, "_CPU_MAX", cpu_max)
    cpu_max.write_text("100000 100000\n")
    assert _plan_in_process(SendingSettings(), PLAN_IN_PROCESS_ROWS) is False
    cpu_max.write_text("max 100000\n")
    assert _plan_in_process(SendingSettings(), PLAN_IN_PROCESS_ROWS) is True


def test_a_planner_that_cannot_start_falls_back_inline_only_under_auto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``auto`` plans inline (with a warning) if the child cannot start; ``process`` refuses."""

    def cannot_start() -> PlanProcess:
        raise OSError("no such interpreter")

    monkeypatch.setattr(planning, "PlanProcess", cannot_start)
    monkeypatch.setattr(planning, "_plan_in_process", lambda sending, rows: True)
    assert planning.start_planner(SendingSettings(), 1) is None
    with pytest.raises(UsageError, match='planner = "process": cannot start'):
        planning.start_planner(SendingSettings(planner="process"), 1)


@pytest.mark.parametrize("planner", ["inline", "process"])
def test_a_dry_run_planned_without_a_scan_reports_a_broken_file_as_the_scan_does(
    tmp_path: Path, cli: CliRunner, planner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run in a planning process starts planning without scanning the file first; a stray
    quote that swallows lines into the phone column is still one line naming the line it opened
    on (exit 2), as the scan says it inline, and no verdicts file is left."""
    if planner == "process":

        def no_scan(*args: object, **kwargs: object) -> int:
            raise AssertionError("the dry run scanned the file before planning it")

        monkeypatch.setattr(Table, "scan", no_scan)
    campaign = tmp_path / "c.csv"
    good = "".join(f"+9198765{i:05d},r{i}\n" for i in range(2500))
    campaign.write_text(f'to,ref\n{good}"+919812345678,x\n+919811122233,y\n+919822233344",z\n')
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:9",
                          sending={"planner": planner})  # fmt: skip
    verdicts = tmp_path / "verdicts.csv"
    run = cli("send", campaign, "--config", config, "--dry-run", "--out", verdicts)
    assert run.code == 2, run.err
    assert f"{campaign}:2502: a quote opened on line 2502 swallows the following lines" in run.err
    assert len(run.err.strip().splitlines()) == 1
    assert not verdicts.exists()
