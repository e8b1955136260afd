"""End to end over real HTTP: the CLI sends a campaign to the sandbox and records every outcome."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from bulk_sender.sandbox.server import Behaviour, Sandbox
from tests.conftest import (
    API_KEY,
    BODY,
    SENDER,
    SID,
    CliRunner,
    read_results,
    write_config,
    write_csv,
)

RESULT_HEADER = [
    "row", "to", "status", "message_id", "http_status", "code", "error", "attempts",
    "ref", "ref1", "ref2", "finished_at",
]  # fmt: skip


def test_exact_request_for_a_row(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """One row becomes exactly the seed's request: path, headers and body field for field."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    campaign = write_csv(
        tmp_path / "c.csv",
        ["to", "ref", "ref1", "ref2"],
        [["+91 98765 43210", "customer1", "marketing", "dictionary"]],
    )
    run = cli("send", campaign, "--config", config, "--out", tmp_path / "r.csv")
    assert run.code == 0, run.err
    [got] = sandbox.received
    assert got.path == f"/v2/{SID}/whatsapp/{SENDER.lstrip('+')}/messages"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["api-key"] == API_KEY
    assert orjson.loads(got.body) == {
        "messaging_object": {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "+919876543210",
            "type": "interactive",
            "interactive": {
                "type": "catalog_message",
                "body": {"text": BODY},
                "action": {
                    "name": "catalog_message",
                    "parameters": {"thumbnail_product_retailer_id": "2lxxxxxxpt"},
                },
            },
        },
        "extra_info": {
            "ref": "customer1", "ref1": "marketing", "ref2": "dictionary", "wa_source": "api",
        },
    }  # fmt: skip


