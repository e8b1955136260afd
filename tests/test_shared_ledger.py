"""The audience ledger on PostgreSQL, end to end: a database that goes away mid-send, and
STOP/START replies through the receiver into it.

(Two sends under one cap against one ledger run on both backends in ``test_audience_send.py``;
two senders and two receivers on one database, one receiver killed, in ``test_shared_store.py``.)
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from bulk_sender.sandbox.server import Sandbox
from tests.conftest import CliRunner, LocationFactory, read_results, spawn, write_config, write_csv
from tests.delivery_helpers import SECRET, post, query
from tests.postgres import PgServer
from tests.test_audience_send import LEDGER_ENV, _incoming, _numbers, _wait_for


def test_a_ledger_that_goes_away_mid_send_stops_it_and_the_resume_sends_the_rest_once(
    tmp_path: Path, sandbox: Sandbox, pg_server: PgServer
) -> None:
    """The ledger's database refuses connections and its sessions are ended while a send
    takes slots: the send stops with exit 3 and one line (no password, no traceback); once the
    database is back, the same command sends what was left: every recipient exactly one
    request, every row in the results, sent. (At 100 messages a second the send has seconds
    left when the database goes, after its 40th message.)"""
    numbers = _numbers(600)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(
        tmp_path / "config.toml", sandbox.url, sending={"concurrency": 4, "rate_per_second": 100},
        audience={"ledger_env": LEDGER_ENV, "frequency_cap": {"messages": 1, "hours": 24}},
    )  # fmt: skip
    with pg_server.scratch_database() as (name, url):
        secret_url = url.replace("postgres@", "postgres:Pa55-w0rd@", 1)
        env = {LEDGER_ENV: secret_url}
        send = spawn("send", campaign, "--config", config, env_extra=env)
        _wait_for(lambda: len(sandbox.accepted()) >= 40 or send.poll() is not None)
        pg_server.admin(
            f"ALTER DATABASE {name} ALLOW_CONNECTIONS false",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
        out, err = send.communicate(timeout=120)
        assert send.returncode == 3, err
        [line] = [line for line in err.splitlines() if line.startswith("bulk-sender: ")]
        assert "audience ledger postgresql://postgres:***@" in line, err
        assert "Traceback" not in err, err
        assert "Pa55-w0rd" not in out + err
        stopped_at = len(sandbox.accepted())
        assert stopped_at < len(numbers)
        pg_server.admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        resume = spawn("send", campaign, "--config", config, env_extra=env)
        out, err = resume.communicate(timeout=120)
        assert resume.returncode == 0, err
        slots = query(url, "SELECT COUNT(*), COUNT(DISTINCT recipient) FROM sends")
    assert sorted(Counter(r.to for r in sandbox.accepted()).items()) == [(n, 1) for n in numbers]
    rows = read_results(tmp_path / "c.results.csv")
    assert sorted(r["to"] for r in rows) == numbers
    assert {r["status"] for r in rows} == {"sent"}
    assert slots == [(600, 600)]


def test_stop_and_start_replies_through_the_receiver_into_a_postgresql_ledger(
    tmp_path: Path,
    sandbox: Sandbox,
    cli: CliRunner,
    new_location: LocationFactory,
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`receive` with the ledger on PostgreSQL (the callback store on either backend): a STOP
    reply holds the next campaign back, a START after it lets the one after through."""
    store = new_location()
    ledger = pg_server.fresh_location()
    number = _numbers(1)[0]
    config = write_config(
        tmp_path / "config.toml", sandbox.url, sending={"concurrency": 4},
        audience={"repeat_guard_hours": 0, "ledger_env": LEDGER_ENV},
        callbacks={"port": 0, "store_env": "TEST_STORE_URL"},
    )  # fmt: skip
    env = {"BULK_SENDER_CALLBACK_SECRET": SECRET, LEDGER_ENV: ledger, "TEST_STORE_URL": store}
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)  # for the sends, in this process
    receiver = spawn("receive", "--config", config, env_extra=env)
    try:
        assert receiver.stdout is not None
        line = receiver.stdout.readline()
        assert "Receiving Kaleyra callbacks on " in line, line
        url = line.split(" on ", 1)[1].split()[0] + "/kaleyra/incoming"
        assert post(url, _incoming(number, "Stop.", 1_795_600_000))[0] == 200
        held = cli("send", write_csv(tmp_path / "a.csv", ["to"], [[number]]), "--config", config)
        assert held.code == 0, held.err
        [row] = read_results(tmp_path / "a.results.csv")
        assert (row["status"], row["code"]) == ("suppressed", "OPTED_OUT")
        assert row["error"].endswith("by a STOP reply")
        assert post(url, _incoming(number, "START", 1_795_600_060))[0] == 200
        sent = cli("send", write_csv(tmp_path / "b.csv", ["to"], [[number]]), "--config", config)
        assert sent.code == 0, sent.err
        assert sandbox.count(number) == 1
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.communicate(timeout=60)
    assert receiver.returncode == 0
    assert query(ledger, "SELECT opted_out, opt_by FROM recipients") == [(0, "a START reply")]


def test_a_postgresql_ledger_that_cannot_be_reached_stops_before_anything_is_sent(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens at the ledger's URL: exit 3, one line naming it without its password,
    no request sent."""
    monkeypatch.setenv(LEDGER_ENV, "postgresql://bulk:Pa55-w0rd@127.0.0.1:1/bulk")
    config = write_config(
        tmp_path / "config.toml", sandbox.url, audience={"ledger_env": LEDGER_ENV}
    )
    run = cli("send", write_csv(tmp_path / "c.csv", ["to"], [[n] for n in _numbers(2)]),
              "--config", config)  # fmt: skip
    assert run.code == 3
    [line] = [line for line in run.err.splitlines() if line.startswith("bulk-sender: ")]
    assert "postgresql://bulk:***@127.0.0.1:1/bulk: the server cannot be reached" in line
    assert "Pa55-w0rd" not in run.out + run.err
    assert sandbox.received == []
