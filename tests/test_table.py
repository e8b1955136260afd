"""Tests for input/table.py: reading campaign files, their errors, and writing them back."""

from __future__ import annotations

import codecs
import os
import tempfile
import zipfile
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from odf.opendocument import OpenDocumentSpreadsheet
from odf.table import Table as OdsTable
from odf.table import TableCell, TableRow
from odf.text import P

from bulk_sender.errors import ConfigError, InputFileError
from bulk_sender.input import table as table_module
from bulk_sender.input.sheet_area import ods_used_area
from bulk_sender.input.table import (
    _BLOCK,
    CELLS_AHEAD,
    Chunk,
    Table,
    TableFormat,
    open_table,
    write_table,
)
from tests.strategies import table_cells, table_headers
from tests.workbooks import WRITERS, Writer, write_ods, write_xls

FILES = Path(__file__).parent / "data" / "files"
CSV = TableFormat(kind="csv", encoding="utf-8", delimiter=",")
XLSX = TableFormat(kind="xlsx", encoding="", delimiter="")
SHEETS = pytest.mark.parametrize("writer", list(WRITERS.values()), ids=list(WRITERS))
UTF8_HINT = (
    'the file is not UTF-8; if it was saved by Excel as "CSV" try '
    '[campaign] encoding = "cp1252" in config.toml'
)
ASHA = ["+919876543210", "Asha", "Pune"]
RENEE = ["+919812345678", "Renée", "Delhi"]


def rows_of(table: Table, size: int = 10_000) -> list[list[str]]:
    """Every data row of a table, through chunks()."""
    return [row for chunk in table.chunks(size) for row in chunk.rows]


def broken(path: Path, *, line: int | None, no_line_breaks: frozenset[int] = frozenset()) -> str:
    """Open and scan a file that must fail; check the error names ``line``; return its reason."""
    with pytest.raises(InputFileError) as caught:
        open_table(path).scan(no_line_breaks=no_line_breaks)
    error = caught.value
    assert type(error) is InputFileError
    assert error.line == line
    where = f"{path}:{line}" if line is not None else f"{path}"
    assert str(error) == f"{where}: {error.reason}"
    return error.reason


# --- good files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "header", "rows"),
    [
        (
            "good_utf8.csv",
            CSV,
            ("to", "name", "city"),
            [
                ["+919876543210", "Asha Rao", "Pune"],
                ["919812345678", "Ravi Kumar", "Delhi"],
                ["+91 98111 22233", "Meera", "Chennai"],
            ],
        ),
        (
            "good_bom.csv",
            TableFormat("csv", "utf-8-sig", ","),
            ("to", "name", "city"),
            [ASHA, RENEE],
        ),
        (
            "good_utf16.csv",
            TableFormat("csv", "utf-16", ";"),
            ("to", "name", "city"),
            [ASHA, RENEE],
        ),
        ("good_old_mac.csv", CSV, ("to", "name", "city"), [ASHA, RENEE]),
        (
            "good_semicolon.csv",
            TableFormat("csv", "utf-8", ";"),
            ("to", "name", "note"),
            [["+919876543210", "Asha", "likes tea, coffee"], ["+919812345678", "Ravi", ""]],
        ),
        (
            "good_tab.csv",
            TableFormat("csv", "utf-8", "\t"),
            ("to", "name", "note"),
            [["+919876543210", "Asha", 'says "hi"'], ["+919812345678", "Ravi", "a, b; c"]],
        ),
        (
            "good_crlf.csv",
            CSV,
            ("to", "name", "note"),
            [["+919876543210", "Asha", "a\r\nb"], ["+919812345678", "Ravi", "ok"]],
        ),
        (
            "good_multiline.csv",
            CSV,
            ("to", "name", "address"),
            [
                ["+919876543210", "Asha", "Flat 4, Sea View\nMarine Drive\nMumbai"],
                ["+919812345678", "Kumar, Ravi", 'He said "hello"'],
            ],
        ),
        (
            "good_blank_rows.csv",
            CSV,
            ("to", "name"),
            [["+919876543210", "Asha"], ["+919812345678", "Ravi"], ["+919811122233", "Meera"]],
        ),
        ("header_only.csv", CSV, ("to", "name"), []),
        (
            "good.xlsx",
            XLSX,
            ("to", "name", "code", "joined", "vip", "score"),
            [
                ["919876543210", "Asha", "007", "45292", "TRUE", "1.5"],
                ["+91 98123 45678", "Ravi", "0042", "2024-01-05T09:30:00", "FALSE", "3"],
            ],
        ),
    ],
)
def test_good_files_read_exactly(
    name: str, fmt: TableFormat, header: tuple[str, ...], rows: list[list[str]]
) -> None:
    """Each good file yields its format, header (no BOM) and rows as text, exactly."""
    table = open_table(FILES / name)
    assert table.format == fmt
    assert table.header == header
    assert table.scan(no_line_breaks=frozenset({0})) == len(rows)
    assert rows_of(table) == rows


