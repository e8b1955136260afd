"""Text from Kaleyra or the campaign cannot run in a spreadsheet nor drive the terminal.

Results cells that start like a formula get a leading ``'`` (the failed export keeps the
user's cells as written); every line printed shows control characters as escapes.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bulk_sender.model import Record
from bulk_sender.printable import json_printable, printable
from bulk_sender.record.results import RESULT_COLUMNS, _result_row, spreadsheet_safe
from bulk_sender.sandbox.server import Custom, Sandbox
from tests.conftest import CliRunner, read_results, write_config, write_csv

#: What a terminal acts on: C0 but LF (lines are ours), DEL, C1, the separators, bidi controls.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_FORGED = "\x1b[2J\x1b]0;pwned\x07\r2026-11-24T22:38:12Z INFO    bulk_sender.finished forged=1"


def _answer(status: int, **document: object) -> Custom:
    return Custom(status, orjson.dumps({"data": {}, "error": {}, **document}))


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\n=1", "'\n=1"),
        ("\0=1", "'\0=1"),
        ("+91 98450 12345", "'+91 98450 12345"),
        ("+919845012345", "+919845012345"),
        ("-12.5", "-12.5"),
        ("WA400", "WA400"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_spreadsheet_safe_follows_owasp(cell: str, written: str) -> None:
    """A leading =, +, -, @, tab, CR or LF gets a ' in front; a signed number stays as it is."""
    assert spreadsheet_safe(cell) == written


_CELL = st.text(alphabet=st.sampled_from("=+-@\t\r\n\0.0123456789aZ\x1f'"), max_size=6)


@given(st.tuples(*[_CELL] * 8))
@example(("=1", "", "", "", "", "", "", ""))
@example(("+919845012345", "", "", "", "", "", "", "@1"))
def test_every_text_cell_of_a_results_row_is_spreadsheet_safe(cells: tuple[str, ...]) -> None:
    """The results row's fast path agrees with spreadsheet_safe on every cell it could carry."""
    to, message_id, code, error, ref, ref1, ref2, warning = cells
    record = Record(
        row=1, to=to, status="failed", message_id=message_id, code=code, error=error,
        ref=ref, ref1=ref1, ref2=ref2, warning=warning,
    )  # fmt: skip
    row = dict(zip(RESULT_COLUMNS, _result_row(record), strict=True))
    for name in ("to", "message_id", "code", "error", "ref", "ref1", "ref2", "warning"):
        assert row[name] == spreadsheet_safe(getattr(record, name)), name


def test_results_cells_cannot_run_as_formulas_and_the_export_round_trips(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Server cells (message_id, code, error) and input cells echoed (an invalid to, refs) that
    start like a formula are written with a leading '; a valid E.164 to stays as it is; the
    failed export keeps the user's cells exactly."""
    sandbox.faults.scripts["+919876500000"] = [
        _answer(202, code="WA202", data={"message_id": '=HYPERLINK("http://evil","open")'})
    ]
    sandbox.faults.scripts["+919876500001"] = [
        _answer(400, code="=cmd|' /C calc'!A0", message="@SUM(1+1)")
    ]
    rows = [["+919876500000", "-1+2"], ["+919876500001", "+5"], ["=1+2", "@x"]]
    campaign = write_csv(tmp_path / "c.csv", ["to", "ref"], rows)
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    assert cli("send", campaign, "--config", config, "--out", out).code == 1
    sent, failed, invalid = read_results(out)
    assert sent["to"] == "+919876500000"
    assert sent["message_id"] == '\'=HYPERLINK("http://evil","open")'
    assert sent["ref"] == "'-1+2"
    assert failed["code"] == "'=cmd|' /C calc'!A0"
    assert failed["error"] == "'@SUM(1+1)"
    assert failed["ref"] == "+5"
    assert (invalid["to"], invalid["ref"]) == ("'=1+2", "'@x")
    export = read_results(tmp_path / "r.failed.csv")
    assert [[r["to"], r["ref"]] for r in export] == rows[1:]


def test_dry_run_verdicts_are_neutralised_too(tmp_path: Path, cli: CliRunner) -> None:
    """A dry run's verdicts file is a results file: the same rule applies."""
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["=1+2"], ["+919876500000"]])
    verdicts = tmp_path / "v.csv"
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:9")
    assert cli("send", campaign, "--config", config, "--dry-run", "--out", verdicts).code == 1
    assert [r["to"] for r in read_results(verdicts)] == ["'=1+2", "+919876500000"]


