"""The ``report --failed`` export: the rows whose delivery failed and that are worth sending again.

Written like ``send``'s failed export: the campaign's own header, cells, encoding and delimiter
(an ``.xlsx`` for a workbook campaign), plus a last column ``error`` saying why each row failed.
A cell with several numbers keeps only the numbers to send again. Which failures go in is
:func:`bulk_sender.delivery.codes.resend`'s decision: a message reported failed was not
delivered, so sending it again cannot give anyone a second copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

from bulk_sender.delivery.codes import resend
from bulk_sender.delivery.events import DeliveryStatus
from bulk_sender.delivery.precedence import DeliveryState
from bulk_sender.input.phone import split_recipients
from bulk_sender.input.table import Table, write_table
from bulk_sender.stores.sqlite_delivery import DeliveryRow

__all__ = ["again", "export_header", "write_resend_export"]


def again(failures: Iterable[DeliveryRow], *, now: datetime) -> Iterator[tuple[int, int, str]]:
    """``(row, part, why)`` of every failed message worth sending again, in order."""
    for found in failures:
        state = DeliveryState(rank=found.status_rank, failed=found.failed, not_sent=found.not_sent)
        status = state.status
        code, words = state.failure()
        worth, why = resend(status, code, last_wrote=found.last_incoming, now=now)
        if worth:
            label = "not sent" if status is DeliveryStatus.NOT_SENT else f"failed {code}".strip()
            yield found.row, found.part, f"{label}: {why} ({words})" if words else f"{label}: {why}"


def export_header(header: Sequence[str]) -> tuple[list[str], int | None]:
    """The export's header and where its ``error`` column is (None: appended)."""
    cols = list(header)
    error_at = len(cols) - 1 if cols and cols[-1].strip().lower() == "error" else None
    return (cols if error_at is not None else [*cols, "error"]), error_at


def write_resend_export(
    *,
    table: Table,
    to_column: int,
    resendable: Iterator[tuple[int, int, str]],
    path: Path,
) -> int:
    """Write the export to ``path``; return its number of rows."""
    header, error_at = export_header(table.header)
    written = [0]

    def rows() -> Iterator[list[str]]:
        pending = next(resendable, None)
        for chunk in table.chunks():
            for offset, cells in enumerate(chunk.rows):
                row = chunk.first_row + offset
                mine: list[tuple[int, str]] = []
                while pending is not None and pending[0] <= row:
                    if pending[0] == row:
                        mine.append((pending[1], pending[2]))
                    pending = next(resendable, None)
                if mine:
                    written[0] += 1
                    yield _export_row(cells, to_column, error_at, mine)

    write_table(path, table.format, header, rows())
    return written[0]


def _export_row(
    cells: Sequence[str], to_column: int, error_at: int | None, parts: list[tuple[int, str]]
) -> list[str]:
    out = list(cells)
    numbers = split_recipients(cells[to_column])
    if len(numbers) > 1 and len(parts) < len(numbers):
        out[to_column] = ", ".join(numbers[p] for p, _ in parts if p < len(numbers))
    text = "; ".join(dict.fromkeys(why for _, why in parts))
    if error_at is None:
        out.append(text)
    else:
        out[error_at] = text
    return out