def test_sha256_is_of_the_file_bytes() -> None:
    """sha256 is the digest of the file's bytes, BOM included."""
    import hashlib

    path = FILES / "good_bom.csv"
    assert open_table(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_cp1252_reads_when_configured() -> None:
    """A file Excel saved as "CSV" (cp1252) reads with encoding="cp1252"."""
    table = open_table(FILES / "bad_cp1252.csv", encoding="cp1252")
    assert table.format == TableFormat("csv", "cp1252", ",")
    assert rows_of(table) == [ASHA, RENEE]


def test_chunk_numbering_skips_blank_rows_across_chunk_boundaries() -> None:
    """Data rows are numbered over non-blank rows only, continuing across chunks."""
    table = open_table(FILES / "good_blank_rows.csv")
    assert list(table.chunks(2)) == [
        Chunk(first_row=1, rows=[["+919876543210", "Asha"], ["+919812345678", "Ravi"]]),
        Chunk(first_row=3, rows=[["+919811122233", "Meera"]]),
    ]


def test_chunks_are_full_and_rows_padded(tmp_path: Path) -> None:
    """Chunks hold exactly ``size`` rows but the last, and short rows are padded with ""."""
    path = tmp_path / "c.csv"
    path.write_text("to,name,city\n" + "".join(f"+9198765432{i:02d}\n" for i in range(7)))
    chunks = list(open_table(path).chunks(3))
    assert [(c.first_row, len(c.rows)) for c in chunks] == [(1, 3), (4, 3), (7, 1)]
    assert chunks[0].rows[0] == ["+919876543200", "", ""]


def test_empty_cells_past_the_header_are_dropped(tmp_path: Path) -> None:
    """A trailing delimiter (an empty cell past the header) is not an error."""
    path = tmp_path / "c.csv"
    path.write_text("to,name\n+919876543210,Asha,,\n")
    assert rows_of(open_table(path)) == [["+919876543210", "Asha"]]


def test_stray_quote_merges_rows_silently_without_no_line_breaks() -> None:
    """Without no_line_breaks the merged cell is legal CSV: that is why the check exists."""
    assert open_table(FILES / "bad_stray_quote.csv").scan() == 3


def test_multibyte_character_split_across_blocks(tmp_path: Path) -> None:
    """A UTF-8 character straddling the byte pass's block boundary decodes fine."""
    head, row, start = b"to,name\n", b"+919876543210,Asha\n", b"+919812345678,"
    count = (_BLOCK - len(head)) // len(row) - 1
    filler = b"a" * (_BLOCK - 1 - len(head) - count * len(row) - len(start))
    path = tmp_path / "big.csv"
    path.write_bytes(head + row * count + start + filler + "é\n".encode())
    assert path.read_bytes()[_BLOCK - 1 : _BLOCK + 1] == "é".encode()
    table = open_table(path)
    assert table.scan() == count + 1
    assert rows_of(table)[-1][1].endswith("aé")


# --- broken files ----------------------------------------------------------------------------


def test_cp1252_without_encoding_names_the_line_and_the_fix() -> None:
    """Undecodable bytes name their line and suggest [campaign] encoding = "cp1252"."""
    assert broken(FILES / "bad_cp1252.csv", line=3) == UTF8_HINT


def test_decode_error_line_is_exact_after_a_block_boundary(tmp_path: Path) -> None:
    """The line of a bad byte is exact far into the file, past the first read block."""
    rows = "".join(f"+91987654{i:04d},Asha é\r\n" for i in range(100_000))
    path = tmp_path / "late.csv"
    path.write_bytes(("to,name\r\n" + rows).encode() + b"+919812345678,Ren\xe9e\r\n")
    assert path.stat().st_size > 2 * _BLOCK
    assert broken(path, line=100_002) == UTF8_HINT


def test_nul_bytes() -> None:
    """NUL bytes mean a binary file; the line is named."""
    reason = broken(FILES / "bad_nul.csv", line=3)
    assert reason == "contains NUL bytes: this looks like a binary file, not CSV"


def test_too_many_cells_names_the_physical_line() -> None:
    """More cells than the header names the physical line, after a multi-line cell and a blank."""
    reason = broken(FILES / "bad_too_many.csv", line=5)
    assert reason.startswith("this row has 4 cells but the header has 3")


def test_unclosed_quote_names_the_line_it_opens_on() -> None:
    """A quote that never closes names the line where it opened."""
    reason = broken(FILES / "bad_unclosed_quote.csv", line=3)
    assert reason.startswith(
        "a quote opened on line 3 is never closed, so the rest of the file would merge into "
        "one cell"
    )


def test_stray_quote_swallowing_the_phone_column() -> None:
    """A stray quote whose cell spans lines in a no_line_breaks column names its line."""
    reason = broken(FILES / "bad_stray_quote.csv", line=3, no_line_breaks=frozenset({0}))
    assert reason.startswith('a quote opened on line 3 swallows the following lines into the "to"')


def test_stray_quote_swallowing_more_than_the_field_limit(tmp_path: Path) -> None:
    """A stray quote that swallows over csv's field limit still names the line it opened on."""
    path = tmp_path / "huge.csv"
    lines = "".join(f"+91987654{i:04d},Asha\n" for i in range(12_000))
    path.write_text(f'to,name\n+919812345678,ok\n"+919811122233,x\n{lines}+919822233344",y\n')
    reason = broken(path, line=3, no_line_breaks=frozenset({0}))
    assert reason.startswith("a quote opened on line 3 swallows the following lines")


def test_unclosed_quote_over_the_field_limit(tmp_path: Path) -> None:
    """A never-closed quote in a big file is reported without reading it all into one cell."""
    path = tmp_path / "huge.csv"
    lines = "".join(f"+91987654{i:04d},Asha\n" for i in range(12_000))
    path.write_text(f'to,name\n+919812345678,ok\n+919811122233,"x\n{lines}')
    reason = broken(path, line=3)
    assert "is never closed" in reason


def test_unclosed_quote_in_the_header(tmp_path: Path) -> None:
    """A quote opened in the header and never closed fails at open, naming line 1."""
    path = tmp_path / "h.csv"
    path.write_text('"to,name\n+919876543210,Asha\n')
    assert "a quote opened on line 1 is never closed" in broken(path, line=1)


@pytest.mark.parametrize(
    ("name", "start"),
    [
        (
            "bad_xlsx_named.csv",
            "this is an Excel workbook saved with a .csv name; rename it to .xlsx",
        ),
        ("bad_pdf_named.csv", "this is a PDF document, not a spreadsheet"),
        ("bad_xls_named.csv", "this is an old Excel 97-2003 workbook (.xls)"),
        ("bad_not_workbook.xlsx", "this .xlsx file is not a valid Excel workbook"),
        ("empty.csv", "the file is empty"),
        ("blank_only.csv", "the file is empty"),
    ],
)
def test_files_that_are_not_campaign_files(name: str, start: str) -> None:
    """Impostors and empty files are refused with what they are and what to do."""
    assert broken(FILES / name, line=None).startswith(start)


def test_zip_archive_named_csv(tmp_path: Path) -> None:
    """A ZIP that is not a workbook is called a ZIP archive."""
    path = tmp_path / "data.csv"
    path.write_bytes((FILES / "bad_not_workbook.xlsx").read_bytes())
    assert broken(path, line=None).startswith("this is a ZIP archive")


def test_text_named_xlsx(tmp_path: Path) -> None:
    """A CSV saved with a .xlsx name is refused with the rename that fixes it."""
    path = tmp_path / "data.xlsx"
    path.write_text("to,name\n+919876543210,Asha\n")
    assert "rename it .csv" in broken(path, line=None)


def test_missing_file() -> None:
    """A path with no file behind it says so."""
    reason = broken(FILES / "no_such_file.csv", line=None)
    assert reason.startswith("no such file")


def test_unknown_encoding_is_a_config_error() -> None:
    """An encoding name Python does not know is a config problem, not a file problem."""
    with pytest.raises(ConfigError, match="unknown encoding"):
        open_table(FILES / "good_utf8.csv", encoding="klingon-8")


def test_bom_decides_over_the_configured_encoding() -> None:
    """A byte-order mark is proof: it wins over [campaign] encoding."""
    table = open_table(FILES / "good_bom.csv", encoding="cp1252")
    assert table.format.encoding == "utf-8-sig"
    assert table.header == ("to", "name", "city")


# --- xlsx specifics --------------------------------------------------------------------------


def sheet(path: Path, *rows: list[object]) -> Path:
    """Write a one-sheet workbook with ``rows``."""
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(path)
    return path


def test_xlsx_value_past_the_header_names_the_sheet_row(tmp_path: Path) -> None:
    """A workbook value beyond the header's columns names its sheet row and column."""
    path = sheet(tmp_path / "w.xlsx", ["to", "name"], [919876543210, "Asha"], [None], [1, 2, 3])
    reason = broken(path, line=4)
    assert reason.startswith("this row has a value in column C")


def test_xlsx_line_break_in_a_one_line_column(tmp_path: Path) -> None:
    """A line break inside a workbook's phone cell names its sheet row."""
    path = sheet(tmp_path / "w.xlsx", ["name", "to"], ["Asha", "+91 98765\n43210"])
    assert '"to" cell on this row contains a line break' in broken(
        path, line=2, no_line_breaks=frozenset({1})
    )


def test_xlsx_first_sheet_only_and_trailing_empty_header_cells(tmp_path: Path) -> None:
    """Only the first sheet is read; empty cells after the last header name are dropped."""
    book = openpyxl.Workbook()
    book.active.append(["to", "name", None, None])
    book.active.append([919876543210.0, "Asha"])
    book.create_sheet("other").append(["x"])
    book.save(tmp_path / "w.xlsx")
    table = open_table(tmp_path / "w.xlsx")
    assert table.header == ("to", "name")
    assert rows_of(table) == [["919876543210", "Asha"]]


# --- every workbook kind ---------------------------------------------------------------------

TYPED: list[list[object]] = [
    ["Mobile No.", "name", "code", "joined", "when", "vip", "score", "half"],
    [919876543210, "Asha", "007", date(2024, 1, 5), datetime(2024, 1, 5, 9, 30), True, 3.0, 1.5],
    [None] * 8,
    ["+91 98123 45678", "Ravi  Kumar", None, None, None, False, 45292, None],
]
TYPED_ROWS = [
    ["919876543210", "Asha", "007", "2024-01-05", "2024-01-05T09:30:00", "TRUE", "3", "1.5"],
    ["+91 98123 45678", "Ravi  Kumar", "", "", "", "FALSE", "45292", ""],
]


@SHEETS
def test_every_workbook_kind_reads_the_same_text(tmp_path: Path, writer: Writer) -> None:
    """.xlsx, .xls and .ods read alike: numbers as digits, dates as ISO text, first sheet only."""
    kind = writer.__name__.removeprefix("write_")
    table = open_table(writer(tmp_path / f"c.{kind}", TYPED))
    assert table.format == TableFormat(kind, "", "")  # type: ignore[arg-type]
    assert table.header == tuple(TYPED[0])
    assert table.scan(no_line_breaks=frozenset({0})) == 2
    assert rows_of(table) == TYPED_ROWS


@SHEETS
def test_workbook_away_from_a1_keeps_its_columns(tmp_path: Path, writer: Writer) -> None:
    """A table starting at C3 reads from column A and row 1: positions and messages agree."""
    kind = writer.__name__.removeprefix("write_")
    rows = [["to", "name"], [919876543210, "Asha"]]
    table = open_table(writer(tmp_path / f"c.{kind}", rows, origin=(2, 2)))
    assert table.header == ("", "", "to", "name")
    assert rows_of(table) == [["", "", "919876543210", "Asha"]]
    stray = writer(tmp_path / f"s.{kind}", [*rows, [1, "Ravi", "x"]], origin=(2, 2))
    assert broken(stray, line=5).startswith("this row has a value in column E")


@SHEETS
def test_workbook_line_break_names_the_sheet_row(tmp_path: Path, writer: Writer) -> None:
    """A line break in a workbook's phone cell names its sheet row, in every kind."""
    kind = writer.__name__.removeprefix("write_")
    rows = [["name", "to"], ["Asha", "+919876543210"], [None, None], ["Ravi", "+91 98765\n4321"]]
    path = writer(tmp_path / f"c.{kind}", rows)
    reason = broken(path, line=4, no_line_breaks=frozenset({1}))
    assert reason.startswith('the "to" cell on this row contains a line break')


@pytest.mark.parametrize("writer", [write_xls, write_ods], ids=["xls", "ods"])
def test_empty_sheet_is_an_empty_file(tmp_path: Path, writer: Writer) -> None:
    """A workbook whose first sheet holds nothing is refused as empty, not as broken."""
    kind = writer.__name__.removeprefix("write_")
    assert broken(writer(tmp_path / f"c.{kind}", []), line=None).startswith("the file is empty")


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("c.csv", "this is an OpenDocument spreadsheet saved with a .csv name; rename it to .ods"),
        ("c", "this is an OpenDocument spreadsheet saved with no extension"),
        ("c.xlsx", "this is an OpenDocument spreadsheet saved with a .xlsx name"),
    ],
)
def test_ods_under_another_name(tmp_path: Path, name: str, start: str) -> None:
    """An .ods saved under another name is named for what it is, not called a ZIP to unzip."""
    path = write_ods(tmp_path / name, [["to"], [919876543210]])
    assert broken(path, line=None).startswith(start)


