"""DataFrame and Parquet campaigns through the public API, against the sandbox over real HTTP.

pandas and pyarrow are the ``pandas`` extra, which the ``test`` extra includes. Outside CI a
machine without them skips this module; under CI (``CI=true``) a missing one is an error.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
from pathlib import Path

import pytest

try:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - CI installs them
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(
        "pandas and pyarrow are not installed: pip install -e '.[test]' installs them",
        allow_module_level=True,
    )

import bulk_sender
from bulk_sender.input.frames import cell_text
from bulk_sender.record.results import RESULT_COLUMNS
from bulk_sender.sandbox.server import Behaviour, Sandbox
from tests.conftest import read_results, write_config


def _phones(n: int, start: int = 0) -> list[int]:
    return [919876500000 + i for i in range(start, start + n)]


def test_integer_float_and_missing_phone_cells(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """A frame whose phones are ints, floats with .0 and NaN sends the digits; NaN is invalid."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    frame = pd.DataFrame(
        {
            "phone": [919876500001, 919876500002.0, math.nan, None, "+91 98765 00005"],
            "first_name": ["Asha", "Ravi", "Meena", "Arjun", pd.NA],
        }
    )
    floats = pd.DataFrame({"mobile": [919876500011.0, math.nan, 919876500013.0]})
    integers = pd.DataFrame({"to": pd.Series(_phones(2, start=21), dtype="int64")})
    nullable = pd.DataFrame({"to": pd.Series([919876500031, None], dtype="Int64")})
    runs = [
        bulk_sender.send(f, config=config, results=tmp_path / f"{name}.csv")
        for name, f in [("mixed", frame), ("floats", floats), ("ints", integers), ("na", nullable)]
    ]
    # A row with nothing in any cell is skipped, as a blank line of a file is: floats' and na's.
    assert [r.exit_code for r in runs] == [1, 0, 0, 0]
    assert [sum(r.statuses.values()) for r in runs] == [5, 2, 2, 1]
    assert sorted(sandbox.counts()) == [
        "+919876500001", "+919876500002", "+919876500005", "+919876500011", "+919876500013",
        "+919876500021", "+919876500022", "+919876500031",
    ]  # fmt: skip
    mixed = read_results(tmp_path / "mixed.csv")
    assert [(r["to"], r["status"]) for r in mixed] == [
        ("+919876500001", "sent"),
        ("+919876500002", "sent"),
        ("", "invalid"),
        ("", "invalid"),
        ("+919876500005", "sent"),
    ]


