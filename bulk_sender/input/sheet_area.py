"""How big an .ods sheet's used area is, found before calamine reads the sheet whole.

calamine holds a sheet as a dense rectangle, from its first value to its last in both
directions: one stray value in column XFD of a 2,000-row table is 32 million cells, and an
8 KB .ods of that shape took 2 GB to read. :func:`ods_used_area` streams the first table of
``content.xml`` through expat (constant memory, no tree) and returns the rows and columns up to
the last cell that holds anything, counting ``number-rows-repeated`` and
``number-columns-repeated`` runs without expanding them; empty cells LibreOffice writes for
formatting do not count, as calamine does not keep them either.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.parsers import expat

__all__ = ["ods_used_area"]

_TABLE_NS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_OFFICE_NS = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_TABLE = f"{_TABLE_NS} table"
_ROW = f"{_TABLE_NS} table-row"
_CELLS = frozenset({f"{_TABLE_NS} table-cell", f"{_TABLE_NS} covered-table-cell"})
_ROWS_REPEATED = f"{_TABLE_NS} number-rows-repeated"
_COLUMNS_REPEATED = f"{_TABLE_NS} number-columns-repeated"
_VALUE_TYPE = f"{_OFFICE_NS} value-type"
_READ = 1 << 16


class _FirstTableRead(Exception):
    """Raised from a handler to stop parsing after the first table."""


class _Extent:
    """The used area of the first table, from expat's start and end events."""

    def __init__(self) -> None:
        self.rows = self.columns = 0
        self._tables = 0
        self._row = self._column = self._row_end = 0
        self._row_repeat = self._cell_repeat = 1
        self._in_cell = self._cell_used = False

    def start(self, name: str, attributes: dict[str, str]) -> None:
        """An element opens: a table, a row, a cell, or something inside a cell."""
        if name == _TABLE:
            self._tables += 1
        if self._tables != 1:
            return
        if name == _ROW:
            self._column = self._row_end = 0
            self._row_repeat = int(attributes.get(_ROWS_REPEATED, 1))
        elif name in _CELLS:
            self._in_cell = True
            self._cell_used = _VALUE_TYPE in attributes
            self._cell_repeat = int(attributes.get(_COLUMNS_REPEATED, 1))
        elif self._in_cell:
            self._cell_used = True  # text, an annotation, an image: calamine may keep it

    def end(self, name: str) -> None:
        """An element closes; the first table's end stops the parse."""
        if self._tables != 1:
            return
        if name in _CELLS:
            if self._cell_used:
                self._row_end = self._column + self._cell_repeat
            self._column += self._cell_repeat
            self._in_cell = False
        elif name == _ROW:
            if self._row_end:
                self.rows = self._row + self._row_repeat
                self.columns = max(self.columns, self._row_end)
            self._row += self._row_repeat
        elif name == _TABLE:
            raise _FirstTableRead


def ods_used_area(path: Path) -> tuple[int, int]:
    """(rows, columns) of the first table's used area, from A1 to its farthest value.

    Raises :class:`OSError`, :class:`zipfile.BadZipFile`, :class:`KeyError` (no
    ``content.xml``), :class:`ValueError` or :class:`expat.ExpatError` for a damaged file.
    """
    extent = _Extent()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = extent.start
    parser.EndElementHandler = extent.end
    with zipfile.ZipFile(path) as archive, archive.open("content.xml") as content:
        try:
            while block := content.read(_READ):
                parser.Parse(block, False)
            parser.Parse(b"", True)
        except _FirstTableRead:
            pass
    return extent.rows, extent.columns
