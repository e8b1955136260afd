"""Regenerate the corpus files whose bytes a text editor would not keep.

Run from anywhere: ``python tests/data/files/make_corpus.py``. It rewrites only the files it
owns (BOMs, UTF-16, cp1252, CR and CRLF line ends, NUL bytes, workbooks, impostors, empty);
the plain UTF-8 files beside it are written by hand.
"""

from __future__ import annotations

import zipfile
from datetime import datetime
from pathlib import Path

import openpyxl

HERE = Path(__file__).resolve().parent

ROWS = (
    ("to", "name", "city"),
    ("+919876543210", "Asha", "Pune"),
    ("+919812345678", "Renée", "Delhi"),
)


def lines(rows: tuple[tuple[str, ...], ...], *, delimiter: str = ",", end: str = "\n") -> str:
    """Rows joined as simple CSV text (no cell here needs quoting)."""
    return "".join(delimiter.join(row) + end for row in rows)


def text_files() -> dict[str, bytes]:
    """Every generated text file, by name."""
    plain = lines(ROWS)
    return {
        "good_bom.csv": plain.encode("utf-8-sig"),
        "good_utf16.csv": lines(ROWS, delimiter=";", end="\r\n").encode("utf-16"),
        "good_crlf.csv": (
            b'to,name,note\r\n+919876543210,Asha,"a\r\nb"\r\n\r\n+919812345678,Ravi,ok\r\n'
        ),
        "good_old_mac.csv": lines(ROWS, end="\r").encode(),
        "bad_cp1252.csv": plain.encode("cp1252"),
        "bad_nul.csv": b"to,name\n+919876543210,Asha\n+919812345678,Ra\x00vi\n",
        "bad_pdf_named.csv": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\n",
        "bad_xls_named.csv": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504),
        "empty.csv": b"",
        "blank_only.csv": b"\n\r\n   \n,,\n",
    }


def workbook() -> openpyxl.Workbook:
    """A campaign sheet: a phone stored as a number, one as text with leading zeros."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Recipients"
    sheet.append(["to", "name", "code", "joined", "vip", "score"])
    sheet.append([919876543210, "Asha", "007", None, True, 1.5])
    sheet.append([None, None, None, None, None, None])
    sheet.append(["+91 98123 45678", "Ravi", "0042", None, False, 3.0])
    sheet["D2"] = 45292  # a plain integer, not a date
    sheet["D4"] = datetime(2024, 1, 5, 9, 30)
    second = book.create_sheet("Ignored")
    second.append(["not", "read"])
    return book


def write_all() -> None:
    """Write every generated file beside this script."""
    for name, data in text_files().items():
        (HERE / name).write_bytes(data)
    workbook().save(HERE / "good.xlsx")
    (HERE / "bad_xlsx_named.csv").write_bytes((HERE / "good.xlsx").read_bytes())
    with zipfile.ZipFile(HERE / "bad_not_workbook.xlsx", "w") as archive:
        archive.writestr("readme.txt", "a zip file, but not a workbook")


if __name__ == "__main__":
    write_all()
