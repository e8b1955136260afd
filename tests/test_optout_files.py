"""Opt-out files in the formats people keep them in, read exactly as campaign files are."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulk_sender.audience.optout_files import read_opt_out_file
from bulk_sender.errors import InputFileError
from tests.workbooks import Writer, write_ods, write_xls, write_xlsx

A, B, C = 919845012345, 919845012346, 447700900123


def _numbers(path: Path, region: str | None = "IN", encoding: str | None = None) -> list[int]:
    listed = read_opt_out_file(path, default_region=region, encoding=encoding)
    return [int(n) for n in listed.numbers]


def test_a_crm_export_with_its_own_header_and_formatting(tmp_path: Path) -> None:
    """'Mobile No.', a BOM, semicolons, spaces, dashes, 0091, a cell of two numbers, blank rows:
    each number once, in E.164, sorted."""
    path = tmp_path / "optouts.csv"
    path.write_bytes(
        "\ufeffName;Mobile No.;Reason\n"
        "Asha;+91 98450-12345;asked\n"
        "\n"
        "Ravi;0091 98450 12346;STOP\n"
        "Meera;098450 12345, +44 7700 900123;twice\n"
        ";;\n".encode()
    )
    assert _numbers(path) == [C, A, B]


def test_a_windows_excel_csv_in_cp1252(tmp_path: Path) -> None:
    """Excel's 'CSV' is cp1252 on Windows: with [campaign] encoding, as for a campaign."""
    path = tmp_path / "optouts.csv"
    path.write_bytes(
        "Nom,WhatsApp Number\r\nJosé,9845012345\r\nRenée,9845012346\r\n".encode("cp1252")
    )
    assert _numbers(path, encoding="cp1252") == [A, B]


def test_a_file_of_bare_numbers_without_a_header(tmp_path: Path) -> None:
    """A list pasted from somewhere: no header row, its first line is a number too."""
    path = tmp_path / "optouts.txt"
    path.write_text("9845012345\n+919845012346\n")
    assert _numbers(path) == [A, B]


@pytest.mark.parametrize("writer", [write_xlsx, write_xls, write_ods])
def test_workbooks_with_numbers_stored_as_numbers(tmp_path: Path, writer: Writer) -> None:
    """Excel stores 919845012345 as a number (a float in .xls/.ods): it reads whole."""
    path = writer(
        tmp_path / f"optouts.{writer.__name__[-4:].lstrip('_')}",
        [["Contact No", "Since"], [919845012345, "2026-01-02"], [9845012346, None], [None, None]],
    )
    assert _numbers(path) == [A, B]


def test_a_number_excel_damaged_stops_before_anything_is_sent(tmp_path: Path) -> None:
    """Scientific notation lost the last digits: the file is refused, naming the row and why."""
    path = tmp_path / "optouts.csv"
    path.write_text("phone\n+919845012345\n9.19845E+11\nnot a number\n")
    with pytest.raises(InputFileError) as refused:
        read_opt_out_file(path, default_region="IN")
    message = str(refused.value)
    assert "2 number(s)" in message
    assert "data row 2: '9.19845E+11'" in message
    assert "scientific notation" in message
    assert "data row 3" in message


def test_numbers_without_a_country_code_need_the_default_region(tmp_path: Path) -> None:
    """A national number cannot be placed without [campaign] default_region: refused."""
    path = tmp_path / "optouts.csv"
    path.write_text("mobile\n9845012345\n")
    with pytest.raises(InputFileError, match="default_region"):
        read_opt_out_file(path, default_region=None)


def test_a_file_with_no_phone_column_is_refused(tmp_path: Path) -> None:
    """Columns none of which names a phone, and a first cell that is no number: refused."""
    path = tmp_path / "optouts.csv"
    path.write_text("Name,Email\nAsha,a@example.com\n")
    with pytest.raises(InputFileError, match="no phone column"):
        read_opt_out_file(path, default_region="IN")