def test_xls_under_a_csv_name(tmp_path: Path) -> None:
    """A real .xls saved as .csv is refused with the rename that makes it readable."""
    path = write_xls(tmp_path / "c.csv", [["to"], [919876543210]])
    reason = broken(path, line=None)
    assert reason == (
        "this is an old Excel 97-2003 workbook (.xls) saved with a .csv name; rename it to .xls"
    )


@pytest.mark.parametrize(
    ("name", "content", "start"),
    [
        ("c.ods", b"to\n+919876543210\n", "this file is named .ods but is not an OpenDocument"),
        ("c.xls", bytes((FILES / "bad_xls_named.csv").read_bytes()), "this .xls file is not a"),
        ("c.xlsx", bytes((FILES / "bad_xls_named.csv").read_bytes()), "this .xlsx file is encry"),
        ("c.ods", b"", "the file is empty"),
    ],
)
def test_broken_or_misnamed_workbooks(
    tmp_path: Path, name: str, content: bytes, start: str
) -> None:
    """Text named .ods, a damaged .xls, an encrypted .xlsx: each refused for what it is."""
    path = tmp_path / name
    path.write_bytes(content)
    assert broken(path, line=None).startswith(start)


def test_damaged_ods(tmp_path: Path) -> None:
    """An .ods whose content does not parse is called damaged, with the program to fix it."""
    path = tmp_path / "c.ods"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", "<office:document-content")
    reason = broken(path, line=None)
    assert reason.startswith("this .ods file is not a valid OpenDocument spreadsheet")