def test_server_text_cannot_forge_log_lines_or_drive_the_terminal(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """Kaleyra's code, message and message_id with ESC, CR, BEL: in the -v log lines, the
    summary's codes and the stop line that quotes Kaleyra, they are shown as escapes."""
    sandbox.faults.scripts["+919876500000"] = [
        _answer(202, code="WA202", data={"message_id": f"id{_FORGED}"})
    ]
    sandbox.faults.scripts["+919876500001"] = [_answer(400, code=f"X{_FORGED}", message="bad")]
    sandbox.faults.scripts["+919876500002"] = [_answer(401, code="WA-401", message=_FORGED)]
    numbers = ["+919876500000", "+919876500001", "+919876500002", "+919876500003"]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [[n] for n in numbers])
    config = write_config(tmp_path / "config.toml", sandbox.url, sending={"concurrency": 1})
    run = cli("send", campaign, "--config", config, "-v")
    assert run.code == 3
    for stream in (run.out, run.err):
        assert not _CONTROL.search(stream), stream
        assert "\\x1b[2J\\x1b]0;pwned\\x07\\r2026-11-24T22:38:12Z" in stream
    assert not any(line.startswith("2026-11-24T22:38:12Z") for line in run.err.splitlines())
    stop = next(line for line in run.out.splitlines() if line.startswith("Kaleyra says"))
    assert "\\x1b[2J" in stop


def test_json_logs_escape_what_json_leaves_raw(
    tmp_path: Path, sandbox: Sandbox, cli: CliRunner
) -> None:
    """--log-format json: DEL, C1 controls and bidi overrides from Kaleyra are \\u escapes, and
    the line still reads back as the same value."""
    hostile = "id\x7f\x9b31m\u202eevil\u2028next"
    sandbox.faults.scripts["+919876500000"] = [
        _answer(202, code="WA202", data={"message_id": hostile})
    ]
    campaign = write_csv(tmp_path / "c.csv", ["to"], [["+919876500000"]])
    config = write_config(tmp_path / "config.toml", sandbox.url)
    run = cli("send", campaign, "--config", config, "-v", "--log-format", "json")
    assert run.code == 0
    assert not _CONTROL.search(run.err)
    events = [orjson.loads(line) for line in run.err.splitlines() if line.strip()]
    assert [e["message_id"] for e in events if e["event"] == "bulk_sender.row"] == [hostile]


def test_the_error_line_shows_control_characters_as_escapes(tmp_path: Path, cli: CliRunner) -> None:
    """An error quoting a path with ESC in it prints the escape, not the character."""
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:9")
    run = cli("send", tmp_path / "c\x1b[31m.csv", "--config", config)
    assert run.code == 2
    assert not _CONTROL.search(run.err)
    assert "\\x1b[31m" in run.err


@given(st.text())
def test_printable_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    """Whatever the text, the printed form has no control character and no line break."""
    shown = printable(text)
    assert not _CONTROL.search(shown)
    assert "\n" not in shown


@given(st.recursive(st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_json_printable_is_the_same_document(value: object) -> None:
    """json_printable changes how a JSON text looks, never what it says."""
    text = json_printable(orjson.dumps(value).decode())
    assert not _CONTROL.search(text)
    assert orjson.loads(text) == value
