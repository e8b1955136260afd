"""Campaigns that are not CSV or Excel files: a pandas DataFrame, an iterable of mappings, Parquet.

Each is written once, block by block, to a CSV file beside the results ("spooled"), and the
run reads that file like any campaign file. Everything that works for a file then works
unchanged: the journal's campaign identity is the hash of the spooled bytes, which are a pure
function of the rows' content (so the same frame sent again resumes and sends nothing twice,
and a changed one is refused like a changed file); the failed export is a CSV with the same
columns; the planning process reads the spooled file. The file is named after that hash
(``<results stem>.campaign-<hash>.csv``), so a run never replaces the input of another run
that is reading it.

Every cell becomes the text the CSV loader would have read: a string as it is; an integer
(a phone number in an integer column) as its digits; a float with nothing after the point as
its digits (``919876543210.0`` -> ``919876543210``), another float as Python writes it; a
missing value (``None``, ``NaN``, ``NaT``, ``pd.NA``) as an empty cell; ``True``/``False`` as
``TRUE``/``FALSE``; a date or time in ISO 8601. A DataFrame's index is not a column.

pandas and pyarrow are optional (``pip install 'bulk-sender[pandas]'``): nothing here imports
them until a frame or a Parquet file is actually given. A Parquet file is read with pyarrow in
batches of at most one row group, so memory stays flat however large the file.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import io
import os
import secrets
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from bulk_sender.errors import InputFileError, UsageError
from bulk_sender.input.table import Table, TableFormat

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PARQUET_SUFFIXES", "cell_text", "is_dataframe", "spool", "spool_parquet"]

#: File name endings read as Parquet.
PARQUET_SUFFIXES: frozenset[str] = frozenset({".parquet", ".pq"})
_BLOCK_ROWS = 20_000
_FORMAT = TableFormat(kind="csv", encoding="utf-8", delimiter=",")
_EXTRA_HINT = "pip install 'bulk-sender[pandas]'"

Block = list[Sequence[str]]


def is_dataframe(value: object) -> TypeGuard[pd.DataFrame]:
    """Whether ``value`` is a pandas DataFrame (without importing pandas if it is not loaded)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def spool(
    source: pd.DataFrame | Iterable[Mapping[str, object]], *, folder: Path, stem: str
) -> Table:
    """Write a DataFrame or mappings to ``folder`` as a campaign CSV; return it opened."""
    if is_dataframe(source):
        header, blocks = _frame_blocks(source)
    else:
        header, blocks = _mapping_blocks(cast(Iterable[Mapping[str, object]], source))
    return _write(folder, stem, header, blocks)


def spool_parquet(path: Path, *, folder: Path, stem: str) -> Table:
    """Write the rows of the Parquet file ``path`` to ``folder`` as a campaign CSV."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            f"{path}: reading a Parquet campaign needs pyarrow: {_EXTRA_HINT}"
        ) from None
    try:
        parquet = pq.ParquetFile(path)
        header = [str(name) for name in parquet.schema_arrow.names]
    except FileNotFoundError:
        raise InputFileError(path, "no such file; check the campaign file's path") from None
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError, ...: no common base
        raise InputFileError(path, f"this is not a Parquet file pyarrow can read ({exc})") from exc
    return _write(folder, stem, header, _parquet_blocks(path, parquet))


def cell_text(value: object) -> str:
    """One cell as the text the CSV loader would have read (see the module docstring)."""
    if isinstance(value, str):
        return value
    if value is None or _missing(value):
        return ""
    if type(value).__module__ == "numpy":  # a numpy scalar: its Python value
        value = value.item()  # type: ignore[attr-defined]
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, decimal.Decimal) and value == value.to_integral_value():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _missing(value: object) -> bool:
    """NaN, NaT and pandas' NA: the values that are not equal to themselves (NA: not a bool)."""
    try:
        return bool(value != value)
    except TypeError:  # pd.NA's comparisons give NA, whose truth is undefined
        return True


# --- sources -----------------------------------------------------------------------------------


def _frame_blocks(frame: pd.DataFrame) -> tuple[list[str], Iterator[Block]]:
    """The frame's column names, and its rows as text in blocks (each column converted at once)."""
    header = [str(name) for name in frame.columns]
    if not header:
        raise UsageError("the campaign DataFrame has no columns; it needs at least a phone column")

    def blocks() -> Iterator[Block]:
        for start in range(0, len(frame), _BLOCK_ROWS):
            part = frame.iloc[start : start + _BLOCK_ROWS]
            columns = [_column_text(part.iloc[:, i]) for i in range(len(header))]
            yield list(zip(*columns, strict=True))

    return header, blocks()