def test_tab_separated_text_named_xls_is_read_as_text(tmp_path: Path) -> None:
    """A CRM's tab-separated "Excel" export named .xls is read as text, as Excel does."""
    path = tmp_path / "export.xls"
    path.write_text("to\tname\n+919876543210\tAsha\n")
    table = open_table(path)
    assert table.format == TableFormat("csv", "utf-8", "\t")
    assert rows_of(table) == [["+919876543210", "Asha"]]
    assert table.export_suffix == ".xls"


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("c.csv", ".csv"), ("c.TSV", ".TSV"), ("c.txt", ".txt"), ("c.tab", ".tab"),
        ("c", ".csv"), ("March v1.2", ".csv"), ("c.dat", ".csv"),
    ],
)  # fmt: skip
def test_text_export_keeps_the_campaign_extension(tmp_path: Path, name: str, suffix: str) -> None:
    """A text campaign's export suffix is its own (.tsv stays .tsv); none or an odd one is .csv."""
    path = tmp_path / name
    path.write_text("to\tname\n+919876543210\tAsha\n")
    assert open_table(path).export_suffix == suffix


@SHEETS
def test_every_workbook_exports_as_xlsx(tmp_path: Path, writer: Writer) -> None:
    """Any workbook's export is an .xlsx (write_table writes one) that reads back the same."""
    kind = writer.__name__.removeprefix("write_")
    original = open_table(writer(tmp_path / f"c.{kind}", TYPED))
    assert original.export_suffix == ".xlsx"
    out = tmp_path / "failed.xlsx"
    write_table(out, original.format, original.header, rows_of(original))
    again = open_table(out)
    assert (again.format, again.header, rows_of(again)) == (XLSX, original.header, TYPED_ROWS)


