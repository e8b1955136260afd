"""Opt-out files: the numbers in them, read exactly as a campaign's recipients are.

An opt-out file is a CSV, ``.xlsx``, ``.xls`` or ``.ods`` file, read by
:func:`~bulk_sender.input.table.open_table` (encodings, delimiters, Excel's numbers kept whole),
whose phone column has any name a campaign's recipient column may have ("Mobile No.",
"WhatsApp Number", ``to``...: :mod:`bulk_sender.input.recipient`). A file of bare numbers with
no header row works too: its first cell is then a phone number, not a name. Each number is
normalised to E.164 like a campaign's (:func:`~bulk_sender.input.phone.normalise`, with
``[campaign] default_region``; a text file in another encoding than UTF-8 needs
``[campaign] encoding`` too), and a cell may hold several numbers separated by commas.

Empty cells are skipped. A cell that is not empty but holds no readable number stops the run
(exit 2, naming the file and the row): a number that cannot be read cannot be held back, and
the person who asked to stop might be sent the campaign.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from bulk_sender.errors import InputFileError
from bulk_sender.input.phone import normalise, split_recipients
from bulk_sender.input.recipient import RECIPIENT_EXAMPLES, is_recipient_header
from bulk_sender.input.table import Table, open_table

__all__ = ["OptOutList", "read_opt_out_file"]

_SHOWN_PROBLEMS: Final = 3


@dataclass(frozen=True, slots=True)
class OptOutList:
    """The numbers of one opt-out file: E.164 digits as integers, sorted, each once."""

    name: str
    numbers: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.numbers)

    def contains(self, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """For each of ``keys``, whether the file lists it (one vectorised search)."""
        if not len(self.numbers) or not len(keys):
            return np.zeros(len(keys), dtype=np.bool_)
        at = np.minimum(np.searchsorted(self.numbers, keys), len(self.numbers) - 1)
        found: npt.NDArray[np.bool_] = self.numbers[at] == keys
        return found


def read_opt_out_file(
    path: Path, *, default_region: str | None, encoding: str | None = None
) -> OptOutList:
    """Read the opt-out file at ``path`` (see the module docstring); ``encoding`` is
    ``[campaign] encoding``, as for a campaign file."""
    table = open_table(path, encoding=encoding)
    column, headerless = _phone_column(table, default_region)
    numbers: list[int] = []
    problems: list[str] = []
    if headerless:
        _read_cell(table.header[0], 0, default_region, numbers, problems)
    for chunk in table.chunks():
        for offset, cells in enumerate(chunk.rows):
            _read_cell(cells[column], chunk.first_row + offset, default_region, numbers, problems)
    if problems:
        raise InputFileError(path, _problems_message(problems))
    return OptOutList(path.name, np.unique(np.array(numbers, dtype=np.int64)))


def _phone_column(table: Table, region: str | None) -> tuple[int, bool]:
    """The phone column's index, and whether the file has no header row (bare numbers)."""
    matches = [i for i, name in enumerate(table.header) if is_recipient_header(name)]
    if len(matches) == 1:
        return matches[0], False
    if not matches and table.header and normalise(table.header[0], region).e164 is not None:
        return 0, True
    if len(matches) > 1:
        names = " and ".join(repr(table.header[i]) for i in matches)
        message = f"two columns both mean the phone number: {names}; keep only one"
    else:
        found = ", ".join(repr(name) for name in table.header) or "none"
        message = (
            f"no phone column in this opt-out file: the columns found are {found}; name it "
            f"{', '.join(RECIPIENT_EXAMPLES[:4])} or the like, or give a file of bare numbers"
        )
    raise InputFileError(table.path, message, line=1)


def _read_cell(
    cell: str, row: int, region: str | None, numbers: list[int], problems: list[str]
) -> None:
    for raw in split_recipients(cell):
        verdict = normalise(raw, region)
        if verdict.e164 is not None:
            numbers.append(int(verdict.e164[1:]))
        else:
            where = "the first line" if row == 0 else f"data row {row}"
            problems.append(f"{where}: {raw!r}: {verdict.problem}")


def _problems_message(problems: list[str]) -> str:
    shown = "; ".join(problems[:_SHOWN_PROBLEMS])
    more = (
        f" (and {len(problems) - _SHOWN_PROBLEMS} more)" if len(problems) > _SHOWN_PROBLEMS else ""
    )
    return (
        f"{len(problems)} number(s) in this opt-out file cannot be read: {shown}{more}. A number "
        "that cannot be read cannot be held back, so bulk-sender stopped before doing anything: "
        "fix those cells (or delete the rows), then run the same command again"
    )
