"""Delivery semantics under faults, over real HTTP: retry what is safe, stop on account errors."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from bulk_sender.sandbox.server import Behaviour, Sandbox
from tests.conftest import CliRunner, Run, read_results, write_config, write_csv

A, B, C = "+919876543210", "+919876543211", "+919876543212"


def _campaign(tmp_path: Path, numbers: list[str]) -> Path:
    return write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])


def _send(
    cli: CliRunner, tmp_path: Path, url: str, numbers: list[str], **sections: dict[str, object]
) -> tuple[Run, dict[str, dict[str, str]]]:
    config = write_config(tmp_path / "config.toml", url, **sections)
    out = tmp_path / "r.csv"
    run = cli("send", _campaign(tmp_path, numbers), "--config", config, "--out", out)
    return run, {r["to"]: r for r in read_results(out)}


@pytest.mark.parametrize(
    "script",
    [
        [Behaviour.WA500, Behaviour.OK],
        [Behaviour.HTML_502, Behaviour.OK],
        [Behaviour.S504, Behaviour.WA500, Behaviour.OK],
        [Behaviour.S503, Behaviour.OK],
        [Behaviour.THROTTLE, Behaviour.OK],
    ],
    ids=["wa500", "html502", "504-then-wa500", "503", "429"],
)
def test_server_errors_are_retried_then_sent(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, script: list[Behaviour]
) -> None:
    """500/502/504/WA500/503/429 are retried; the row is sent after exactly len(script) requests."""
    sandbox.faults.retry_after = "0"
    sandbox.faults.scripts[A] = list(script)
    run, rows = _send(cli, tmp_path, sandbox.url, [A, B])
    assert run.code == 0, run.err
    assert sandbox.count(A) == len(script)
    assert sandbox.count(B) == 1
    assert rows[A]["status"] == "sent"
    assert rows[A]["attempts"] == str(len(script))
    assert rows[A]["message_id"] == sandbox.accepted()[-1].message_id or rows[A]["message_id"] in {
        r.message_id for r in sandbox.accepted()
    }


def test_the_policy_is_told_a_rows_errors_and_throttles(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each attempt the policy gets the row's failures so far (a 429 or a success is not
    one) and its 429s so far, each counting the attempt just made."""
    from bulk_sender.sending.outcome import Outcome
    from bulk_sender.sending.policy import Decision, RetryPolicy

    seen: list[tuple[int, int]] = []
    decide = RetryPolicy.decide

    def spy(
        self: RetryPolicy, outcome: Outcome, *, errors: int, throttles: int, random: float
    ) -> Decision:
        seen.append((errors, throttles))
        return decide(self, outcome, errors=errors, throttles=throttles, random=random)

    monkeypatch.setattr(RetryPolicy, "decide", spy)
    sandbox.faults.retry_after = "0"
    sandbox.faults.scripts[A] = [Behaviour.WA500, Behaviour.THROTTLE, Behaviour.S504, Behaviour.OK]
    run, rows = _send(cli, tmp_path, sandbox.url, [A], sending={"max_attempts": 3})
    assert run.code == 0, run.err
    assert rows[A]["attempts"] == "4"
    assert seen == [(1, 0), (1, 1), (2, 1), (2, 1)]


