"""Every output path is checked before the first request: one clear line, exit 2, nothing sent."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bulk_sender.sandbox.server import Sandbox
from tests.conftest import KEY_ENV, CliRunner, Run, write_config, write_csv

NUMBERS = ["+919876500000", "+919876500001", "+919876500002"]


def _campaign(tmp_path: Path, sandbox: Sandbox) -> tuple[Path, Path]:
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in NUMBERS])
    return campaign, write_config(tmp_path / "config.toml", sandbox.url)


def _refused(run: Run, *phrases: str) -> None:
    """Exit 2 with one line (no traceback) holding every phrase."""
    assert run.code == 2, run.err
    assert "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith("bulk-sender: ")
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_out_in_a_missing_folder_is_refused_not_created(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--out in a folder that does not exist: one line naming the folder; nothing sent, nothing
    created (a mistyped folder would otherwise start a second record of the campaign)."""
    campaign, config = _campaign(tmp_path, sandbox)
    missing = tmp_path / "nodir"
    run = cli("send", campaign, "--config", config, "--out", missing / "r.csv")
    _refused(run, f"the folder {missing} does not exist", "mkdir -p")
    assert sandbox.received == []
    assert not missing.exists()


def test_out_pointing_at_a_folder_is_refused_before_sending(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--out naming a folder is refused before anything is sent, on every run."""
    campaign, config = _campaign(tmp_path, sandbox)
    folder = tmp_path / "out"
    folder.mkdir()
    for _ in range(2):
        _refused(cli("send", campaign, "--config", config, "--out", folder), "is a folder")
    assert sandbox.received == []
    assert list(folder.iterdir()) == []


def test_out_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--out naming a pipe (or a device such as /dev/null) is refused: the atomic rename would
    replace it with a regular file. (A pipe in the test's folder: a broken check then harms
    nothing outside it.)"""
    campaign, config = _campaign(tmp_path, sandbox)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    _refused(cli("send", campaign, "--config", config, "--out", pipe), "not a regular file")
    assert sandbox.received == []
    assert stat.S_ISFIFO(pipe.stat().st_mode)


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder no file can be created in: by permissions, or (as root) a read-only mount."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("root, and cannot mount a read-only file system here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_output_on_a_read_only_folder_is_refused(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, read_only_folder: Path
) -> None:
    """Results, failed export or summary on a read-only folder: one line before any request."""
    campaign, config = _campaign(tmp_path, sandbox)
    where = read_only_folder
    for option, path in [
        ("--out", where / "r.csv"),
        ("--failed", where / "f.csv"),
        ("--summary-json", where / "s.json"),
    ]:
        out = ["--out", tmp_path / "r.csv"] if option != "--out" else []
        run = cli("send", campaign, "--config", config, *out, option, path)
        _refused(run, f"cannot write a file in the folder {where}")
    assert sandbox.received == []


@pytest.fixture
def full_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a file system with no space left (a small tmpfs: needs root)."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small file system here (not root)")
    try:
        with contextlib.suppress(OSError), (folder / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_output_on_a_full_disk_is_refused_before_sending(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, full_folder: Path
) -> None:
    """A disk with no space left at the start: one line, nothing sent, nothing left there
    (no empty journal to stand in the way of the next run)."""
    campaign, config = _campaign(tmp_path, sandbox)
    run = cli("send", campaign, "--config", config, "--out", full_folder / "r.csv")
    _refused(run, "No space left on device")
    assert sandbox.received == []
    assert [p.name for p in full_folder.iterdir()] == ["filler"]


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "hardlink"])
def test_out_on_the_campaign_file_is_refused(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, spelling: str
) -> None:
    """--out naming the campaign itself, however spelt, is refused and the campaign kept."""
    campaign, config = _campaign(tmp_path, sandbox)
    before = campaign.read_bytes()
    out = {
        "same": str(campaign),
        "dot": f"{campaign.parent}/./{campaign.name}",  # a Path would drop the "."
        "symlink": str(tmp_path / "link.csv"),
        "hardlink": str(tmp_path / "hard.csv"),
    }[spelling]
    if spelling == "symlink":
        Path(out).symlink_to(campaign)
    if spelling == "hardlink":
        os.link(campaign, out)
    run = cli("send", campaign, "--config", config, "--out", out)
    _refused(run, "is the campaign file itself")
    assert campaign.read_bytes() == before
    assert sandbox.received == []


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--out", "r.csv", "--failed", "c.csv"], "is the campaign file itself"),
        (["--out", "r.csv", "--failed", "r.csv"], "are the same file"),
        (["--out", "r.csv", "--failed", "r.csv.journal"], "are the same file"),
        (["--out", "r.csv", "--summary-json", "r.csv"], "are the same file"),
        (["--out", "r.csv", "--summary-json", "r.failed.csv"], "are the same file"),
        (["--out", "r.csv", "--summary-json", "c.csv"], "is the campaign file itself"),
        (["--dry-run", "--out", "c.csv"], "is the campaign file itself"),
    ],
)
def test_outputs_on_each_other_or_the_campaign_are_refused(
    tmp_path: Path,
    sandbox: Sandbox,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    phrase: str,
) -> None:
    """No two outputs (the journal and lock included) and none with the campaign: refused
    before anything is sent, and no file is touched."""
    campaign, config = _campaign(tmp_path, sandbox)
    monkeypatch.chdir(tmp_path)
    before = campaign.read_bytes()
    _refused(cli("send", "c.csv", "--config", config, *args), phrase)
    assert campaign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "config.toml"]
    assert sandbox.received == []


