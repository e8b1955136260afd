"""The exception tree: one base, one exit code per class, applied by the CLI at one place."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

import bulk_sender.errors as errors
from bulk_sender.errors import (
    BulkSenderError,
    ConfigError,
    ExitCode,
    JournalError,
    PlannerCrashedError,
    exit_code_of,
)
from bulk_sender.sandbox.server import Sandbox
from tests.conftest import CliRunner, write_config, write_csv

_CLASSES: list[type[BulkSenderError]] = [
    value
    for name in errors.__all__
    if isinstance(value := getattr(errors, name), type) and issubclass(value, BulkSenderError)
]


def test_every_public_exception_is_a_bulk_sender_error() -> None:
    """Everything errors.py exports as an exception derives from BulkSenderError."""
    exported = [getattr(errors, name) for name in errors.__all__]
    classes = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, Exception)]
    assert len(classes) >= 9
    assert all(issubclass(cls, BulkSenderError) for cls in classes)


def test_the_docstring_tree_names_every_class_with_its_exit_code() -> None:
    """The tree drawn in errors.py's docstring lists each class, and its exit code where given."""
    doc = errors.__doc__ or ""
    drawn = dict(re.findall(r"^[\s│├└─]*(\w+Error)\b(?:\s+exit (\d+))?", doc, re.MULTILINE))
    assert set(drawn) == {cls.__name__ for cls in _CLASSES}
    for cls in _CLASSES:
        if drawn[cls.__name__]:
            assert cls.exit_code == int(drawn[cls.__name__]), cls.__name__


def test_exit_codes_of_the_tree() -> None:
    """Usage errors exit 2, journal errors 3, a crashed planner and foreign exceptions 70."""
    assert exit_code_of(ConfigError("[kaleyra] sid", "missing")) == 2
    assert exit_code_of(JournalError("disk full")) == 3
    assert exit_code_of(PlannerCrashedError("gone")) == 70
    assert exit_code_of(KeyError("x")) is ExitCode.INTERNAL


@pytest.mark.parametrize(
    ("error", "code", "traceback"),
    [
        (ConfigError("[sending] rate_per_second", "must be positive"), 2, False),
        (JournalError("cannot write the journal: disk full"), 3, False),
        (PlannerCrashedError("the planning process ended with exit code 9"), 70, True),
    ],
)
def test_the_cli_exits_with_the_code_the_error_carries(
    tmp_path: Path,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    error: BulkSenderError,
    code: int,
    traceback: bool,
) -> None:
    """An error ends the CLI with its class's exit code, in the summary JSON too; only a bug
    prints its traceback."""

    def fail(*_: object, **__: object) -> object:
        raise error

    monkeypatch.setattr("bulk_sender.cli.load_settings", fail)
    summary = tmp_path / "summary.json"
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["+919876543210"]])
    run = cli("send", campaign, "--summary-json", summary)
    assert run.code == code
    assert ("Traceback" in run.err) is traceback
    assert run.err.strip().splitlines()[-1].startswith("bulk-sender: ")
    assert orjson.loads(summary.read_bytes())["exit_code"] == code


def test_a_base_url_the_client_cannot_use_is_a_config_error(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A base URL without a host passes the config's pattern but is still exit 2, one line."""
    config = write_config(tmp_path / "config.toml", "http://:80")
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["+919876543210"]])
    run = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
    assert run.code == 2, run.err
    assert "Traceback" not in run.err
    assert "[kaleyra] base_url" in run.err
    assert sandbox.received == []
