"""The audience rules end to end: real sends to the sandbox, one ledger shared by campaigns.

Counting is at the sandbox: what matters is how many requests each recipient got.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from bulk_sender.audience.incoming import IncomingText, apply_incoming
from bulk_sender.config import AudienceSettings
from bulk_sender.sandbox.server import Behaviour, Sandbox
from bulk_sender.stores.ledger import open_ledger
from tests.conftest import CliRunner, read_results, spawn, write_config, write_csv
from tests.delivery_helpers import SECRET, post


def _numbers(n: int, start: int = 0) -> list[str]:
    return [f"+9198450{i:05d}" for i in range(start, start + n)]


def _campaign(path: Path, numbers: list[str], body: str | None = None) -> Path:
    if body is None:
        return write_csv(path, ["to"], [[n] for n in numbers])
    return write_csv(path, ["to", "body_text"], [[n, body] for n in numbers])


def _config(tmp_path: Path, sandbox: Sandbox, **audience: object) -> Path:
    return write_config(
        tmp_path / "config.toml", sandbox.url, sending={"concurrency": 4}, audience=audience
    )


def _by_status(results: Path) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in read_results(results):
        grouped.setdefault(row["status"], []).append(row)
    return grouped


def _accepted(sandbox: Sandbox) -> list[tuple[str, int]]:
    """How many messages the sandbox accepted per recipient (E110 refusals are not messages)."""
    return sorted(Counter(r.to for r in sandbox.accepted()).items())


def _wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the time limit")
        time.sleep(0.01)


def _finish(*procs: subprocess.Popen[str]) -> list[int]:
    codes = []
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 1), err
        codes.append(proc.returncode)
    return codes


# -- the repeat guard: the double-send paths ----------------------------------------------------


def _stopped_campaign(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, rows: int, accepted: int
) -> tuple[Path, Path, Path, list[str]]:
    """A campaign stopped by a low balance after ``accepted`` messages, its export written."""
    numbers = _numbers(rows)
    campaign = _campaign(tmp_path / "diwali.csv", numbers)
    config = _config(tmp_path, sandbox)
    sandbox.faults.balance = accepted
    stopped = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
    assert stopped.code == 3, stopped.err
    sandbox.faults.balance = None
    return campaign, config, tmp_path / "r.failed.csv", numbers


def test_the_failed_export_then_the_resume_sends_each_row_once(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Sending the export and then resuming: the resume holds back what the export sent."""
    campaign, config, export, numbers = _stopped_campaign(tmp_path, sandbox, cli, 20, 7)
    retry = cli("send", export, "--config", config, "--out", tmp_path / "retry.csv")
    assert retry.code == 0, retry.err
    resumed = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
    assert resumed.code == 0, resumed.err
    assert _accepted(sandbox) == [(n, 1) for n in numbers]
    held = _by_status(tmp_path / "r.csv")["suppressed"]
    assert len(held) == 13
    assert {row["code"] for row in held} == {"REPEAT_GUARD"}
    assert all(row["error"].endswith("ago by campaign r.failed.csv") for row in held)
    assert "REPEAT_GUARD" in resumed.out


