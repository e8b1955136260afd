"""``receive --workers N``: several receiver processes on one port, every guarantee kept."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import IO

import aiohttp
import orjson
import pytest

from tests.conftest import CliRunner, write_config
from tests.delivery_helpers import SECRET, post, v2_status

STATUS = "/kaleyra/status"

pytestmark = pytest.mark.slow


def _spawn(tmp_path: Path, workers: int = 2) -> tuple[subprocess.Popen[str], str]:
    """``bulk-sender receive --workers N`` as a process of its own; its base URL once it listens."""
    config = tmp_path / "config.toml"
    if not config.exists():
        write_config(config, "", callbacks={"port": 0, "store": "callbacks.db"})
    env = {**os.environ, "BULK_SENDER_CALLBACK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bulk_sender", "receive", "--config", str(config),
         "--workers", str(workers)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert f"{workers} workers)" in line, line + (process.stderr.read() if process.stderr else "")
    return process, line.split(" on ", 1)[1].split()[0]


def _workers_of(parent: int) -> list[int]:
    """The pids of the receiver workers of ``parent`` (multiprocessing's spawned children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent and b"spawn_main" in command:
            found.append(int(entry.name))
    return sorted(found)


def _wait_gone(pid: int) -> None:
    """Block until process ``pid`` (not a child of ours) has exited."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        readable, _, _ = select.select([handle], [], [], 60)
        assert readable, f"process {pid} is still running"
    finally:
        os.close(handle)


def _read_until(stream: IO[str] | None, marker: str) -> None:
    assert stream is not None
    for line in stream:
        if marker in line:
            return
    raise AssertionError(f"{marker} never logged")


def _stored_ids(tmp_path: Path) -> set[int]:
    with closing(sqlite3.connect(tmp_path / "callbacks.db")) as db:
        return {
            int(i[1:])
            for (i,) in db.execute("SELECT message_id FROM status_ids WHERE message_id LIKE 'A%'")
        }


async def _post_many(url: str, numbers: range, on_acked: object = None) -> set[int]:
    """Post one callback per number from 16 senders, each on new connections; those answered
    200. A connection error (a worker killed under it) is retried, as Kaleyra does."""
    acked: set[int] = set()
    work = iter(numbers)

    async def sender() -> None:
        connector = aiohttp.TCPConnector(
            force_close=True
        )  # new connections: every worker gets some
        async with aiohttp.ClientSession(connector=connector) as session:
            for n in work:
                body = orjson.dumps(v2_status("DELIVERED", ids=(f"w{n}", f"w{n}", f"A{n}")))
                for _ in range(50):
                    try:
                        async with session.post(
                            url + STATUS, data=body, headers={"X-Callback-Secret": SECRET}
                        ) as answer:
                            if answer.status == 200:
                                acked.add(n)
                                break
                    except (aiohttp.ClientError, OSError):
                        continue
                if callable(on_acked):
                    on_acked(len(acked))

    await asyncio.gather(*(sender() for _ in range(16)))
    return acked


def test_the_workers_share_the_port_and_sigterm_stops_them_all_after_committing(
    tmp_path: Path,
) -> None:
    """Two workers answer on one port; SIGTERM: every answered callback is stored, all exit 0."""
    process, url = _spawn(tmp_path)
    workers = _workers_of(process.pid)
    assert len(workers) == 2
    assert post(url + "/healthz", b"", method="GET")[0] == 200
    acked = asyncio.run(_post_many(url, range(400)))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    for pid in workers:
        _wait_gone(pid)
    assert acked == set(range(400))
    assert _stored_ids(tmp_path) == acked


def test_a_killed_worker_is_replaced_and_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    """SIGKILL of one worker mid-flood: it is started again, and every 200 is in the store."""
    process, url = _spawn(tmp_path)
    victim = _workers_of(process.pid)[0]
    killed: list[int] = []

    def kill_once(acked: int) -> None:
        if acked >= 150 and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    acked = asyncio.run(_post_many(url, range(600), kill_once))
    assert killed
    _read_until(process.stderr, "bulk_sender.receiver_worker_died")
    _read_until(process.stderr, "bulk_sender.receiving")  # its replacement listens
    workers = _workers_of(process.pid)
    assert len(workers) == 2 and victim not in workers
    acked |= asyncio.run(_post_many(url, range(600, 700)))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert len(acked) >= 650
    assert acked <= _stored_ids(tmp_path)


def test_the_workers_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the parent: the workers see it gone, finish and exit; nothing answered is lost."""
    process, url = _spawn(tmp_path)
    workers = _workers_of(process.pid)
    acked = asyncio.run(_post_many(url, range(100)))
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    for pid in workers:
        _wait_gone(pid)
    assert acked <= _stored_ids(tmp_path)


def test_a_port_taken_by_another_program_is_exit_2(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port some other program listens on: exit 2 with one line, no worker started."""
    monkeypatch.setenv("BULK_SENDER_CALLBACK_SECRET", SECRET)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "config.toml", "", callbacks={"port": port})
        run = cli("receive", "--config", config, "--workers", "2")
        assert run.code == 2
        assert f"cannot listen on 127.0.0.1:{port}" in run.err


@pytest.mark.parametrize("workers", ["0", "17", "two"])
def test_workers_out_of_range_is_a_usage_error(
    cli: CliRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    """--workers outside 1..16: exit 2 naming the flag."""
    config = write_config(tmp_path / "config.toml", "", callbacks={"port": 0})
    with pytest.raises(SystemExit) as exited:
        cli("receive", "--config", config, "--workers", workers)
    assert exited.value.code == 2
    assert "--workers: must be a whole number from 1 to 16" in capsys.readouterr().err