def _ods_with_runs(path: Path, rows: list[list[tuple[str | None, int]]], repeat_last: int) -> Path:
    """An .ods of rows of (text or None, columns repeated) cells; the last row repeated."""
    doc = OpenDocumentSpreadsheet()
    table = OdsTable(name="S")
    for index, row in enumerate(rows):
        repeat = {"numberrowsrepeated": repeat_last} if index == len(rows) - 1 else {}
        element = TableRow(**repeat)
        for text, columns in row:
            cell = TableCell(numbercolumnsrepeated=columns)
            if text is not None:
                cell = TableCell(valuetype="string", numbercolumnsrepeated=columns)
                cell.addElement(P(text=text))
            element.addElement(cell)
        table.addElement(element)
    doc.spreadsheet.addElement(table)
    doc.save(str(path))
    return path


def test_ods_used_area_counts_runs_without_expanding_them(tmp_path: Path) -> None:
    """Repeated rows and columns count; empty runs after the last value (formatting) do not."""
    path = _ods_with_runs(
        tmp_path / "c.ods",
        [[("to", 1), (None, 3), ("x", 2), (None, 1000)], [("1", 1)], [(None, 1024)]],
        repeat_last=1_000_000,
    )
    assert ods_used_area(path) == (2, 6)
    assert open_table(path).header == ("to", "", "", "", "x", "x")