def test_empty_optional_fields_are_omitted(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Empty refs and an empty retailer id are left out of the body, never sent as ""."""
    config = write_config(
        tmp_path / "config.toml", sandbox.url, campaign={"thumbnail_product_retailer_id": ""}
    )
    campaign = write_csv(tmp_path / "c.csv", ["phone", "ref"], [["+919876543210", ""]])
    assert cli("send", campaign, "--config", config).code == 0
    body = orjson.loads(sandbox.received[0].body)
    assert body["extra_info"] == {"wa_source": "api"}
    assert body["messaging_object"]["interactive"]["action"]["parameters"] == {}


def test_mixed_campaign_results(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """A mixed campaign: one result row per message, in input order, with the right statuses."""
    sandbox.faults.scripts["+919876543212"] = [Behaviour.WA400]
    config = write_config(tmp_path / "config.toml", sandbox.url)
    long_ref = "x" * 300
    campaign = write_csv(
        tmp_path / "c.csv",
        ["Phone Number", "ref", "body_text", "first_name"],
        [
            ["+919876543210", long_ref, "", "Asha"],
            ["not a number", "r2", "", "Ravi"],
            ["+919876543212", "r3", "Hi {first_name}!", "Meena"],
            ["919876543210", "r4", "", "Dup"],
            ["+919876543214, +919876543215", "r5", "", "Two"],
        ],
    )
    out = tmp_path / "results.csv"
    run = cli("send", campaign, "--config", config, "--out", out)
    assert run.code == 1, run.err
    rows = read_results(out)
    assert list(rows[0].keys())[: len(RESULT_HEADER)] == RESULT_HEADER
    assert [(r["row"], r["to"], r["status"]) for r in rows] == [
        ("1", "+919876543210", "sent"),
        ("2", "not a number", "invalid"),
        ("3", "+919876543212", "failed"),
        ("4", "+919876543210", "duplicate"),
        ("5", "+919876543214", "sent"),
        ("5", "+919876543215", "sent"),
    ]
    sent = {r.to: r.message_id for r in sandbox.accepted()}
    assert rows[0]["message_id"] == sent["+919876543210"]
    assert rows[0]["ref"] == "x" * 255
    assert rows[0]["finished_at"].endswith("Z")
    assert rows[2]["code"] == "WA400" and rows[2]["http_status"] == "400"
    assert "Refer to correct payload format" in rows[2]["error"]
    assert rows[3]["error"] == "same number as row 1"
    assert rows[1]["error"]
    assert sandbox.counts() == {
        "+919876543210": 1, "+919876543212": 1, "+919876543214": 1, "+919876543215": 1,
    }  # fmt: skip
    # Requests from different workers may arrive in any order: find row 3's by its recipient.
    [meena] = [r for r in sandbox.received if r.to == "+919876543212"]
    assert orjson.loads(meena.body)["messaging_object"]["interactive"]["body"] == {
        "text": "Hi Meena!"
    }


def test_default_results_path_and_exit_zero(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Without --out the results go beside the campaign as NAME.results.csv; all sent exits 0."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    campaign = write_csv(tmp_path / "spring.csv", ["to"], [["+919876543210"], ["+919876543211"]])
    run = cli("send", campaign, "--config", config)
    assert run.code == 0
    rows = read_results(tmp_path / "spring.results.csv")
    assert [r["status"] for r in rows] == ["sent", "sent"]
    assert (tmp_path / "spring.results.failed.csv").exists()


def test_rate_limit_is_respected(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """At 20/s, 50 messages take at least ~2.4 s and no 1-second window (server clock) holds >21."""
    config = write_config(
        tmp_path / "config.toml", sandbox.url, sending={"rate_per_second": 20, "concurrency": 16}
    )
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[f"+9198765{i:05d}"] for i in range(50)])
    started = time.monotonic()
    assert cli("send", campaign, "--config", config).code == 0
    assert time.monotonic() - started >= 2.3
    times = sorted(r.at for r in sandbox.received)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 21


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("kaleyra", "pod", "us", "[kaleyra] pod"),
        ("sending", "rate_per_second", 0, "[sending] rate_per_second"),
        ("sending", "concurrency", "many", "[sending] concurrency"),
        ("sending", "rate_per_sec", 5, "[sending] rate_per_sec"),
    ],
)
def test_config_errors_exit_2_and_send_nothing(
    tmp_path: Path,
    sandbox: Sandbox,
    cli: CliRunner,
    section: str,
    key: str,
    value: object,
    named: str,
) -> None:
    """A wrong config value stops the run before sending, exit 2, with the key named."""
    config = write_config(tmp_path / "config.toml", sandbox.url, **{section: {key: value}})
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["+919876543210"]])
    run = cli("send", campaign, "--config", config)
    assert run.code == 2
    assert named in run.err
    assert "Traceback" not in run.err
    assert sandbox.received == []


@pytest.mark.parametrize("where", ["config", "flag"])
def test_a_rate_too_slow_to_ever_finish_is_refused(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, where: str
) -> None:
    """A rate of 1e-300/s, in config.toml or as --rate, exits 2 with one line naming the key."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["+919876543210"]])
    if where == "config":
        config = write_config(
            tmp_path / "config.toml", sandbox.url, sending={"rate_per_second": 1e-300}
        )
        run = cli("send", campaign, "--config", config)
    else:
        config = write_config(tmp_path / "config.toml", sandbox.url)
        run = cli("send", campaign, "--config", config, "--rate", "1e-300")
    assert run.code == 2
    [line] = run.err.splitlines()
    assert line.startswith("bulk-sender: config: [sending] rate_per_second: ")
    assert "from 0.01" in line
    assert "1e-300" in line
    assert sandbox.received == []


def test_missing_api_key_exits_2(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the key in the environment the run stops before sending and names the variable."""
    monkeypatch.delenv("BULK_SENDER_TEST_KEY")
    config = write_config(tmp_path / "config.toml", sandbox.url)
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["+919876543210"]])
    run = cli("send", campaign, "--config", config)
    assert run.code == 2
    assert "BULK_SENDER_TEST_KEY" in run.err
    assert sandbox.received == []


def test_flags_override_config(tmp_path: Path, sandbox: Sandbox, cli: CliRunner) -> None:
    """--base-url overrides the config's base_url (here the config points nowhere useful)."""
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:9")
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["+919876543210"]])
    run = cli("send", campaign, "--config", config, "--base-url", sandbox.url, "--rate", "5")
    assert run.code == 0, run.err
    assert sandbox.count("+919876543210") == 1


def test_embedded_sandbox_needs_no_key(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--sandbox sends to an in-process sandbox with no API key in the environment."""
    monkeypatch.delenv("BULK_SENDER_TEST_KEY")
    config = write_config(tmp_path / "config.toml", "")
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["+919876543210"], ["+919876543211"]])
    run = cli("send", campaign, "--config", config, "--sandbox", "--out", tmp_path / "r.csv")
    assert run.code == 0, run.err
    rows = read_results(tmp_path / "r.csv")
    assert [r["status"] for r in rows] == ["sent", "sent"]
    assert all(r["message_id"] for r in rows)