def test_outputs_that_do_not_exist_yet_are_compared_by_real_path(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--out through a symlinked folder and --failed directly: the same file once written,
    though neither exists yet."""
    campaign, config = _campaign(tmp_path, sandbox)
    (tmp_path / "link").symlink_to(tmp_path)
    run = cli(
        "send", campaign, "--config", config,
        "--out", tmp_path / "link" / "r.csv", "--failed", tmp_path / "r.csv",
    )  # fmt: skip
    _refused(run, "are the same file")
    assert sandbox.received == []


def test_summary_json_in_a_missing_folder_is_one_line_before_sending(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--summary-json in a missing folder: one line (not three tracebacks), nothing sent."""
    campaign, config = _campaign(tmp_path, sandbox)
    summary = tmp_path / "nodir" / "s.json"
    run = cli("send", campaign, "--config", config, "--summary-json", summary)
    _refused(run, "--summary-json", "does not exist")
    assert sandbox.received == []


def test_a_run_that_cannot_start_never_writes_its_summary_over_the_campaign(
    tmp_path: Path, cli: CliRunner
) -> None:
    """A config error with --summary-json on the campaign: the error summary is not written
    there (it would replace the campaign); the summary path's own problem is reported."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in NUMBERS])
    before = campaign.read_bytes()
    run = cli("send", campaign, "--config", tmp_path / "missing.toml", "--summary-json", campaign)
    _refused(run, "--summary-json", "is the campaign file itself")
    assert campaign.read_bytes() == before


def test_summary_json_on_the_journal_leaves_the_journal_whole(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--summary-json naming the journal is refused; the journal still resumes the campaign."""
    campaign, config = _campaign(tmp_path, sandbox)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    journal = tmp_path / "r.csv.journal"
    before = journal.read_bytes()
    run = cli("send", campaign, "--config", config, "--out", out, "--summary-json", journal)
    _refused(run, "the journal")
    assert journal.read_bytes() == before
    assert cli("send", campaign, "--config", config, "--out", out).code == 0
    assert len(sandbox.received) == len(NUMBERS)


def test_summary_json_error_document_still_replaces_an_old_one(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A refused output path (not the summary's) still replaces an old summary with the error."""
    campaign, config = _campaign(tmp_path, sandbox)
    summary = tmp_path / "s.json"
    assert cli("send", campaign, "--config", config, "--summary-json", summary).code == 0
    run = cli("send", campaign, "--config", config, "--summary-json", summary, "--out", tmp_path)
    _refused(run, "is a folder")
    doc = orjson.loads(summary.read_bytes())
    assert doc["outcome"] == "error"
    assert doc["exit_code"] == 2


@contextlib.contextmanager
def _no_leftovers(folder: Path) -> Iterator[None]:
    before = set(folder.iterdir())
    yield
    assert set(folder.iterdir()) == before


def test_the_check_leaves_no_file_behind(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file that proves a folder writable is removed again: a run that passes the check
    and then stops (no API key) leaves the folder as it was."""
    campaign, config = _campaign(tmp_path, sandbox)
    monkeypatch.delenv(KEY_ENV)
    with _no_leftovers(tmp_path):
        _refused(cli("send", campaign, "--config", config), KEY_ENV)


def test_out_through_a_symbolic_link_is_refused(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--out naming a symbolic link is refused: the rename would replace the link itself."""
    campaign, config = _campaign(tmp_path, sandbox)
    real = tmp_path / "real.csv"
    real.write_text("kept\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    _refused(cli("send", campaign, "--config", config, "--out", link), "symbolic link")
    assert sandbox.received == []
    assert link.is_symlink() and real.read_text() == "kept\n"


@pytest.mark.parametrize("option", ["--out", "--failed", "--summary-json"])
def test_outputs_never_replace_a_journal_or_the_settings(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, option: str
) -> None:
    """Another campaign's journal, or the config file, named as an output: refused, untouched."""
    campaign, config = _campaign(tmp_path, sandbox)
    other = write_csv(tmp_path / "other.csv", ["to"], [[NUMBERS[0]]])
    assert cli("send", other, "--config", config, "--out", tmp_path / "o.csv").code == 0
    sent = len(sandbox.received)
    for precious in (tmp_path / "o.csv.journal", config):
        before = precious.read_bytes()
        extra = [] if option == "--out" else ["--out", str(tmp_path / "r.csv")]
        run = cli("send", campaign, "--config", config, *extra, option, precious)
        _refused(run, "settings file or a database")
        assert precious.read_bytes() == before
    assert len(sandbox.received) == sent
