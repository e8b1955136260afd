"""What a run leaves behind: the results file and the failed-row export, and their counts.

Both files are rebuilt from scratch at the end of every run by merging the campaign table
(in input order) with the journal's records (sorted by row, then part), and are written to a
temporary file that replaces the old one atomically, so neither is ever half-written.

* ``results.csv``: one row per message (one per input row, more for a cell with several
  numbers), UTF-8, columns :data:`RESULT_COLUMNS`. Its cells carry text from Kaleyra and from
  the input, so a cell a spreadsheet would run as a formula gets a leading ``'``
  (:func:`spreadsheet_safe`, OWASP's rule against CSV injection).
* the failed export: the input rows with a ``failed``, ``not_sent`` or ``invalid`` message (and
  ``unknown`` on request), with the input's own header, cells and format, plus a last column
  ``error``. When only some numbers of a multi-number cell need sending again, that cell keeps
  only those numbers, so a re-run cannot reach the others twice. Its cells are left exactly
  as the user wrote them: it is sent again as a campaign, so it must read back the same.

A file that cannot be written (disk full, permissions) ends the run with
:class:`~bulk_sender.errors.OutputWriteError` (exit 3): the journal keeps the record of what
was sent, so the same command writes the files again and sends nothing already sent.
"""

from __future__ import annotations

import contextlib
import csv
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bulk_sender.errors import OutputWriteError
from bulk_sender.input.phone import split_recipients
from bulk_sender.input.table import Table, write_table
from bulk_sender.model import EXPORTED, UNSENT, Record, Status
from bulk_sender.record.atomic import atomic_write

__all__ = [
    "DELIVERY_COLUMNS",
    "RESULT_COLUMNS",
    "DeliveryCells",
    "Totals",
    "spreadsheet_safe",
    "write_outputs",
    "write_results_only",
]

#: What callbacks said after Kaleyra accepted a message (bulk_sender.delivery fills them in).
DELIVERY_COLUMNS: tuple[str, ...] = (
    "delivery_status", "delivery_code", "delivery_error", "delivered_at", "read_at",
    "delivery_updated_at",
)  # fmt: skip

RESULT_COLUMNS: tuple[str, ...] = (
    "row", "to", "status", "message_id", "http_status", "code", "error", "attempts",
    "ref", "ref1", "ref2", "finished_at", "warning", *DELIVERY_COLUMNS,
)  # fmt: skip
_NO_DELIVERY: tuple[str, ...] = ("",) * len(DELIVERY_COLUMNS)


class DeliveryCells(Protocol):
    """The delivery columns of each message, asked for in results order (by row, then part)."""

    def cells(self, record: Record) -> Sequence[str]: ...


@dataclass(slots=True)
class Totals:
    """Counts over the whole campaign (every run), as written to the results file.

    A send counts the records it writes, a dry run its verdicts: both through :meth:`count`.
    """

    rows: int = 0
    messages: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    warnings: int = 0
    failed_rows: int = 0

    def count(self, record: Record) -> None:
        """Count one message: its status, its code (when it was not sent) and any warning."""
        self.messages += 1
        self.statuses[record.status] += 1
        if record.code and record.status != Status.SENT:
            self.codes[record.code] += 1
        self.warnings += bool(record.warning)

    @property
    def unsent(self) -> int:
        """Messages that did not reach Kaleyra as they should have (a dry run: invalid ones)."""
        return sum(n for status, n in self.statuses.items() if status in UNSENT)


def write_outputs(
    *,
    table: Table,
    to_column: int,
    records: Iterable[Record],
    results: Path,
    failed: Path | None,
    include_unknown: bool = False,
    delivery: DeliveryCells | None = None,
) -> Totals:
    """Write the results file and (unless ``failed`` is None) the failed export.

    ``delivery`` gives each message's delivery columns (empty without it).
    """
    totals = Totals()
    retry = EXPORTED | {Status.UNKNOWN} if include_unknown else EXPORTED
    header = list(table.header)
    error_at = len(header) - 1 if header and header[-1].strip().lower() == "error" else None
    export_header = header if error_at is not None else [*header, "error"]
    again_rows = _SpooledRows()

    with _atomic_csv(results, "the results file", _RESUMABLE) as writer:
        writer.writerow(RESULT_COLUMNS)
        for _, cells, messages in _merge(table, to_column, records):
            totals.rows += 1
            for record in messages:
                totals.count(record)
                writer.writerow(_result_row(record, delivery))
            again = [r for r in messages if r.status in retry]
            if again and failed is not None:
                again_rows.append(_export_row(cells, to_column, error_at, messages, again))
    totals.failed_rows = again_rows.count
    if failed is not None:
        with again_rows, _written(failed, "the failed export", _RESUMABLE):
            write_table(failed, table.format, export_header, again_rows)
    return totals


def write_results_only(records: Iterable[Record], results: Path) -> None:
    """Write ``records`` (already in order) as a results file, e.g. a dry run's verdicts."""
    with _atomic_csv(
        results, "the verdicts", "fix the cause, then run the same command again"
    ) as writer:
        writer.writerow(RESULT_COLUMNS)
        writer.writerows(_result_row(record) for record in records)