def test_server_error_exhausts_attempts(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """A row that keeps getting WA500 is sent max_attempts times, then fails with the last code."""
    sandbox.faults.scripts[A] = [Behaviour.WA500] * 10
    run, rows = _send(cli, tmp_path, sandbox.url, [A, B], sending={"max_attempts": 3})
    assert run.code == 1
    assert sandbox.count(A) == 3
    assert rows[A]["status"] == "failed"
    assert rows[A]["code"] == "WA500"
    assert rows[A]["http_status"] == "500"
    assert rows[A]["attempts"] == "3"
    assert "Please try again later" in rows[A]["error"]


@pytest.mark.parametrize(
    "behaviour",
    [Behaviour.DROP, Behaviour.NOT_JSON, Behaviour.NO_MESSAGE_ID, Behaviour.HANG],
    ids=["dropped", "not-json", "no-message-id", "read-timeout"],
)
def test_ambiguous_answers_are_unknown_and_not_retried(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, behaviour: Behaviour
) -> None:
    """After the request went out, a lost or unreadable answer makes the row unknown: 1 request."""
    sandbox.faults.scripts[A] = [behaviour]
    run, rows = _send(cli, tmp_path, sandbox.url, [A, B], sending={"timeout_seconds": 1})
    assert run.code == 1
    assert sandbox.count(A) == 1
    assert rows[A]["status"] == "unknown"
    assert rows[A]["message_id"] == ""
    assert rows[B]["status"] == "sent"


def test_at_least_once_retries_ambiguous(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """With delivery = "at-least-once" a dropped answer is retried like a 500."""
    sandbox.faults.scripts[A] = [Behaviour.DROP, Behaviour.OK]
    run, rows = _send(cli, tmp_path, sandbox.url, [A], sending={"delivery": "at-least-once"})
    assert run.code == 0
    assert sandbox.count(A) == 2
    assert rows[A]["status"] == "sent"


def test_row_level_400_is_failed_never_retried(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A WA400 fails the row at once with Kaleyra's code and message, after one request."""
    sandbox.faults.scripts[A] = [Behaviour.WA400]
    run, rows = _send(cli, tmp_path, sandbox.url, [A, B])
    assert run.code == 1
    assert sandbox.count(A) == 1
    assert (rows[A]["status"], rows[A]["code"], rows[A]["http_status"]) == (
        "failed",
        "WA400",
        "400",
    )


@pytest.mark.parametrize(
    ("behaviour", "code", "says"),
    [
        (Behaviour.RBC001, "RBC001", "the SID or API key is wrong"),
        (Behaviour.WA401, "WA401", "the sender number is not on this account"),
        (Behaviour.WA401_ACCOUNT, "WA-401", "not available"),
        (Behaviour.WA401_VERSION, "WA-401", "different Version"),
        (Behaviour.WAV2101, "WAV2101", "daily limit"),
        (Behaviour.E110, "E110", "the balance is low"),
    ],
)
def test_account_errors_stop_the_run(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, behaviour: Behaviour, code: str, says: str
) -> None:
    """An account-level answer stops the run: exit 3, rows not_sent with the code, a clear line."""
    sandbox.faults.default = behaviour
    numbers = [f"+9198765{i:05d}" for i in range(30)]
    run, rows = _send(cli, tmp_path, sandbox.url, numbers, sending={"concurrency": 4})
    assert run.code == 3, run.err
    assert len(sandbox.received) <= 4
    assert {r["status"] for r in rows.values()} == {"not_sent"}
    assert sum(r["code"] == code for r in rows.values()) == len(sandbox.received)
    assert says in run.out
    assert "run the same command again" in run.out
    assert all(sandbox.count(n) <= 1 for n in numbers)


def test_low_balance_mid_run_stops_fast(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """Balance runs out after 25 sent: exit 3, <= `concurrency` requests after the first E110."""
    sandbox.faults.balance = 25
    numbers = [f"+9198765{i:05d}" for i in range(300)]
    run, rows = _send(cli, tmp_path, sandbox.url, numbers, sending={"concurrency": 8})
    assert run.code == 3
    codes = [r.code for r in sandbox.received]
    first = codes.index("E110")
    assert len(codes) - first - 1 <= 8
    statuses = [r["status"] for r in rows.values()]
    assert statuses.count("sent") == 25
    assert statuses.count("not_sent") == 275
    assert (
        "Kaleyra says the balance is low (E110). Top up, then run the same command again" in run.out
    )
    assert "remaining 275 rows" in run.out


def test_error_threshold_stops_the_run(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """Five failed rows in a row stop the run (exit 3) instead of burning through the file."""
    sandbox.faults.default = Behaviour.WA400
    numbers = [f"+9198765{i:05d}" for i in range(100)]
    run, rows = _send(
        cli, tmp_path, sandbox.url, numbers, sending={"error_threshold": 5, "concurrency": 2}
    )
    assert run.code == 3
    assert len(sandbox.received) <= 5 + 2
    assert "Stopped after 5 failed rows in a row" in run.out
    assert sum(r["status"] == "not_sent" for r in rows.values()) >= 90


def test_error_threshold_zero_is_off(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """error_threshold = 0 never stops: every row is tried."""
    sandbox.faults.default = Behaviour.WA400
    numbers = [f"+9198765{i:05d}" for i in range(20)]
    run, _ = _send(cli, tmp_path, sandbox.url, numbers, sending={"error_threshold": 0})
    assert run.code == 1
    assert len(sandbox.received) == 20


def test_retry_after_is_honoured(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """After a 429 with Retry-After: 1 the row is not sent again for at least ~1 second."""
    sandbox.faults.retry_after = "1"
    sandbox.faults.scripts[A] = [Behaviour.THROTTLE, Behaviour.OK]
    run, _ = _send(cli, tmp_path, sandbox.url, [A])
    assert run.code == 0
    first, second = (r.at for r in sandbox.received)
    assert second - first >= 0.9


def test_the_summary_reports_the_rate_a_429_left(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """After one 429 the run's rate is halved, and the summary's final rate is that rate."""
    sandbox.faults.retry_after = "0"
    sandbox.faults.scripts[A] = [Behaviour.THROTTLE, Behaviour.OK]
    config = write_config(tmp_path / "config.toml", sandbox.url)
    summary = tmp_path / "s.json"
    run = cli(
        "send", _campaign(tmp_path, [A]), "--config", config, "--out", tmp_path / "r.csv",
        "--summary-json", summary,
    )  # fmt: skip
    assert run.code == 0, run.err
    rate = orjson.loads(summary.read_bytes())["rate"]
    assert rate == {"configured": 1000.0, "final": 500.0, "changes": 1}


def test_429_storm_slows_down_and_recovers(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A server limiting to 15/s makes the run slow down; once the limit lifts it climbs back."""
    sandbox.faults.max_rate = 15
    # The limit lifts after its second 429: at 60/s, then halved to 30/s, the run exceeds
    # 15/s twice whatever the machine's speed.
    sandbox.faults.max_rate_throttles = 2
    sandbox.faults.retry_after = "1"
    numbers = [f"+9198765{i:05d}" for i in range(240)]
    run, rows = _send(
        cli, tmp_path, sandbox.url, numbers,
        sending={"rate_per_second": 60, "concurrency": 8, "max_attempts": 10},
    )  # fmt: skip
    assert sum(1 for x in sandbox.received if x.status == 429) == 2
    assert run.code == 0, run.out
    assert all(r["status"] == "sent" for r in rows.values())
    assert all(
        sandbox.count(n) - sum(1 for x in sandbox.received if x.to == n and x.status == 429) == 1
        for n in numbers
    )
    assert 'reason="429 from Kaleyra"' in run.err
    assert 'reason="answers are clean again"' in run.err


def test_a_worker_that_crashes_ends_the_run_instead_of_hanging(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a worker (not an expected failure) ends the run with exit 70 and its traceback;
    the loader, blocked on a full queue behind dead workers, would otherwise wait forever
    (pytest-timeout guards)."""
    from bulk_sender.sending.client import KaleyraClient

    async def broken(self: KaleyraClient, body: bytes, lease: object = None) -> object:
        raise RuntimeError("a bug in the client")

    monkeypatch.setattr(KaleyraClient, "post", broken)
    numbers = [f"+9198765{i:05d}" for i in range(40)]  # 40 rows: more than the queue holds
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"concurrency": 2})
    summary = tmp_path / "summary.json"
    run = cli(
        "send", _campaign(tmp_path, numbers), "--config", config, "--out", tmp_path / "r.csv",
        "--summary-json", summary,
    )  # fmt: skip
    assert run.code == 70
    assert "RuntimeError: a bug in the client" in run.err  # the traceback, for the report
    assert "bulk-sender: internal error (RuntimeError" in run.err
    assert orjson.loads(summary.read_bytes())["exit_code"] == 70
    assert sandbox.received == []


def test_a_worker_sends_only_after_its_last_outcome_is_on_disk(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outcomes are queued, not awaited, yet at every request the journal on disk holds at most
    ``concurrency`` rows in flight: each worker's earlier outcome is already committed."""
    import sqlite3

    from bulk_sender.sending.client import Answer, KaleyraClient, Lease

    out = tmp_path / "r.csv"
    in_flight_seen: list[int] = []
    post = KaleyraClient.post

    async def watched(self: KaleyraClient, body: bytes, lease: Lease | None = None) -> Answer:
        with sqlite3.connect(out.with_name(out.name + ".journal")) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM messages WHERE status = 'in_flight'"
            ).fetchone()
        in_flight_seen.append(count)
        return await post(self, body, lease)

    monkeypatch.setattr(KaleyraClient, "post", watched)
    numbers = [f"+9198765{i:05d}" for i in range(60)]
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"concurrency": 3})
    run = cli("send", _campaign(tmp_path, numbers), "--config", config, "--out", out)
    assert max(in_flight_seen) <= 3
    assert run.code == 0
    assert len(in_flight_seen) == 60
    assert {r["status"] for r in read_results(out)} == {"sent"}


def test_a_requests_connection_is_ready_before_its_row_is_in_flight(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request takes its connection (opening it if need be) before its in_flight commit and
    departure: opening one after the gate would make it reach the server late, bunched with
    later ones, so the gate's pace would not be the server's."""
    from bulk_sender.sending.client import Answer, KaleyraClient, Lease
    from bulk_sender.sending.engine import Engine

    events: list[str] = []
    ready, post, commit = KaleyraClient.ready, KaleyraClient.post, Engine._commit_in_flight

    async def watched_ready(self: KaleyraClient, lease: Lease | None = None) -> Lease:
        events.append("ready")
        return await ready(self, lease)

    async def watched_post(self: KaleyraClient, body: bytes, lease: Lease | None = None) -> Answer:
        events.append("post")
        return await post(self, body, lease)

    async def watched_commit(self: Engine, *args: object) -> bool:
        events.append("commit")
        return await commit(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(KaleyraClient, "ready", watched_ready)
    monkeypatch.setattr(KaleyraClient, "post", watched_post)
    monkeypatch.setattr(Engine, "_commit_in_flight", watched_commit)
    numbers = [f"+9198765{i:05d}" for i in range(5)]
    run, rows = _send(cli, tmp_path, sandbox.url, numbers, sending={"concurrency": 1})
    assert run.code == 0, run.err
    # At least one ready() (before admission; again after it) before each commit, none after.
    assert re.fullmatch(r"((ready,)+commit,post,){5}", ",".join(events) + ","), events
    assert {r["status"] for r in rows.values()} == {"sent"}


def test_a_stop_while_a_connection_is_being_taken_sends_nothing_on_it(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row whose connection was taken (opened) for it when the run stopped is not sent: it
    stays not_sent and the connection carries no request."""
    import asyncio

    from bulk_sender.sending.client import KaleyraClient, Lease
    from bulk_sender.sending.engine import Engine, StopReason

    ready, request_stop = KaleyraClient.ready, Engine.request_stop
    stopped: list[asyncio.Event] = []
    leases: list[Lease] = []

    def stop_event() -> asyncio.Event:
        if not stopped:
            stopped.append(asyncio.Event())  # created in the run's own loop
        return stopped[0]

    async def second_waits_for_the_stop(self: KaleyraClient, held: Lease | None = None) -> Lease:
        lease = await ready(self, held)
        if held is None:  # a row's first take, not the look after admission
            leases.append(lease)
            if len(leases) == 2:
                await asyncio.wait_for(stop_event().wait(), 30)
        return lease

    def stop(self: Engine, reason: StopReason) -> None:
        request_stop(self, reason)
        stop_event().set()

    monkeypatch.setattr(KaleyraClient, "ready", second_waits_for_the_stop)
    monkeypatch.setattr(Engine, "request_stop", stop)
    sandbox.faults.balance = 0  # the first answer is E110: the run stops
    run, rows = _send(cli, tmp_path, sandbox.url, [A, B], sending={"concurrency": 2})
    assert run.code == 3, run.err
    assert len(sandbox.received) == 1
    assert sorted(r["status"] for r in rows.values()) == ["not_sent", "not_sent"]
    assert len(leases) == 2 and leases[1].connection is None  # given back, not posted on
    assert sorted(r["code"] for r in rows.values()) == ["", "E110"]