def test_the_resume_and_the_export_run_at_the_same_time_send_each_row_once(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Started together, they share the not_sent rows out between them: one request each."""
    campaign, config, export, numbers = _stopped_campaign(tmp_path, sandbox, cli, 120, 10)
    fix = tmp_path / "fix1.csv"  # a copy, as the docs say: every run rewrites the export
    fix.write_bytes(export.read_bytes())
    sandbox.faults.latency = 0.005
    resume = spawn("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
    retry = spawn("send", fix, "--config", config, "--out", tmp_path / "retry.csv")
    assert _finish(resume, retry) == [0, 0]
    assert _accepted(sandbox) == [(n, 1) for n in numbers]
    sent = [r["to"] for f in ("r.csv", "retry.csv") for r in read_results(tmp_path / f)]
    assert len(sent) == 120 + 110


def test_a_copy_another_out_or_a_restart_sends_nobody_the_message_again(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """The campaign under another name, with another --out, and restarted: nothing is resent."""
    numbers = _numbers(6)
    campaign = _campaign(tmp_path / "c.csv", numbers)
    config = _config(tmp_path, sandbox)
    assert cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv").code == 0
    copy = _campaign(tmp_path / "copy.csv", numbers)
    for path, out in ((copy, "copy.csv.out"), (campaign, "other.csv")):
        run = cli("send", path, "--config", config, "--out", tmp_path / out)
        assert run.code == 0, run.err
        assert {r["code"] for r in read_results(tmp_path / out)} == {"REPEAT_GUARD"}
    restarted = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv", "--restart")
    assert restarted.code == 0, restarted.err
    assert sorted(sandbox.counts().items()) == [(n, 1) for n in numbers]


def test_another_message_to_the_same_people_is_sent(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """The guard is about the same message: a new text goes out (no cap is set)."""
    numbers = _numbers(3)
    config = _config(tmp_path, sandbox)
    first = _campaign(tmp_path / "a.csv", numbers, "Diwali offers")
    second = _campaign(tmp_path / "b.csv", numbers, "New year offers")
    assert cli("send", first, "--config", config, "--out", tmp_path / "a.out").code == 0
    assert cli("send", second, "--config", config, "--out", tmp_path / "b.out").code == 0
    assert sorted(sandbox.counts().values()) == [2, 2, 2]


def test_a_rehearsal_reads_the_ledger_and_never_writes_it(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--sandbox holds back what the real send would, and leaves nothing that holds it back."""
    numbers = _numbers(4)
    campaign = _campaign(tmp_path / "c.csv", numbers)
    config = _config(tmp_path, sandbox)
    rehearsal = cli("send", campaign, "--config", config, "--sandbox")
    assert rehearsal.code == 0, rehearsal.err
    assert not (tmp_path / "ledger.db").exists()
    assert cli("send", campaign, "--config", config).code == 0
    assert sorted(sandbox.counts()) == numbers
    again = cli("send", campaign, "--config", config, "--sandbox", "--out", tmp_path / "r2.csv")
    assert again.code == 0, again.err
    assert {r["code"] for r in read_results(tmp_path / "r2.csv")} == {"REPEAT_GUARD"}


def test_ledger_off_sends_like_before(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """ledger = "": no ledger file, and a second --out sends every row again."""
    numbers = _numbers(3)
    campaign = _campaign(tmp_path / "c.csv", numbers)
    config = _config(tmp_path, sandbox, ledger="")
    for out in ("a.csv", "b.csv"):
        assert cli("send", campaign, "--config", config, "--out", tmp_path / out).code == 0
    assert sorted(sandbox.counts().values()) == [2, 2, 2]
    assert not (tmp_path / "ledger.db").exists()


# -- the frequency cap -----------------------------------------------------------------------


#: The variable a test's config names in ``ledger_env`` (the ledger's location, as a
#: deployment passes a URL with its password).
LEDGER_ENV = "TEST_LEDGER_URL"


def test_two_campaigns_started_together_under_a_cap_of_one(
    tmp_path: Path, sandbox: Sandbox, backend: str
) -> None:
    """Overlapping audiences, different messages, two processes at once (two hosts, with a
    PostgreSQL ledger), cap 1: every recipient gets exactly one request, and each overlapping
    row is sent by one campaign, held by the other."""
    config = _config(
        tmp_path, sandbox, frequency_cap={"messages": 1, "hours": 24}, ledger_env=LEDGER_ENV
    )
    first = _campaign(tmp_path / "a.csv", _numbers(150), "Diwali offers")
    second = _campaign(tmp_path / "b.csv", _numbers(150, start=50), "Winter sale")
    sandbox.faults.latency = 0.002
    procs = [
        spawn(
            "send",
            path,
            "--config",
            config,
            "--out",
            tmp_path / f"{path.stem}.out",
            env_extra={LEDGER_ENV: backend},
        )
        for path in (first, second)
    ]
    assert _finish(*procs) == [0, 0]
    assert sorted(sandbox.counts().items()) == [(n, 1) for n in _numbers(200)]
    sent: dict[str, int] = {}
    for name in ("a.out", "b.out"):
        groups = _by_status(tmp_path / name)
        for row in groups.get("sent", []):
            sent[row["to"]] = sent.get(row["to"], 0) + 1
        assert {r["code"] for r in groups.get("suppressed", [])} <= {"FREQUENCY_CAP"}
        assert all(
            r["error"] == "1 message in the last 24 h (cap 1)" for r in groups.get("suppressed", [])
        )
    assert sorted(sent) == _numbers(200)
    assert set(sent.values()) == {1}


def test_a_slot_is_given_back_only_when_the_message_provably_did_not_arrive(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Under a cap of 1: refused by Kaleyra (WA400) or throttled out (503s): the next campaign
    may send; a lost answer (unknown) or server errors (may have arrived): it may not."""
    refused, throttled, lost, errors = _numbers(4)
    sandbox.faults.retry_after = "0"
    sandbox.faults.scripts = {
        refused: [Behaviour.WA400],
        throttled: [Behaviour.S503] * 3,
        lost: [Behaviour.NOT_JSON],
        errors: [Behaviour.WA500] * 3,
    }
    config = _config(tmp_path, sandbox, frequency_cap={"messages": 1, "hours": 24})
    numbers = [refused, throttled, lost, errors]
    first = _campaign(tmp_path / "a.csv", numbers, "Diwali offers")
    assert cli("send", first, "--config", config, "--out", tmp_path / "a.out").code == 1
    second = _campaign(tmp_path / "b.csv", numbers, "Winter sale")
    assert cli("send", second, "--config", config, "--out", tmp_path / "b.out").code == 0
    statuses = {r["to"]: r["status"] for r in read_results(tmp_path / "b.out")}
    assert statuses == {
        refused: "sent", throttled: "sent", lost: "suppressed", errors: "suppressed",
    }  # fmt: skip


def test_a_stop_while_waiting_to_retry_gives_the_slot_back(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """Answered 503 with a long Retry-After, then stopped (SIGTERM) before the retry left: the
    row is not_sent and another campaign under the cap may send it."""
    number = _numbers(1)[0]
    sandbox.faults.retry_after = "60"
    sandbox.faults.scripts = {number: [Behaviour.S503]}
    config = _config(tmp_path, sandbox, frequency_cap={"messages": 1, "hours": 24})
    first = _campaign(tmp_path / "a.csv", [number], "Diwali offers")
    proc = spawn("send", first, "--config", config, "--out", tmp_path / "a.out")
    _wait_for(lambda: sandbox.count(number) == 1 or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert [r["status"] for r in read_results(tmp_path / "a.out")] == ["not_sent"]
    sandbox.faults.retry_after = "0"
    second = _campaign(tmp_path / "b.csv", [number], "Winter sale")
    proc = spawn("send", second, "--config", config, "--out", tmp_path / "b.out")
    assert _finish(proc) == [0]
    assert [r["status"] for r in read_results(tmp_path / "b.out")] == ["sent"]


# -- opt-outs --------------------------------------------------------------------------------


def test_opt_out_files_and_the_optout_command_hold_rows_back(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, backend: str
) -> None:
    """Listed in a file, or added by hand: suppressed with the reason; exit 0. Removed by hand:
    sent again. (The ledger in the config: a file, or a PostgreSQL URL.)"""
    a, b, c, d = _numbers(4)
    (tmp_path / "optouts.csv").write_text(f"Mobile No.\n{a[3:]}\n")
    config = _config(tmp_path, sandbox, opt_out_files=["optouts.csv"], ledger=backend)
    added = cli("optout", "add", b, "--note", "asked on the phone", "--config", config)
    assert added.code == 0, added.err
    listed = cli("optout", "list", "--config", config)
    assert f"{b}," in listed.out and "hand (asked on the phone)" in listed.out
    assert f"{a},,the opt-out file optouts.csv" in listed.out
    run = cli("send", _campaign(tmp_path / "c.csv", [a, b, c]), "--config", config)
    assert run.code == 0, run.err
    rows = {
        r["to"]: (r["status"], r["code"], r["error"])
        for r in read_results(tmp_path / "c.results.csv")
    }
    assert rows[a] == (
        "suppressed", "OPTED_OUT", "opted out: listed in the opt-out file optouts.csv"
    )  # fmt: skip
    assert rows[b][:2] == ("suppressed", "OPTED_OUT")
    assert rows[b][2].startswith("opted out on ") and rows[b][2].endswith(
        "by hand (asked on the phone)"
    )
    assert rows[c][0] == "sent"
    removed = cli("optout", "remove", a, b, "--config", config)
    assert removed.code == 1  # a is still in the file
    assert "optouts.csv" in removed.err
    again = cli("send", _campaign(tmp_path / "d.csv", [a, b, d]), "--config", config)
    assert again.code == 0, again.err
    assert sorted(sandbox.counts()) == [b, c, d]


def test_an_opt_out_file_that_cannot_be_read_stops_before_anything_is_sent(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """A damaged number in the opt-out file: exit 2, the file and row named, nothing sent."""
    (tmp_path / "optouts.csv").write_text("phone\n9.19845E+11\n")
    config = _config(tmp_path, sandbox, opt_out_files=["optouts.csv"])
    run = cli("send", _campaign(tmp_path / "c.csv", _numbers(2)), "--config", config)
    assert run.code == 2
    assert "optouts.csv" in run.err and "data row 1" in run.err
    assert sandbox.received == []


def _incoming(number: str, text: str, at: int) -> dict[str, object]:
    """A v2 incoming-message callback, as Kaleyra posts it."""
    message = {"from": number.lstrip("+"), "id": f"wamid.{at}", "timestamp": str(at),
               "type": "text", "text": {"body": text}}  # fmt: skip
    return {"meta_object": {"value": {"messages": [message]}}}


def test_stop_and_start_replies_through_the_receiver(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """bulk-sender receive, sharing the ledger: a STOP reply holds the next campaign back, a
    START after it lets the one after through; the reply is acknowledged once recorded."""
    number = _numbers(1)[0]
    config = write_config(
        tmp_path / "config.toml", sandbox.url, sending={"concurrency": 4},
        audience={"repeat_guard_hours": 0}, callbacks={"port": 0, "store": "callbacks.db"},
    )  # fmt: skip
    env = {"BULK_SENDER_CALLBACK_SECRET": SECRET}
    receiver = spawn("receive", "--config", config, env_extra=env)
    try:
        assert receiver.stdout is not None
        line = receiver.stdout.readline()
        assert "Receiving Kaleyra callbacks on " in line, line
        url = line.split(" on ", 1)[1].split()[0] + "/kaleyra/incoming"
        assert post(url, _incoming(number, "Stop.", 1_795_600_000))[0] == 200
        held = cli("send", _campaign(tmp_path / "a.csv", [number]), "--config", config)
        assert held.code == 0, held.err
        [row] = read_results(tmp_path / "a.results.csv")
        assert (row["status"], row["code"]) == ("suppressed", "OPTED_OUT")
        assert row["error"].endswith("by a STOP reply")
        assert post(url, _incoming(number, "START", 1_795_600_060))[0] == 200
        sent = cli("send", _campaign(tmp_path / "b.csv", [number]), "--config", config)
        assert sent.code == 0, sent.err
        assert sandbox.count(number) == 1
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.communicate(timeout=60)
    assert receiver.returncode == 0


def test_stop_and_start_through_the_ledger_api(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """The call the receiver makes, directly: an out-of-order START older than the STOP does
    not opt back in."""
    number = _numbers(1)[0]
    config = _config(tmp_path, sandbox, repeat_guard_hours=0)

    def reply(text: str, at: str) -> None:
        async def main() -> None:
            ledger = await open_ledger(str(tmp_path / "ledger.db"))
            assert ledger is not None
            try:
                texts = [IncomingText(number[1:], at, text)]
                await apply_incoming(ledger, texts, AudienceSettings())
            finally:
                await ledger.close()

        asyncio.run(main())

    reply(" Stop ", "2026-11-20T10:00:00Z")
    reply("START", "2026-11-20T09:00:00Z")  # older: arrived late
    held = cli("send", _campaign(tmp_path / "a.csv", [number]), "--config", config)
    assert held.code == 0, held.err
    [row] = read_results(tmp_path / "a.results.csv")
    assert (row["status"], row["error"]) == (
        "suppressed", "opted out on 2026-11-20 by a STOP reply"
    )  # fmt: skip
    assert sandbox.received == []


# -- the service window, the dry run, a ledger that cannot be written ----------------------------


def test_the_service_window_warns_or_skips(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """warn: sent with a warning; skip: held back unless the customer wrote in the last 24 h."""
    wrote, silent = _numbers(2)
    campaign = _campaign(tmp_path / "c.csv", [wrote, silent])

    async def note() -> None:
        ledger = await open_ledger(str(tmp_path / "ledger.db"))
        assert ledger is not None
        try:
            await ledger.note_incoming([(int(wrote[1:]), time.time_ns() // 1_000_000 - 60_000)])
        finally:
            await ledger.close()

    asyncio.run(note())
    warn = _config(tmp_path, sandbox, service_window="warn", repeat_guard_hours=0)
    assert cli("send", campaign, "--config", warn, "--out", tmp_path / "w.csv").code == 0
    warned = {r["to"]: r["warning"] for r in read_results(tmp_path / "w.csv")}
    assert warned[wrote] == ""
    assert "customer-service window" in warned[silent]
    skip = _config(tmp_path, sandbox, service_window="skip", repeat_guard_hours=0)
    assert cli("send", campaign, "--config", skip, "--out", tmp_path / "s.csv").code == 0
    skipped = {r["to"]: (r["status"], r["error"]) for r in read_results(tmp_path / "s.csv")}
    assert skipped == {
        wrote: ("sent", ""),
        silent: ("suppressed", "no message from this customer in the last 24 h"),
    }


def test_a_dry_run_counts_what_each_rule_would_hold_back_and_writes_nothing(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Per rule: how many rows, with example rows and reasons, in the summary and its JSON."""
    numbers = _numbers(5)
    (tmp_path / "optouts.csv").write_text(f"phone\n{numbers[4]}\n")
    config = _config(tmp_path, sandbox, opt_out_files=["optouts.csv"])
    assert cli("send", _campaign(tmp_path / "old.csv", numbers[:2]), "--config", config).code == 0
    ledger = tmp_path / "ledger.db"
    before = (ledger.stat().st_mtime_ns, ledger.stat().st_size)
    summary = tmp_path / "dry.json"
    dry = cli(
        "send", _campaign(tmp_path / "new.csv", numbers), "--config", config, "--dry-run",
        "--summary-json", summary,
    )  # fmt: skip
    assert dry.code == 0, dry.err
    doc = orjson.loads(summary.read_bytes())
    assert doc["statuses"] == {"valid": 2, "invalid": 0, "duplicate": 0, "suppressed": 3}
    held = doc["audience"]["held_back"]
    assert held["REPEAT_GUARD"]["count"] == 2
    assert held["REPEAT_GUARD"]["examples"][0]["row"] == 1
    assert held["OPTED_OUT"] == {
        "count": 1,
        "examples": [{"row": 5, "reason": "opted out: listed in the opt-out file optouts.csv"}],
    }
    assert "would hold back now" in dry.out and "REPEAT_GUARD" in dry.out
    assert (ledger.stat().st_mtime_ns, ledger.stat().st_size) == before
    assert len(sandbox.received) == 2


def test_a_ledger_that_cannot_be_opened_stops_before_anything_is_sent(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Its path under a regular file: exit 3, one line naming it, no request, rows not_sent."""
    (tmp_path / "blocked").write_text("")
    config = _config(tmp_path, sandbox, ledger="blocked/ledger.db")
    run = cli("send", _campaign(tmp_path / "c.csv", _numbers(2)), "--config", config)
    assert run.code == 3
    assert "blocked/ledger.db" in run.err
    assert sandbox.received == []


def test_a_dry_run_planned_in_a_second_process_finds_the_same(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """planner = "process" or "inline": the same verdicts, reasons, counts and examples."""
    numbers = _numbers(40)
    (tmp_path / "optouts.csv").write_text(f"phone\n{numbers[7]}\n")
    base = _config(tmp_path, sandbox, opt_out_files=["optouts.csv"])
    assert cli("send", _campaign(tmp_path / "old.csv", numbers[:5]), "--config", base).code == 0
    rows = [[n, "x"] for n in numbers] + [["12", "x"], [numbers[3], "dup"]]
    campaign = write_csv(tmp_path / "new.csv", ["to", "name"], rows)
    found = []
    for planner in ("inline", "process"):
        config = write_config(
            tmp_path / "config.toml", sandbox.url, sending={"planner": planner},
            audience={"opt_out_files": ["optouts.csv"]},
        )  # fmt: skip
        verdicts, summary = tmp_path / f"{planner}.csv", tmp_path / f"{planner}.json"
        run = cli(
            "send", campaign, "--config", config, "--dry-run", "--out", verdicts,
            "--summary-json", summary,
        )  # fmt: skip
        assert run.code == 1, run.err  # the row "12" is invalid
        doc = orjson.loads(summary.read_bytes())
        found.append((read_results(verdicts), doc["statuses"], doc["audience"]))
    assert found[0] == found[1]
    assert found[0][1] == {"valid": 34, "invalid": 1, "duplicate": 1, "suppressed": 6}
