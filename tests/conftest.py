"""Shared fixtures: a real sandbox on 127.0.0.1, a config pointing at it, a CLI runner, and
the stores' backends (an SQLite file, or a PostgreSQL schema of the run's own database)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bulk_sender.cli import main
from bulk_sender.sandbox.server import Account, Sandbox, ThreadedSandbox
from tests import postgres

KEY_ENV = "BULK_SENDER_TEST_KEY"
API_KEY = "test-key-9f8e7d6c5b4a"
SID = "HXAP16TEST0001IN"
SENDER = "+919000000001"
BODY = "Thanks for your interest! You can explore our catalog for more details on our products."


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh Kaleyra sandbox for one test, on 127.0.0.1 with a random port."""
    account = Account(sid=SID, api_key=API_KEY, senders=frozenset({SENDER}))
    with ThreadedSandbox(account) as server:
        yield server


def write_config(path: Path, base_url: str, **sections: dict[str, object]) -> Path:
    """Write a config.toml for the sandbox; ``sections`` override or add keys per section."""
    values: dict[str, dict[str, object]] = {
        "kaleyra": {"pod": "in", "base_url": base_url, "sid": SID, "sender": SENDER,
                    "api_key_env": KEY_ENV},
        "campaign": {"body_text": BODY, "thumbnail_product_retailer_id": "2lxxxxxxpt",
                     "wa_source": "api", "default_region": "IN"},
        "sending": {"rate_per_second": 1000, "concurrency": 8, "max_attempts": 3,
                    "timeout_seconds": 5},
    }  # fmt: skip
    for section, extra in sections.items():
        values.setdefault(section, {}).update(extra)
    lines = []
    for section, items in values.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in items.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: object) -> str:
    """A value as TOML: strings, booleans, numbers, lists and (inline) tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    """Write a small UTF-8 campaign CSV."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of a results (or export) CSV as dicts."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@dataclass
class Run:
    """What a CLI run returned and printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The test API key, exported in the environment variable the test config names."""
    monkeypatch.setenv(KEY_ENV, API_KEY)
    return API_KEY


CliRunner = Callable[..., Run]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], api_key: str) -> Iterator[CliRunner]:
    """Run ``bulk-sender ARGS`` in this process; returns a :class:`Run`."""

    def run(*args: str | Path) -> Run:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    yield run


def spawn(
    *args: str | Path, cwd: Path | None = None, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -m bulk_sender ARGS`` as a real process (for signals and kills)."""
    env = {**os.environ, KEY_ENV: API_KEY, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "bulk_sender", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


#: The store backends every store test runs on.
BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[postgres.PgServer]:
    """The test run's own PostgreSQL database (see tests/postgres.py), dropped at the end.

    An unreachable server (or no asyncpg) skips the PostgreSQL tests, saying why; under
    ``CI=true`` it fails them instead."""
    try:
        server = postgres.start()
    except Exception as exc:
        reason = (
            f"no PostgreSQL server for the tests at {postgres.server_url()} "
            f"(set {postgres.ENV}): {type(exc).__name__}: {exc}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.drop()


LocationFactory = Callable[[], str]


@pytest.fixture(params=BACKENDS)
def new_location(request: pytest.FixtureRequest, tmp_path: Path) -> LocationFactory:
    """Makes fresh store locations of the backend under test: each call a new SQLite file in
    ``tmp_path``, or a new schema of the run's PostgreSQL database."""
    if request.param == "postgres":
        server: postgres.PgServer = request.getfixturevalue("pg_server")
        return server.fresh_location
    files = iter(range(1_000_000))
    return lambda: str(tmp_path / f"store-{next(files)}.db")


@pytest.fixture
def backend(new_location: LocationFactory) -> str:
    """A fresh store location on each backend (the same test runs on SQLite and PostgreSQL)."""
    return new_location()