def test_the_same_frame_resumes_and_a_changed_one_is_refused(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """The same frame content (even in other dtypes) resumes; different content is refused."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    out = tmp_path / "r.csv"
    as_ints = pd.DataFrame({"phone": _phones(4)})
    as_text = pd.DataFrame({"phone": [str(p) for p in _phones(4)]})
    assert bulk_sender.send(as_ints, config=config, results=out).exit_code == 0
    again = bulk_sender.send(as_text, config=config, results=out)
    assert again.summary["this_run"]["requests"] == 0
    assert max(sandbox.counts().values()) == 1
    with pytest.raises(bulk_sender.CampaignMismatchError):
        bulk_sender.send(pd.DataFrame({"phone": _phones(5)}), config=config, results=out)
    assert len(sandbox.received) == 4
    assert len(list(tmp_path.glob("r.campaign-*.csv"))) == 2  # each content kept apart


def test_the_failed_export_of_a_frame_is_a_csv_with_its_columns(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """The failed rows of a frame are exported as CSV with the frame's columns plus error."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    phones = _phones(3)
    sandbox.faults.scripts[f"+{phones[1]}"] = [Behaviour.WA400]
    frame = pd.DataFrame(
        {"phone": [phones[0], phones[1], None], "first_name": ["Asha", "Ravi", "Meena"]}
    )
    run = bulk_sender.send(frame, config=config, results=tmp_path / "r.csv")
    assert run.failed == tmp_path / "r.failed.csv"
    with run.failed.open(newline="", encoding="utf-8") as handle:
        exported = list(csv.reader(handle))
    assert exported[0] == ["phone", "first_name", "error"]
    assert [line[:2] for line in exported[1:]] == [[str(phones[1]), "Ravi"], ["", "Meena"]]
    assert exported[1][2].startswith("failed: WA400")


def test_a_parquet_file_of_several_row_groups(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """Every row of a Parquet file larger than one row group is sent once, in order."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    phones = _phones(130)
    table = pa.table({"phone": phones, "ref": [f"r{i}" for i in range(130)]})
    path = tmp_path / "audience.parquet"
    pq.write_table(table, path, row_group_size=50)
    assert pq.ParquetFile(path).num_row_groups == 3
    run = bulk_sender.send(path, config=config)
    assert run.exit_code == 0
    assert run.results == tmp_path / "audience.results.csv"
    rows = read_results(run.results)
    assert [(r["to"], r["ref"]) for r in rows] == [(f"+{p}", f"r{i}") for i, p in enumerate(phones)]
    assert max(sandbox.counts().values()) == 1 and len(sandbox.counts()) == 130
    assert bulk_sender.send(path, config=config).summary["this_run"]["requests"] == 0


def test_a_file_that_is_not_parquet_is_an_input_error(tmp_path: Path, sandbox: Sandbox) -> None:
    """A .parquet file pyarrow cannot read raises InputFileError naming it."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    path = tmp_path / "broken.parquet"
    path.write_text("to\n+919876500001\n", encoding="utf-8")
    with pytest.raises(bulk_sender.InputFileError, match=r"broken\.parquet"):
        bulk_sender.send(path, config=config)


def test_to_dataframe_has_the_results_columns_as_strings(
    tmp_path: Path, sandbox: Sandbox, api_key: str
) -> None:
    """Run.to_dataframe() reads the results file with its columns, every cell a string."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    run = bulk_sender.send(
        pd.DataFrame({"phone": [*_phones(2), None], "ref": ["a", "b", "c"]}),
        config=config,
        results=tmp_path / "r.csv",
    )
    frame = run.to_dataframe()
    assert list(frame.columns) == list(RESULT_COLUMNS)
    assert frame["status"].tolist() == ["sent", "sent", "invalid"]
    assert frame["row"].tolist() == ["1", "2", "3"]
    assert frame["http_status"].tolist() == ["202", "202", ""]


def test_dry_run_of_a_frame_spools_nothing_beside_the_results(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """A dry run of a frame writes its verdicts only; its scratch copy of the rows is gone."""
    config = write_config(tmp_path / "config.toml", sandbox.url)
    frame = pd.DataFrame({"phone": [*_phones(2), 12]})
    run = bulk_sender.dry_run(frame, config=config, results=tmp_path / "v.csv")
    assert dict(run.statuses) == {"valid": 2, "invalid": 1, "duplicate": 0, "suppressed": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "v.csv"]
    assert [r["status"] for r in run.to_dataframe().to_dict("records")] == [
        "valid",
        "valid",
        "invalid",
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (919876543210, "919876543210"),
        (919876543210.0, "919876543210"),
        (1.5, "1.5"),
        (math.nan, ""),
        (None, ""),
        (pd.NA, ""),
        (pd.NaT, ""),
        (True, "TRUE"),
        (dt.date(2026, 11, 24), "2026-11-24"),
        (pd.Timestamp("2026-11-24 21:33"), "2026-11-24T21:33:00"),
        ("+91 98765 43210", "+91 98765 43210"),
    ],
)
def test_cell_text_reads_cells_as_the_csv_loader_does(value: object, text: str) -> None:
    """Digits for integral numbers, empty for every kind of missing value, ISO for dates."""
    assert cell_text(value) == text
