"""Errors that every request would get stop the run, leaving its rows not_sent (issue 13/4).

A base_url typo (404 on every request), a host that never answers, a certificate nobody can
verify: each would fail every row in turn and burn the campaign up to the error threshold. The
run stops instead (exit 3), says what to fix in one line, and "the same command" sends every
row once it is fixed. A connect failure after the server answered stays one row's problem.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bulk_sender.errors import TransportError
from bulk_sender.sandbox.server import Sandbox
from tests.conftest import CliRunner, Run, read_results, write_config, write_csv
from tests.rawhttp import free_port

NUMBERS = [f"+9198765{i:05d}" for i in range(12)]


def _send(
    cli: CliRunner, tmp_path: Path, url: str, *extra: str, **sections: dict[str, object]
) -> tuple[Run, list[dict[str, str]]]:
    config = write_config(tmp_path / "config.toml", url, **sections)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in NUMBERS])
    out = tmp_path / "r.csv"
    run = cli("send", campaign, "--config", config, "--out", out, *extra)
    return run, read_results(out)


def _stop_line(run: Run) -> str:
    (line,) = [text for text in run.out.splitlines() if text.startswith("Stopped")]
    return line


def test_a_wrong_path_stops_at_the_first_404_and_resumes_once_fixed(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A base_url typo: the 404s stop the run (exit 3), every row stays not_sent, and the same
    campaign with the right base_url sends each row exactly once."""
    run, rows = _send(cli, tmp_path, sandbox.url + "/kaleyraa", sending={"concurrency": 2})
    assert run.code == 3
    assert {row["status"] for row in rows} == {"not_sent"}
    assert len(sandbox.received) <= 2  # the requests in flight when the first 404 came back
    line = _stop_line(run)
    assert "(ENDPOINT_404)" in line and "[kaleyra] base_url" in line
    assert f"remaining {len(NUMBERS)} rows" in line
    run, rows = _send(cli, tmp_path, sandbox.url, sending={"concurrency": 2})
    assert run.code == 0
    assert {row["status"] for row in rows} == {"sent"}
    assert sorted(record.to for record in sandbox.accepted()) == sorted(NUMBERS)


def test_nothing_listening_from_the_start_stops_the_run(tmp_path: Path, cli: CliRunner) -> None:
    """Connection refused on the first attempts, with nothing ever reached: exit 3 after
    min(3, max_attempts) failures, every row not_sent, none failed."""
    url = f"http://127.0.0.1:{free_port()}"
    run, rows = _send(cli, tmp_path, url, sending={"max_attempts": 2, "concurrency": 1})
    assert run.code == 3
    assert {row["status"] for row in rows} == {"not_sent"}
    assert {row["code"] for row in rows if row["code"]} == {"CONNECT_ERROR"}
    assert sum(int(row["attempts"]) for row in rows) == 2
    line = _stop_line(run)
    assert "Connection refused" in line and "nothing has reached the server" in line


def test_a_connect_failure_after_an_answer_is_retried_then_failed(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once Kaleyra has answered, a row whose connections fail is retried within max_attempts
    and then failed, as before; the run goes on with the others."""
    from bulk_sender.sending.client import Answer, KaleyraClient, Lease

    post = KaleyraClient.post
    calls = 0

    async def flaky(self: KaleyraClient, body: bytes, lease: Lease | None = None) -> Answer:
        nonlocal calls
        calls += 1
        if NUMBERS[1].encode() in body:
            raise TransportError("cannot connect: Connection refused", phase="connect")
        return await post(self, body, lease)

    monkeypatch.setattr(KaleyraClient, "post", flaky)
    run, rows = _send(cli, tmp_path, sandbox.url, sending={"concurrency": 1, "max_attempts": 3})
    assert run.code == 1
    by_to = {row["to"]: row for row in rows}
    assert (by_to[NUMBERS[1]]["status"], by_to[NUMBERS[1]]["attempts"]) == ("failed", "3")
    assert by_to[NUMBERS[1]]["code"] == "CONNECT_ERROR"
    assert {by_to[n]["status"] for n in NUMBERS if n != NUMBERS[1]} == {"sent"}
