"""Several receivers sharing one PostgreSQL callback store: a database that goes away, and a
receiver killed mid-stream while another keeps taking callbacks."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from bulk_sender.sandbox.server import Sandbox
from tests.conftest import read_results, spawn, write_config, write_csv
from tests.delivery_helpers import (
    SECRET,
    ThreadedReceiver,
    count_events,
    post,
    query,
    store_factory,
    v2_status,
)
from tests.postgres import PgServer

STATUS = "/kaleyra/status"


def _status(n: int) -> dict[str, object]:
    return v2_status("DELIVERED", ids=(f"w{n}", f"w{n}", f"A{n}"))


def test_a_database_that_goes_away_gives_503_until_it_is_back(pg_server: PgServer) -> None:
    """Connections refused and the store's own ended: callbacks 503 and /healthz 503; once the
    database takes connections again, 200 without a restart, and nothing answered 200 is lost."""
    with pg_server.scratch_database() as (name, url):
        with ThreadedReceiver(store_factory(url)) as receiver:
            assert post(receiver + STATUS, _status(1))[0] == 200
            pg_server.admin(
                f"ALTER DATABASE {name} ALLOW_CONNECTIONS false",
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
            )
            status, answer = post(receiver + STATUS, _status(2))
            assert status == 503
            assert "again later" in answer["error"]
            assert post(receiver + "/healthz", b"", method="GET")[0] == 503
            assert post(receiver + STATUS, _status(3))[0] == 503
            pg_server.admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            assert post(receiver + "/healthz", b"", method="GET")[0] == 200
            assert post(receiver + STATUS, _status(4))[0] == 200
        stored = query(url, "SELECT message_id FROM status_ids WHERE message_id LIKE 'A%'")
        assert {"A1", "A4"} <= {i for (i,) in stored}
        assert count_events(url) <= 4


def _spawn(
    tmp_path: Path, store_url: str, *, ledger: bool = False
) -> tuple[subprocess.Popen[str], str]:
    """``bulk-sender receive`` in a process of its own, its store's URL in the environment
    (``store_env``; with ``ledger``, the audience ledger's too, the same database); the line it
    prints once it listens."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    audience: dict[str, object] = {"ledger_env": "TEST_STORE_URL"} if ledger else {}
    config = write_config(
        tmp_path / "config.toml", "", callbacks={"port": 0, "store_env": "TEST_STORE_URL"},
        audience=audience,
    )  # fmt: skip
    env = {**os.environ, "BULK_SENDER_CALLBACK_SECRET": SECRET, "PYTHONUNBUFFERED": "1",
           "TEST_STORE_URL": store_url}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "bulk_sender", "receive", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "Receiving Kaleyra callbacks on " in line, line + (
        process.stderr.read() if process.stderr else ""
    )
    return process, line


def _base_url(line: str) -> str:
    """The receiver's base URL from its start line."""
    return line.split(" on ", 1)[1].split()[0]


async def _post_to_all(
    urls: list[str], victim: subprocess.Popen[str], *, kill_after: int, enough: int
) -> set[int]:
    """16 posters spread distinct callbacks over ``urls`` (as a load balancer would); once
    ``kill_after`` were answered 200, SIGKILL ``victim``; stop at ``enough``. The ones answered
    200. (Posts to the dead receiver fail and are not counted, as Kaleyra would retry them.)"""
    acked: set[int] = set()
    numbers = itertools.count()

    async def poster(session: aiohttp.ClientSession) -> None:
        while len(acked) < enough:
            n = next(numbers)
            body = orjson.dumps(_status(n))
            try:
                async with session.post(
                    urls[n % len(urls)] + STATUS, data=body, headers={"X-Callback-Secret": SECRET}
                ) as answer:
                    if answer.status == 200:
                        acked.add(n)
            except (aiohttp.ClientError, OSError):
                pass
            if len(acked) >= kill_after and victim.poll() is None:
                victim.kill()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(poster(session) for _ in range(16)))
    return acked


def _numbers(n: int, start: int = 0) -> list[str]:
    return [f"+9198450{i:05d}" for i in range(start, start + n)]


def _spawn_sends(tmp_path: Path, sandbox: Sandbox, database: str) -> list[subprocess.Popen[str]]:
    """Two ``bulk-sender send`` processes (two hosts) with overlapping audiences under a cap of
    1, their ledger and callback store the one database."""
    config = write_config(
        tmp_path / "send.toml", sandbox.url, sending={"concurrency": 4, "rate_per_second": 200},
        callbacks={"store_env": "TEST_STORE_URL"},
        audience={"ledger_env": "TEST_STORE_URL", "frequency_cap": {"messages": 1, "hours": 24}},
    )  # fmt: skip
    campaigns = [
        write_csv(tmp_path / "a.csv", ["to", "body_text"], [[n, "Diwali"] for n in _numbers(300)]),
        write_csv(
            tmp_path / "b.csv", ["to", "body_text"], [[n, "Winter"] for n in _numbers(300, 100)]
        ),
    ]
    return [
        spawn("send", campaign, "--config", config, env_extra={"TEST_STORE_URL": database})
        for campaign in campaigns
    ]


@pytest.mark.slow
def test_two_receivers_and_two_senders_on_one_database_lose_nothing_when_one_is_killed(
    tmp_path: Path, pg_server: PgServer, sandbox: Sandbox
) -> None:
    """Two `receive` processes and two `send`s share one PostgreSQL database (the callback
    store and the audience ledger); one receiver is SIGKILLed mid-stream: every callback
    answered 200 is in the store, and the sends, under a cap of 1 with overlapping audiences,
    gave each recipient exactly one request, each with its slot in the ledger."""
    store = pg_server.fresh_location()
    first, first_line = _spawn(tmp_path / "a", store, ledger=True)
    second, second_line = _spawn(tmp_path / "b", store, ledger=True)
    first_url, second_url = _base_url(first_line), _base_url(second_line)
    sends = _spawn_sends(tmp_path, sandbox, store)
    try:
        acked = asyncio.run(
            _post_to_all([first_url, second_url], first, kill_after=300, enough=900)
        )
        assert first.wait(timeout=60) == -signal.SIGKILL
        assert second.poll() is None  # the other one kept going
        for send in sends:
            _out, err = send.communicate(timeout=120)
            assert send.returncode == 0, err
    finally:
        for process in (first, second, *sends):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    stored = {
        int(i[1:])
        for (i,) in query(store, "SELECT message_id FROM status_ids WHERE message_id LIKE 'A%'")
    }
    assert len(acked) >= 900
    assert acked <= stored
    assert sorted(sandbox.counts().items()) == [(n, 1) for n in _numbers(400)]
    assert query(store, "SELECT COUNT(*), COUNT(DISTINCT recipient) FROM sends") == [(400, 400)]
    rows = [row for name in ("a", "b") for row in read_results(tmp_path / f"{name}.results.csv")]
    assert len(rows) == 600
    assert sorted(r["to"] for r in rows if r["status"] == "sent") == _numbers(400)
    assert {r["status"] for r in rows} == {"sent", "suppressed"}


def test_receive_never_shows_the_password_of_its_store(tmp_path: Path, pg_server: PgServer) -> None:
    """A URL with a password in store_env: the start line and the log show it redacted."""
    store = pg_server.fresh_location().replace("postgres@", "postgres:Pa55-w0rd@", 1)
    process, line = _spawn(tmp_path, store)
    assert ":***@" in line
    assert post(_base_url(line) + STATUS, _status(1))[0] == 200
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert "Pa55-w0rd" not in out + err
    assert process.returncode == 0
