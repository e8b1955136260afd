"""The Python API, through ``import bulk_sender`` only, against the sandbox over real HTTP.

Async tests run their own loop with ``asyncio.run``. Cancellations are ordered by what the
sandbox has received (a recipient scripted to HANG holds its request until the sandbox stops),
never by sleeping for a while: the grace period only ever runs out on a request that cannot
be answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import pytest

import bulk_sender
import bulk_sender.errors
from bulk_sender.sandbox.server import Behaviour, Sandbox
from tests.conftest import API_KEY, KEY_ENV, read_results, write_config, write_csv


def _numbers(n: int) -> list[str]:
    return [f"+9198765{i:05d}" for i in range(n)]


def _rows(numbers: list[str]) -> list[dict[str, object]]:
    return [{"phone": n, "first_name": "Asha"} for n in numbers]


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate`` holds (an event in another thread or process); never a timer."""
    deadline = time.monotonic() + 60
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the time limit")
        await asyncio.sleep(0.005)


def _arrived(sandbox: Sandbox, to: str) -> Callable[[], bool]:
    return lambda: any(r.to == to for r in sandbox.received)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def test_rows_as_mappings_are_read_as_the_csv_loader_reads_cells(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """Integer, float (.0) and missing phone cells in plain dicts give digits, digits, empty."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    rows: list[dict[str, object]] = [
        {"phone": 919876500001, "ref": 7},
        {"phone": 919876500002.0, "ref": 1.5},
        {"phone": None, "ref": "x"},
        {"phone": float("nan"), "ref": True},
        {"phone": "+91 98765 00005"},
    ]
    run = bulk_sender.send(rows, config=config, results=tmp_path / "r.csv")
    assert run.exit_code == 1
    assert sorted(sandbox.counts()) == ["+919876500001", "+919876500002", "+919876500005"]
    results = read_results(tmp_path / "r.csv")
    assert [(r["to"], r["status"], r["ref"]) for r in results] == [
        ("+919876500001", "sent", "7"),
        ("+919876500002", "sent", "1.5"),
        ("", "invalid", "x"),
        ("", "invalid", "TRUE"),
        ("+919876500005", "sent", ""),
    ]
    assert run.statuses["sent"] == 3 and run.statuses["invalid"] == 2
    assert run.results == tmp_path / "r.csv"
    assert run.summary["outcome"] == "finished" and run.summary["exit_code"] == 1
    assert run.summary["resume_command"] is None and run.summary["retry_command"] is None
    assert "sent 3" in run.report


def test_the_same_rows_again_resume_and_send_nothing_twice(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """Calling again with the same rows and results finds the campaign done: nothing is resent."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    rows = _rows(_numbers(5))
    first = bulk_sender.send(rows, config=config, results=tmp_path / "r.csv")
    again = bulk_sender.send(iter(rows), config=config, results=tmp_path / "r.csv")
    assert (first.exit_code, again.exit_code) == (0, 0)
    assert len(sandbox.received) == 5
    assert again.summary["this_run"]["already_done_before"] == 5


def test_send_inside_a_running_loop_refuses_before_any_file_is_made(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """send() in a running loop raises a UsageError naming send_async; no lock, journal or spool."""
    config = write_config(tmp_path / "config.toml", sandbox.url)

    async def inside() -> None:
        with pytest.raises(bulk_sender.UsageError, match="send_async"):
            bulk_sender.send(_rows(_numbers(2)), config=config, results=tmp_path / "r.csv")

    _run(inside())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    assert sandbox.received == []


def test_send_async_runs_inside_a_running_loop(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """send_async sends from inside a running loop (as in a notebook cell) and returns a Run."""
    config = write_config(tmp_path / "config.toml", sandbox.url)

    async def cell() -> bulk_sender.Run:
        return await bulk_sender.send_async(
            _rows(_numbers(3)), config=config, results=tmp_path / "r.csv"
        )

    run = _run(cell())
    assert run.exit_code == 0
    assert run.statuses["sent"] == 3
    assert run.failed == tmp_path / "r.failed.csv"
    assert len(sandbox.received) == 3


def test_cancelling_lets_answers_arrive_records_everything_and_resumes(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """Cancelled half-way: CancelledError after whole results (sent or not_sent); calling again
    sends the rest, each recipient once, and no signal handler was touched meanwhile."""
    numbers = _numbers(200)
    sandbox.faults.latency = 0.02
    config = write_config(
        tmp_path / "config.toml", sandbox.url, sending={"rate_per_second": 1000, "concurrency": 4}
    )
    out = tmp_path / "r.csv"

    async def cancel_half_way() -> None:
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        task = asyncio.create_task(
            bulk_sender.send_async(_rows(numbers), config=config, results=out)
        )
        await _until(lambda: len(sandbox.received) >= 20)
        assert {s: signal.getsignal(s) for s in handlers} == handlers
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    _run(cancel_half_way())
    statuses = [r["status"] for r in read_results(out)]
    assert len(statuses) == 200
    assert set(statuses) == {"sent", "not_sent"}
    again = bulk_sender.send(_rows(numbers), config=config, results=out)
    assert again.exit_code == 0
    assert again.statuses["sent"] == 200
    assert max(sandbox.counts().values()) == 1 and len(sandbox.counts()) == 200


def _hanging(tmp_path: Path, sandbox: Sandbox, grace: float) -> tuple[list[str], Path]:
    """Rows whose sixth recipient never gets an answer, sent one at a time."""
    numbers = _numbers(30)
    sandbox.faults.scripts[numbers[5]] = [Behaviour.HANG]
    config = write_config(
        tmp_path / "config.toml",
        sandbox.url,
        sending={"concurrency": 1, "timeout_seconds": 60, "stop_grace_seconds": grace},
    )
    return numbers, config


def test_a_request_that_outlives_the_grace_is_unknown_and_never_resent(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """Cancelled with a request hanging: after the grace it is abandoned as unknown, the rest is
    not_sent, the results are written; calling again sends the rest and not the hung row."""
    numbers, config = _hanging(tmp_path, sandbox, grace=0.2)
    out = tmp_path / "r.csv"

    async def cancel_while_hanging() -> None:
        task = asyncio.create_task(
            bulk_sender.send_async(_rows(numbers), config=config, results=out)
        )
        await _until(_arrived(sandbox, numbers[5]))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    _run(cancel_while_hanging())
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["sent"] * 5 + ["unknown"] + ["not_sent"] * 24
    assert rows[5]["code"] == "INTERRUPTED"
    again = bulk_sender.send(_rows(numbers), config=config, results=out)
    assert again.exit_code == 1
    assert (again.statuses["sent"], again.statuses["unknown"]) == (29, 1)
    assert sandbox.count(numbers[5]) == 1
    assert max(sandbox.counts().values()) == 1


def test_a_second_cancel_ends_the_grace_at_once(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """A second cancellation during a long grace period abandons what is in flight right away."""
    numbers, config = _hanging(tmp_path, sandbox, grace=600)
    out = tmp_path / "r.csv"
    lock = tmp_path / "r.csv.lock"

    async def cancel_twice() -> None:
        task = asyncio.create_task(
            bulk_sender.send_async(_rows(numbers), config=config, results=out)
        )
        await _until(_arrived(sandbox, numbers[5]))
        task.cancel()
        await _until(lambda: "stopping" in lock.read_text())  # in its grace period now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=60)  # far below the 600 s grace

    _run(cancel_twice())
    assert [r["status"] for r in read_results(out)][5] == "unknown"
    assert lock.read_text() == ""


def test_a_second_run_on_the_same_results_is_busy(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """While one run sends, another on the same results raises AlreadyRunningError (exit 75)."""
    numbers, config = _hanging(tmp_path, sandbox, grace=0.1)
    out = tmp_path / "r.csv"

    async def two_runs() -> None:
        task = asyncio.create_task(
            bulk_sender.send_async(_rows(numbers), config=config, results=out)
        )
        await _until(_arrived(sandbox, numbers[5]))
        with pytest.raises(bulk_sender.AlreadyRunningError) as refused:
            await bulk_sender.send_async(_rows(numbers), config=config, results=out)
        assert refused.value.exit_code == 75
        assert "already sending" in str(refused.value)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    _run(two_runs())
    assert sandbox.count(numbers[6]) == 0


def test_the_api_key_argument_wins_over_the_environment(tmp_path: Path, sandbox: Sandbox) -> None:
    """api_key= is sent as the api-key header even when the configured variable is unset."""
    config = write_config(
        tmp_path / "config.toml", sandbox.url, kaleyra={"api_key_env": "NOT_SET_FOR_THIS_TEST"}
    )
    run = bulk_sender.send(
        _rows(_numbers(1)), config=config, results=tmp_path / "r.csv", api_key=API_KEY
    )
    assert run.exit_code == 0
    assert sandbox.received[0].headers["api-key"] == API_KEY


def test_settings_objects_and_overrides(tmp_path: Path, sandbox: Sandbox, api_key: str) -> None:
    """config= takes a Settings object; rate, concurrency and base_url override it."""
    from bulk_sender.config import load_settings

    settings = load_settings(write_config(tmp_path / "config.toml", "http://127.0.0.1:9"))
    run = bulk_sender.send(
        _rows(_numbers(2)),
        config=settings,
        results=tmp_path / "r.csv",
        base_url=sandbox.url,
        rate=500,
        concurrency=2,
    )
    assert run.exit_code == 0
    assert run.summary["rate"]["configured"] == 500


def test_summary_json_is_written_as_the_cli_writes_it(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """summary_json= gets the same document as Run.summary."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    path = tmp_path / "s.json"
    run = bulk_sender.send(
        _rows(_numbers(2)), config=config, results=tmp_path / "r.csv", summary_json=path
    )
    assert orjson.loads(path.read_bytes()) == orjson.loads(orjson.dumps(run.summary))


def test_dry_run_checks_rows_without_a_journal(tmp_path: Path, sandbox: Sandbox) -> None:
    """dry_run() of rows gives verdicts, sends nothing and leaves no journal, lock or spool."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    rows: list[dict[str, object]] = [*_rows(_numbers(2)), {"phone": "12", "first_name": "x"}]
    run = bulk_sender.dry_run(rows, config=config)
    assert (run.exit_code, run.results, run.failed) == (1, None, None)
    assert dict(run.statuses) == {"valid": 2, "invalid": 1, "duplicate": 0, "suppressed": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    assert sandbox.received == []


def _error(call: Callable[[], object]) -> bulk_sender.BulkSenderError:
    with pytest.raises(bulk_sender.BulkSenderError) as raised:
        call()
    return raised.value


#: (what is wrong, the call given the config and results paths, the error, words of it)
_MISTAKES: list[tuple[str, Callable[[Path, Path], object], type[Exception], str]] = [
    (
        "unknown option",
        lambda c, o: bulk_sender.send(_rows(_numbers(1)), config=c, results=o, rat=5),  # type: ignore[call-arg]
        bulk_sender.UsageError,
        "'rat' is not an option",
    ),
    (
        "rows without results",
        lambda c, o: bulk_sender.send(_rows(_numbers(1)), config=c),
        bulk_sender.UsageError,
        "needs results=",
    ),
    (
        "not a campaign",
        lambda c, o: bulk_sender.send(42, config=c, results=o),  # type: ignore[arg-type]
        bulk_sender.UsageError,
        "not int",
    ),
    (
        "a key the first row lacks",
        lambda c, o: bulk_sender.send([{"phone": 1}, {"phone": 2, "x": 3}], config=c, results=o),
        bulk_sender.UsageError,
        "row 2",
    ),
    (
        "a blank api key",
        lambda c, o: bulk_sender.send(_rows(_numbers(1)), config=c, results=o, api_key=" "),
        bulk_sender.ConfigError,
        "api_key",
    ),
    (
        "a missing file",
        lambda c, o: bulk_sender.send(o.with_name("nope.csv"), config=c),
        bulk_sender.InputFileError,
        "no such file",
    ),
    (
        "a missing config",
        lambda c, o: bulk_sender.send(_rows(_numbers(1)), config=o.with_name("x.toml"), results=o),
        bulk_sender.ConfigError,
        "does not exist",
    ),
    (
        "no phone column",
        lambda c, o: bulk_sender.send([{"name": "x"}], config=c, results=o),
        bulk_sender.UsageError,
        "phone",
    ),
]


@pytest.mark.parametrize(
    ("call", "kind", "text"), [m[1:] for m in _MISTAKES], ids=[m[0] for m in _MISTAKES]
)
def test_mistakes_raise_the_packages_own_errors(
    tmp_path: Path,
    sandbox: Sandbox,
    api_key: str,
    call: Callable[[Path, Path], object],
    kind: type[Exception],
    text: str,
) -> None:
    """Each mistake raises its BulkSenderError subclass (exit 2) before anything is sent."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    error = _error(lambda: call(config, tmp_path / "r.csv"))
    assert isinstance(error, kind), error
    assert text in str(error)
    assert error.exit_code == 2
    assert sandbox.received == []


def test_changed_rows_for_the_same_results_are_refused(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """Other rows sent to the same results raise CampaignMismatchError: nothing is sent."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    bulk_sender.send(_rows(_numbers(2)), config=config, results=out)
    changed = _error(lambda: bulk_sender.send(_rows(_numbers(3)), config=config, results=out))
    assert isinstance(changed, bulk_sender.CampaignMismatchError)
    assert len(sandbox.received) == 2


def test_the_public_surface() -> None:
    """__all__ lists what the package offers, each with a docstring; every exception is a
    BulkSenderError importable from the package root; the package ships py.typed."""
    names = set(bulk_sender.__all__)
    assert {"send", "send_async", "dry_run", "Run", "BulkSenderError", "ExitCode"} <= names
    exported = {name: getattr(bulk_sender, name) for name in names - {"__version__"}}
    assert all(obj.__doc__ for obj in exported.values())
    assert all(getattr(bulk_sender.Run, m).__doc__ for m in ("to_dataframe",))
    errors = {
        obj
        for name in bulk_sender.errors.__all__
        if isinstance(obj := getattr(bulk_sender.errors, name), type) and issubclass(obj, Exception)
    }
    assert errors == {
        obj for obj in exported.values() if isinstance(obj, type) and issubclass(obj, Exception)
    }
    assert all(issubclass(cls, bulk_sender.BulkSenderError) for cls in errors)
    assert (Path(bulk_sender.__file__).parent / "py.typed").is_file()


def test_importing_the_package_and_the_cli_never_imports_pandas(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """Importing bulk_sender, its API, the CLI's --help, a dry run: no pandas, no pyarrow."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(3)])
    script = f"""
import contextlib, sys
import bulk_sender
bulk_sender.send, bulk_sender.Run
from bulk_sender.cli import main
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):
    main(["send", "--help"])
assert main(["send", {str(campaign)!r}, "--config", {str(config)!r}, "--dry-run"]) == 0
print("loaded:", sorted(m for m in sys.modules if m.partition(".")[0] in ("pandas", "pyarrow")))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "loaded: []"


_HOSTED = """
import signal, sys
import bulk_sender

class TaskTerminated(Exception):
    pass

def on_sigterm(signum, frame):  # what Airflow's task runner does on a timeout or a kill
    raise TaskTerminated("SIGTERM")

signal.signal(signal.SIGTERM, on_sigterm)
try:
    bulk_sender.send(sys.argv[1], config=sys.argv[2], results=sys.argv[3])
except TaskTerminated:
    sys.exit(99)
except KeyboardInterrupt:
    sys.exit(98)
"""


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 99), (signal.SIGINT, 98)])
def test_a_hosts_signal_stops_a_sync_send_gracefully(
    tmp_path: Path, sandbox: Sandbox, signum: int, code: int
) -> None:
    """In a script, send() stops on Ctrl-C (KeyboardInterrupt) or on an exception a host's
    signal handler raises (Airflow's on SIGTERM): the results are written, the hung row is
    unknown, and the exception comes out; the library installed no handler of its own."""
    numbers, config = _hanging(tmp_path, sandbox, grace=0.2)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    out = tmp_path / "r.csv"
    env = {**os.environ, KEY_ENV: API_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOSTED, str(campaign), str(config), str(out)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    asyncio.run(_until(_arrived(sandbox, numbers[5])))
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    statuses = [r["status"] for r in read_results(out)]
    assert statuses == ["sent"] * 5 + ["unknown"] + ["not_sent"] * 24
