"""Write small workbooks for the tests: .xlsx (openpyxl), .xls (xlwt) and .ods (odfpy).

Each writer takes rows of Python values, ``None`` for an empty cell, and stores numbers as
numbers, dates as dates and booleans as booleans, the way a spreadsheet program would, so
the reader's cell-to-text rules are tested on real typed cells. ``origin`` is the 0-based
(row, column) of the first value, to place a table away from A1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path

import openpyxl
import xlwt
from odf.opendocument import OpenDocumentSpreadsheet
from odf.table import Table, TableCell, TableRow
from odf.text import P

Rows = Sequence[Sequence[object]]
Writer = Callable[..., Path]


def write_xlsx(path: Path, rows: Rows, *, origin: tuple[int, int] = (0, 0)) -> Path:
    """An .xlsx whose first sheet holds ``rows`` from ``origin``, and a second sheet."""
    book = openpyxl.Workbook()
    sheet = book.active
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is not None:
                sheet.cell(row=origin[0] + r + 1, column=origin[1] + c + 1, value=value)
    book.create_sheet("Ignored").append(["not", "read"])
    book.save(path)
    return path


def write_xls(path: Path, rows: Rows, *, origin: tuple[int, int] = (0, 0)) -> Path:
    """An Excel 97-2003 .xls whose first sheet holds ``rows`` from ``origin``."""
    book = xlwt.Workbook()
    sheet = book.add_sheet("Recipients")
    styles: dict[type, object] = {
        date: xlwt.easyxf(num_format_str="YYYY-MM-DD"),
        datetime: xlwt.easyxf(num_format_str="YYYY-MM-DD HH:MM"),
    }
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is None:
                continue
            style = styles.get(type(value))
            at = (origin[0] + r, origin[1] + c)
            if style is None:
                sheet.write(*at, value)
            else:
                sheet.write(*at, value, style)
    book.add_sheet("Ignored").write(0, 0, "not read")
    book.save(str(path))
    return path


def write_ods(path: Path, rows: Rows, *, origin: tuple[int, int] = (0, 0)) -> Path:
    """An OpenDocument .ods whose first table holds ``rows`` from ``origin``."""
    doc = OpenDocumentSpreadsheet()
    table = Table(name="Recipients")
    for _ in range(origin[0]):
        table.addElement(TableRow())
    for row in rows:
        element = TableRow()
        for value in [None] * origin[1] + list(row):
            element.addElement(_ods_cell(value))
        table.addElement(element)
    doc.spreadsheet.addElement(table)
    other = Table(name="Ignored")
    other.addElement(TableRow())
    doc.spreadsheet.addElement(other)
    doc.save(str(path))
    return path


def _ods_cell(value: object) -> TableCell:
    """One typed .ods cell, with the text a spreadsheet would show."""
    if value is None:
        return TableCell()
    if isinstance(value, bool):
        cell = TableCell(valuetype="boolean", booleanvalue=str(value).lower())
    elif isinstance(value, int | float):
        cell = TableCell(valuetype="float", value=value)
    elif isinstance(value, date):
        cell = TableCell(valuetype="date", datevalue=value.isoformat())
    else:
        cell = TableCell(valuetype="string")
    cell.addElement(P(text=str(value)))
    return cell


WRITERS: dict[str, Writer] = {"xlsx": write_xlsx, "xls": write_xls, "ods": write_ods}