def test_ods_with_a_stray_value_far_right_is_refused_before_reading(tmp_path: Path) -> None:
    """One value in column XFD of a small .ods: refused from its used area, not read whole."""
    stray: list[tuple[str | None, int]] = [("to", 1), (None, 16_382), ("note", 1)]
    phone: list[tuple[str | None, int]] = [("+919876543210", 1)]
    rows = [stray, *[phone] * 700]
    path = _ods_with_runs(tmp_path / "c.ods", rows, repeat_last=1)
    assert path.stat().st_size < 20_000
    reason = broken(path, line=None)
    assert reason.startswith(
        "the first sheet's used area is 701 rows by 16,384 columns (to column XFD), more than "
        "the 10,000,000 cells"
    )
    assert reason.endswith("or save the sheet as CSV")


def test_ods_area_limit_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An .ods of exactly SHEET_CELLS_MAX cells is read; one cell more is refused."""
    path = write_ods(tmp_path / "c.ods", [["to", "name"], [919876543210, "Asha"]])
    monkeypatch.setattr(table_module, "SHEET_CELLS_MAX", 4)
    assert rows_of(open_table(path)) == [["919876543210", "Asha"]]
    monkeypatch.setattr(table_module, "SHEET_CELLS_MAX", 3)
    assert "used area is 2 rows by 2 columns" in broken(path, line=None)


# --- what cannot be read twice ---------------------------------------------------------------


def test_a_pipe_is_refused_without_opening_it(tmp_path: Path) -> None:
    """A named pipe is refused from its file type: opening it would wait for a writer forever."""
    path = tmp_path / "campaign.csv"
    os.mkfifo(path)
    assert broken(path, line=None).startswith("this is a pipe, not a file: the campaign file is")


def test_a_device_is_refused() -> None:
    """A character device (/dev/null, a terminal) is refused as not a file."""
    assert broken(Path("/dev/null"), line=None).startswith("this is a device")


def test_dash_means_standard_input_which_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'-' is refused as standard input, with what to do; a real file named '-' is read."""
    monkeypatch.chdir(tmp_path)
    assert "from standard input is not supported" in broken(Path("-"), line=None)
    Path("-").write_text("to\n+919876543210\n")
    assert rows_of(open_table(Path("-"))) == [["+919876543210"]]


