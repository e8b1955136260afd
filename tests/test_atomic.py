"""Files are written whole or not at all: temp file beside, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk_sender.record.atomic import atomic_write
from tests.conftest import CliRunner, write_config, write_csv


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process's umask after a test changes it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writes_bytes_and_text_in_the_encoding_asked(tmp_path: Path) -> None:
    """Bytes go as they are; text is encoded as asked, a BOM included, line ends untouched."""
    with atomic_write(tmp_path / "a.json") as binary:
        binary.write(b'{"a": 1}\n')
    with atomic_write(tmp_path / "b.csv", encoding="utf-8-sig") as text:
        text.write("to\r\n+91\n")
    assert (tmp_path / "a.json").read_bytes() == b'{"a": 1}\n'
    assert (tmp_path / "b.csv").read_bytes() == b"\xef\xbb\xbfto\r\n+91\n"
    assert _names(tmp_path) == ["a.json", "b.csv"]


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_permissions_follow_the_umask(tmp_path: Path, umask: None, mask: int, mode: int) -> None:
    """The new file gets 0666 less the umask, as any file the user creates (never 0600)."""
    target = tmp_path / "results.csv"
    target.write_bytes(b"old")
    target.chmod(0o600)
    os.umask(mask)
    with atomic_write(target) as file:
        file.write(b"new")
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_an_error_in_the_block_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    """A write that fails half-way leaves the old file as it was and nothing else behind."""
    target = tmp_path / "results.csv"
    target.write_bytes(b"the old results\n")
    with pytest.raises(RuntimeError, match="half-way"), atomic_write(target) as file:
        file.write(b"the new ")
        raise RuntimeError("half-way")
    assert target.read_bytes() == b"the old results\n"
    assert _names(tmp_path) == ["results.csv"]


def test_a_failed_sync_or_rename_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the disk refuses the sync or the rename, the old file stays and the temp goes."""
    target = tmp_path / "summary.json"
    target.write_bytes(b"old")

    def refuse(*_: object) -> None:
        raise OSError(28, "No space left on device")

    for name in ("fsync", "replace"):
        with monkeypatch.context() as patch:
            patch.setattr(os if name == "fsync" else Path, name, refuse)
            with pytest.raises(OSError, match="No space"), atomic_write(target) as file:
                file.write(b"new")
        assert target.read_bytes() == b"old"
        assert _names(tmp_path) == ["summary.json"]


def test_the_file_and_then_its_directory_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data is synced before the rename and the directory after it, so both survive a crash."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append(f"{kind}:{(tmp_path / 'r.csv').exists()}")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_write(tmp_path / "r.csv") as file:
        file.write(b"x")
    assert synced == ["file:False", "dir:True"]


def test_an_existing_temp_name_is_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file or symlink already at the random name is left alone and another name is drawn."""
    names = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda _: next(names))
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / ".r.csv.aaaa.tmp").symlink_to(victim)
    with atomic_write(tmp_path / "r.csv") as file:
        file.write(b"results")
    assert victim.read_bytes() == b"keep me"
    assert (tmp_path / "r.csv").read_bytes() == b"results"
    assert _names(tmp_path) == [".r.csv.aaaa.tmp", "r.csv", "victim"]


def test_every_file_a_run_writes_goes_through_a_fresh_temp_name(
    tmp_path: Path, cli: CliRunner
) -> None:
    """Verdicts and the summary JSON are written atomically, never through a fixed temp name."""
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:9")
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["+919876543210"], ["12"]])
    for name in ("summary.json", "verdicts.csv"):
        (tmp_path / f".{name}.tmp").mkdir()  # where a fixed temp name would have to go
    run = cli(
        "send", campaign, "--config", config, "--dry-run",
        "--out", tmp_path / "verdicts.csv", "--summary-json", tmp_path / "summary.json",
    )  # fmt: skip
    assert run.code == 1, run.err
    assert b'"exit_code": 1' in (tmp_path / "summary.json").read_bytes()
    assert (tmp_path / "verdicts.csv").read_text(encoding="utf-8").count("\n") == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and p.is_file()]