class _SpooledRows:
    """Rows for the failed export, kept in memory up to 1 MiB and on disk beyond."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+", newline="")  # noqa: SIM115 - closed by __exit__
        self._writer = csv.writer(self._file)
        self.count = 0

    def append(self, cells: Sequence[str]) -> None:
        self._writer.writerow(cells)
        self.count += 1

    def __iter__(self) -> Iterator[list[str]]:
        self._file.seek(0)
        return iter(csv.reader(self._file))

    def __enter__(self) -> _SpooledRows:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()


def _merge(
    table: Table, to_column: int, records: Iterable[Record]
) -> Iterator[tuple[int, Sequence[str], list[Record]]]:
    """Yield ``(row, cells, records of that row)`` for every data row, in input order."""
    pending = iter(records)
    nxt = next(pending, None)
    for chunk in table.chunks():
        for offset, cells in enumerate(chunk.rows):
            row = chunk.first_row + offset
            mine: list[Record] = []
            while nxt is not None and nxt.row <= row:
                if nxt.row == row:
                    mine.append(nxt)
                nxt = next(pending, None)
            yield row, cells, mine or [_never_reached(row, cells[to_column])]


def _never_reached(row: int, to: str) -> Record:
    """A row the journal has no record of (a run that was stopped at once): not sent."""
    return Record(
        row=row, to=to.strip(), status=Status.NOT_SENT, code="NOT_REACHED",
        error="this row was not reached before the run stopped",
    )  # fmt: skip


def _export_row(
    cells: Sequence[str],
    to_column: int,
    error_at: int | None,
    messages: list[Record],
    again: list[Record],
) -> list[str]:
    out = list(cells)
    if len(again) < len(messages):
        raw = split_recipients(cells[to_column])
        out[to_column] = ", ".join(raw[r.part] for r in again if r.part < len(raw))
    errors = list(dict.fromkeys(_export_error(r) for r in again))
    text = "; ".join(errors)
    if error_at is None:
        out.append(text)
    else:
        out[error_at] = text
    return out


def _export_error(record: Record) -> str:
    code = f"{record.code}: " if record.code and record.code not in record.error else ""
    return f"{record.status}: {code}{record.error}".rstrip(": ")


#: What a cell a spreadsheet runs as a formula starts with: OWASP's CSV Injection page lists
#: =, +, -, @, tab, CR and LF; its ASVS (5.0, 1.2.10) adds NUL.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")


def spreadsheet_safe(cell: str) -> str:
    """``cell`` with a leading ``'`` when a spreadsheet would run it as a formula.

    Excel, LibreOffice and Google Sheets take a cell starting with ``=``, ``+``, ``-``, ``@``,
    a tab, CR or LF (or NUL) for a formula (``=HYPERLINK(...)`` from a server's error text
    would become a link). A signed number, such as the E.164 ``+919845012345``, stays as it
    is: no formula can be made of digits.
    """
    if not cell.startswith(_FORMULA_START):
        return cell
    digits = cell[1:].replace(".", "", 1)
    if cell[0] in "+-" and digits.isascii() and digits.isdigit():
        return cell
    return "'" + cell


#: Where in a results row the cells with Kaleyra's or the input's text are (``to`` apart).
_FOREIGN = tuple(
    RESULT_COLUMNS.index(name)
    for name in ("message_id", "code", "error", "ref", "ref1", "ref2", "warning")
)
#: A cell that starts like a formula, among cells each written after a "\x1f".
_FORMULA_CELL = re.compile("\x1f[=+\\-@\t\r\n\0]")


def _result_row(r: Record, delivery: DeliveryCells | None = None) -> list[object]:
    """The results row of ``r``, every cell from Kaleyra or the input :func:`spreadsheet_safe`.

    One search over those cells finds the rare row that needs it (a million rows are written
    at the end of every run); an E.164 ``to`` is checked on its own, as it always starts with +.
    """
    to = r.to
    if not (to[:1] == "+" and to[1:].isdigit() and to.isascii()):
        to = spreadsheet_safe(to)
    row: list[object] = [
        r.row, to, r.status, r.message_id, "" if r.http_status is None else r.http_status,
        r.code, r.error, r.attempts, r.ref, r.ref1, r.ref2, r.finished_at, r.warning,
    ]  # fmt: skip
    foreign = (r.message_id, r.code, r.error, r.ref, r.ref1, r.ref2, r.warning)
    if _FORMULA_CELL.search("\x1f" + "\x1f".join(foreign)):
        for at in _FOREIGN:
            row[at] = spreadsheet_safe(str(row[at]))
    if delivery is None:
        row.extend(_NO_DELIVERY)
        return row
    status, code, error, *times = delivery.cells(r)
    if _FORMULA_CELL.search(f"\x1f{code}\x1f{error}"):  # Meta's and Kaleyra's text
        code, error = spreadsheet_safe(code), spreadsheet_safe(error)
    row.extend((status, code, error, *times))
    return row


class _Writer(Protocol):
    def writerow(self, row: Iterable[object], /) -> object: ...
    def writerows(self, rows: Iterable[Iterable[object]], /) -> None: ...


_RESUMABLE = (
    "the journal keeps the record of what was sent: fix the cause (disk space, permissions), "
    "then run the same command again; it sends nothing already sent and writes the files again"
)


@contextlib.contextmanager
def _atomic_csv(path: Path, what: str, todo: str) -> Iterator[_Writer]:
    """A csv writer on a temporary file that replaces ``path`` only when the block succeeds."""
    with _written(path, what, todo), atomic_write(path, encoding="utf-8") as handle:
        yield csv.writer(handle, lineterminator="\n")


@contextlib.contextmanager
def _written(path: Path, what: str, todo: str) -> Iterator[None]:
    """Translate a failed write of ``path`` into :class:`OutputWriteError` (one line, exit 3)."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputWriteError(
            f"cannot write {what} {path} ({reason}); {todo}", path=path
        ) from None