def test_a_folder_is_refused(tmp_path: Path) -> None:
    """A folder given as the campaign says so."""
    assert broken(tmp_path, line=None).startswith("this is a folder")


# --- wide files ------------------------------------------------------------------------------


def test_wide_file_chunks_hold_at_most_cells_ahead(tmp_path: Path) -> None:
    """A very wide file gets fewer rows a chunk, never more than CELLS_AHEAD cells held."""
    width = 3_000
    path = tmp_path / "wide.csv"
    cells = ",".join(["x"] * (width - 1))
    path.write_text("to," + ",".join(f"c{i}" for i in range(1, width)) + "\n")
    with path.open("a") as file:
        file.writelines(f"+9198765{i:05d},{cells}\n" for i in range(200))
    table = open_table(path)
    chunks = list(table.chunks(10_000))
    assert max(len(c.rows) for c in chunks) == CELLS_AHEAD // width
    assert [c.first_row for c in chunks] == list(range(1, 201, CELLS_AHEAD // width))
    assert [row[0] for c in chunks for row in c.rows] == [f"+9198765{i:05d}" for i in range(200)]
    assert table.scan() == 200


def test_narrow_file_chunks_are_as_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cell cap only shrinks chunks: a narrow file's chunks hold ``size`` rows."""
    monkeypatch.setattr(table_module, "CELLS_AHEAD", 10)
    path = tmp_path / "c.csv"
    path.write_text("to,name\n" + "".join(f"+9198765{i:05d},A\n" for i in range(12)))
    assert [len(c.rows) for c in open_table(path).chunks(4)] == [4, 4, 4]
    monkeypatch.setattr(table_module, "CELLS_AHEAD", 7)
    assert [len(c.rows) for c in open_table(path).chunks(4)] == [3, 3, 3, 3]


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("good_utf8.csv", None),
        ("good_bom.csv", None),
        ("good_utf16.csv", None),
        ("bad_cp1252.csv", "cp1252"),
        ("good_semicolon.csv", None),
        ("good_tab.csv", None),
        ("good_crlf.csv", None),
        ("good_multiline.csv", None),
        ("good.xlsx", None),
    ],
)
def test_write_table_round_trips_each_format(
    tmp_path: Path, name: str, encoding: str | None
) -> None:
    """A file written back in its own format reads back equal: format, header and rows."""
    original = open_table(FILES / name, encoding=encoding)
    out = tmp_path / f"failed{Path(name).suffix}"
    write_table(out, original.format, original.header, rows_of(original))
    again = open_table(out, encoding=encoding)
    assert (again.format, again.header, rows_of(again)) == (
        original.format,
        original.header,
        rows_of(original),
    )
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [("utf-8-sig", codecs.BOM_UTF8), ("utf-16", codecs.BOM_UTF16_LE), ("utf-8", b"to")],
)
def test_write_table_writes_the_bom_again(tmp_path: Path, encoding: str, bom: bytes) -> None:
    """utf-8-sig and utf-16 output start with their byte-order mark, plain UTF-8 does not."""
    out = tmp_path / "out.csv"
    write_table(out, TableFormat("csv", encoding, ","), ["to"], [["+919876543210"]])
    assert out.read_bytes().startswith(bom)