def _column_text(column: pd.Series[Any]) -> list[str]:
    """One column of a block as text; missing values (by pandas' own test) empty."""
    values = column.tolist()
    missing = column.isna()
    if column.dtype.kind in "iu" and not missing.any():  # integers, none missing: their digits
        return [str(v) for v in values]
    gone = missing.tolist()
    return ["" if absent else cell_text(v) for v, absent in zip(values, gone, strict=True)]


def _mapping_blocks(rows: Iterable[Mapping[str, object]]) -> tuple[list[str], Iterator[Block]]:
    """The first mapping's keys as the header, and every mapping's values in that order."""
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        raise UsageError("the campaign has no rows: give at least one mapping with a phone column")
    header = _keys(first, 1)

    def blocks() -> Iterator[Block]:
        block: Block = []
        for number, row in enumerate(_chain(first, iterator), 1):
            keys = _keys(row, number)
            if keys != header and not set(keys) <= set(header):
                extra = next(k for k in keys if k not in header)
                raise UsageError(
                    f"row {number} of the campaign has the key {extra!r}, which the first row "
                    "does not have; the first row's keys are the columns: give every row the "
                    "same keys"
                )
            block.append([cell_text(row.get(name)) for name in header])
            if len(block) == _BLOCK_ROWS:
                yield block
                block = []
        if block:
            yield block

    return header, blocks()


def _chain(first: Mapping[str, object], rest: Iterator[Mapping[str, object]]) -> Iterator[Any]:
    yield first
    yield from rest


def _keys(row: object, number: int) -> list[str]:
    if not isinstance(row, Mapping):
        raise UsageError(
            f"row {number} of the campaign is a {type(row).__name__}, not a mapping: give a "
            "path, a pandas DataFrame or an iterable of dicts (column name -> value)"
        )
    return [str(key) for key in row]


def _parquet_blocks(path: Path, parquet: Any) -> Iterator[Block]:
    """The rows of a Parquet file as text, a batch (within one row group) at a time."""
    try:
        for batch in parquet.iter_batches(batch_size=_BLOCK_ROWS):
            columns = [[cell_text(v) for v in column.to_pylist()] for column in batch.columns]
            yield list(zip(*columns, strict=True))
    except Exception as exc:  # a corrupt page or column chunk, whatever pyarrow calls it
        raise InputFileError(path, f"pyarrow cannot read this Parquet file ({exc})") from exc


# --- the spooled file --------------------------------------------------------------------------


def _write(folder: Path, stem: str, header: list[str], blocks: Iterator[Block]) -> Table:
    """Write ``header`` and ``blocks`` as CSV into ``folder``, named by the hash of its bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    temp = folder / f".{stem}.campaign.{secrets.token_hex(6)}.tmp"
    try:
        with temp.open("xb") as out:
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\r\n")
            rows = 0
            for block in _with_header(header, blocks):
                writer.writerows(block)
                data = _encoded(text.getvalue(), header, block, rows)
                digest.update(data)
                out.write(data)
                text.seek(0)
                text.truncate()
                rows += len(block)
            out.flush()
            os.fsync(out.fileno())
        final = folder / f"{stem}.campaign-{digest.hexdigest()[:16]}.csv"
        temp.replace(final)  # the same name means the same bytes: replacing it changes nothing
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return Table(path=final, format=_FORMAT, header=tuple(header), sha256=digest.hexdigest())


def _with_header(header: list[str], blocks: Iterator[Block]) -> Iterator[Block]:
    """The header as a block of its own (row 0), then the rows."""
    yield [header]
    yield from blocks


def _encoded(text: str, header: list[str], block: Block, before: int) -> bytes:
    """``text`` as UTF-8. A NUL (which no campaign file may hold) or a lone surrogate (which is
    not text) is refused, naming the row (1 = the first row; 0 = the column names)."""
    try:
        if "\x00" not in text:
            return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    for offset, cells in enumerate(block):
        for name, cell in zip(header, cells, strict=True):
            if "\x00" in cell or not _encodable(cell):
                where = f"row {before + offset}" if before + offset else "the column names"
                raise UsageError(
                    f"the campaign's {where}, column {name!r}, holds a NUL or a character that "
                    "is not text (a lone surrogate); clean it and send again"
                )
    raise AssertionError("unreachable: the text held a NUL or a surrogate")  # pragma: no cover


def _encodable(cell: str) -> bool:
    try:
        cell.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