def test_write_table_in_cp1252_survives_a_character_it_lacks(tmp_path: Path) -> None:
    """A cp1252 export keeps the campaign's own accents and writes an emoji it lacks as '?'."""
    out = tmp_path / "out.csv"
    fmt = TableFormat("csv", "cp1252", ",")
    write_table(out, fmt, ["to", "name", "error"], [["+919876543210", "Ren\xe9e", "failed 🚫"]])
    assert out.read_bytes() == "to,name,error\r\n+919876543210,Ren\xe9e,failed ?\r\n".encode(
        "cp1252"
    )


def test_write_table_replaces_an_existing_file(tmp_path: Path) -> None:
    """Writing over an existing file replaces it whole."""
    out = tmp_path / "out.csv"
    out.write_text("old content that is longer than the new one\n" * 10)
    write_table(out, CSV, ["to", "name"], [["+919876543210", "Asha"]])
    assert out.read_bytes() == b"to,name\r\n+919876543210,Asha\r\n"


def test_write_xlsx_keeps_every_cell_a_string(tmp_path: Path) -> None:
    """Workbook cells are written as strings: formulas stay text, leading zeros stay."""
    cells = ["=1+1", "007", "  spaced  ", "é", "a\nb", "+919876543210"]
    out = tmp_path / "out.xlsx"
    write_table(out, XLSX, ["a", "b", "c", "d", "e", "to"], [cells])
    assert rows_of(open_table(out)) == [cells]
    book = openpyxl.load_workbook(out)
    assert {cell.data_type for cell in book.active[2]} == {"s"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(
        [
            ("utf-8", ",", None),
            ("utf-8-sig", ";", None),
            ("utf-16", "\t", None),
            ("cp1252", ",", "cp1252"),
        ]
    ),
    table_headers(),
    st.data(),
)
def test_csv_round_trip_property(
    setup: tuple[str, str, str | None], header: list[str], data: st.DataObject
) -> None:
    """Any cells (quotes, delimiters, line breaks, non-ASCII) survive write_table + open_table."""
    encoding, delimiter, configured = setup
    alphabet = st.characters(codec="cp1252", exclude_characters="\x00") if configured else None
    width = len(header)
    row = st.lists(table_cells(alphabet=alphabet), min_size=width, max_size=width)
    rows = data.draw(st.lists(row, max_size=6))
    fmt = TableFormat("csv", encoding, delimiter)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "round.csv"
        write_table(path, fmt, header, rows)
        table = open_table(path, encoding=configured)
        expected = [r for r in rows if "".join(r).strip()]
        assert table.format == fmt
        assert table.header == tuple(header)
        assert table.scan() == len(expected)
        assert rows_of(table, size=2) == expected


def test_table_format_rejects_nonsense() -> None:
    """A TableFormat with an impossible combination is a programming error."""
    with pytest.raises(ValueError, match="delimiter"):
        TableFormat("csv", "utf-8", "|")
    with pytest.raises(ValueError, match="xlsx"):
        TableFormat("xlsx", "utf-8", ",")
    with pytest.raises(ValueError, match="ods"):
        TableFormat("ods", "", ";")
