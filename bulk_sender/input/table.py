"""Read and write a campaign file (CSV, .xlsx, .xls or .ods) as a table of text cells.

:func:`open_table` first refuses what cannot be read twice (standard input, a pipe, a device:
the file is read several times, and again to resume), then makes one streamed pass over the
file's bytes: it hashes them, tells what the file really is (a workbook or PDF named ``.csv``
is refused with a way out), finds the text encoding and proves every byte decodes, then reads
the header. :meth:`Table.scan` is the up-front structural check of every row (so a broken
file stops before anything is sent) and :meth:`Table.chunks` streams the rows in constant
memory: at most :data:`CELLS_AHEAD` cells are held at a time, however wide the file.

Workbooks: ``.xlsx`` is streamed row by row with openpyxl; ``.xls`` and ``.ods`` (which
openpyxl cannot read) are read with python-calamine, which holds the first sheet's used area
in memory while it is read, as a dense rectangle (``.xls`` caps a sheet at 65,536 x 256
cells; an ``.ods`` is refused beyond :data:`SHEET_CELLS_MAX`, measured before calamine
reads it). calamine reads an ``.xlsx`` about 20 times faster than openpyxl, but one stray
value far to the right makes that rectangle, and the memory, huge: a 32 KB workbook of
2,000 rows with a value in column XFD took 1 GB. A failed export is written as CSV in the
campaign's own dialect, or as ``.xlsx`` for any workbook (Excel and LibreOffice open both).

CSV is parsed with the standard :mod:`csv` module, not pandas. It is about as fast for rows
wanted as Python lists (pandas' C parser is quicker, but converting its frame back to lists
eats the gain), its ``line_num`` gives the physical line of every record (pandas' ParserError
counts a quoted multi-line cell as one line, and its "EOF inside string" row is 0-based), one
parser serves both scan and chunks so they cannot disagree, and its field size limit stops a
stray quote after 128 KiB where pandas would gather the rest of the file into one cell.

Lines are the file's own: ``\\n``, ``\\r\\n`` or a lone ``\\r`` end one; the header is line 1.
Every foreign error (``OSError``, ``UnicodeDecodeError``, ``csv.Error``, openpyxl's,
calamine's) becomes an :class:`~bulk_sender.errors.InputFileError` here.
"""

from __future__ import annotations

import _csv
import codecs
import contextlib
import csv
import hashlib
import itertools
import re
import stat
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, NoReturn, Protocol

if TYPE_CHECKING:  # imported where a workbook is read or written: openpyxl takes ~0.1 s
    import openpyxl
    from python_calamine import CalamineSheet

from bulk_sender.errors import ConfigError, InputFileError
from bulk_sender.input.sheet_area import ods_used_area
from bulk_sender.record.atomic import atomic_write

__all__ = [
    "CELLS_AHEAD",
    "SHEET_CELLS_MAX",
    "Chunk",
    "Kind",
    "Table",
    "TableFormat",
    "open_table",
    "write_table",
]

#: How a campaign file is stored: text (CSV, any dialect) or a workbook.
Kind = Literal["csv", "xlsx", "xls", "ods"]
#: The most cells :meth:`Table.chunks` and :meth:`Table.scan` hold at once: a very wide file
#: gets fewer rows a chunk, so memory does not grow with columns times rows.
CELLS_AHEAD = 1 << 18
#: The largest used area (rows x columns, from A1) of an .ods sheet read: calamine holds it
#: whole, at 32 bytes a cell and more, so this is about 320 MB to 1 GB.
SHEET_CELLS_MAX = 10_000_000

_BLOCK = 1 << 20
_SAMPLE_CHARS = 16 * 1024
_DELIMITERS = (",", ";", "\t")
_SCAN_BLOCK = 1_000  # small blocks die young: far less garbage-collector work than 10k
# Chained after the file's lines. The byte pass refuses NUL, so this cannot be data: as the last
# record it means the file ended cleanly; inside a cell it means a quote was open at the end.
_END_LINE = '\x00"'
_END_MARK = "\x00"

_MAGIC_ZIP = b"PK\x03\x04"
_MAGIC_OLE = b"\xd0\xcf\x11\xe0"
_MAGIC_PDF = b"%PDF"
_ODS_MIMETYPE = b"application/vnd.oasis.opendocument.spreadsheet"
# The workbook kinds by name. A text file named .xls is read as text, as Excel does: CRMs
# export tab-separated "Excel" files under that name.
_WORKBOOK_SUFFIXES: dict[str, Kind] = {".xlsx": "xlsx", ".xls": "xls", ".ods": "ods"}
# A text campaign's failed export keeps one of these extensions; any other gets .csv.
_TEXT_SUFFIXES = frozenset({".csv", ".tsv", ".tab", ".txt", ".xls"})

_UTF8_HINT = (
    'the file is not UTF-8; if it was saved by Excel as "CSV" try '
    '[campaign] encoding = "cp1252" in config.toml'
)
_NUL_MESSAGE = "contains NUL bytes: this looks like a binary file, not CSV"
_EMPTY_MESSAGE = "the file is empty; export the recipients again with a header row"
_READ_TWICE = (
    "the campaign file is read more than once (and again to resume a run), so save the "
    "recipients to a file and give that file's path"
)


@dataclass(frozen=True, slots=True)
class TableFormat:
    """How a campaign file is stored; :func:`write_table` writes the same format back (a
    workbook of any kind as ``.xlsx``)."""

    kind: Kind
    encoding: str
    delimiter: str

    def __post_init__(self) -> None:
        if self.kind != "csv" and (self.encoding or self.delimiter):
            raise ValueError(f"an {self.kind} TableFormat has no encoding or delimiter")
        if self.kind == "csv" and self.delimiter not in _DELIMITERS:
            raise ValueError(f"unsupported CSV delimiter {self.delimiter!r}")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive data rows; ``first_row`` is the 1-based data-row number of ``rows[0]``.

    Data rows are numbered over the non-blank rows after the header; blank lines and rows whose
    every cell is empty or whitespace are skipped and not numbered. Each row is padded with
    ``""`` to the header's length.
    """

    first_row: int
    rows: list[list[str]]


@dataclass(frozen=True, slots=True)
class Table:
    """An opened campaign file: its format, header and content hash."""

    path: Path
    format: TableFormat
    header: tuple[str, ...]
    sha256: str

    @property
    def export_suffix(self) -> str:
        """The failed export's extension: a text campaign's own (``.tsv`` stays ``.tsv``, an
        unusual one or none becomes ``.csv``); ``.xlsx`` for every workbook."""
        if self.format.kind != "csv":
            return ".xlsx"
        suffix = self.path.suffix
        return suffix if suffix.lower() in _TEXT_SUFFIXES else ".csv"

    def scan(self, *, no_line_breaks: frozenset[int] = frozenset()) -> int:
        """Check every row's structure and return the number of data rows.

        Raises :class:`InputFileError` naming the physical line for a row with more cells than
        the header, a quote that never closes, and a line break in a ``no_line_breaks`` column
        (column indexes, such as the phone column's): that is what a stray quote that closes
        much later looks like.
        """
        return sum(len(c.rows) for c in self.chunks(_SCAN_BLOCK, no_line_breaks=no_line_breaks))

    def chunks(
        self, size: int = 10_000, *, no_line_breaks: frozenset[int] = frozenset()
    ) -> Iterator[Chunk]:
        """Stream the data rows, ``size`` at a time (fewer in a file so wide that ``size`` rows
        would hold more than :data:`CELLS_AHEAD` cells), in constant memory, with the checks of
        :meth:`scan`."""
        if size < 1:
            raise ValueError("chunk size must be at least 1")
        if any(not 0 <= c < len(self.header) for c in no_line_breaks):
            raise ValueError(f"no_line_breaks {sorted(no_line_breaks)} is outside the header")
        first = 1
        columns = sorted(no_line_breaks)
        for rows, lines in self._blocks(size):
            for column in columns:
                self._check_one_line(rows, lines, column)
            yield Chunk(first_row=first, rows=rows)
            first += len(rows)

    def _blocks(self, size: int) -> Iterator[tuple[list[list[str]], list[int]]]:
        """Blocks of data rows with the physical line (or sheet row) each starts on."""
        width = len(self.header)
        size = max(1, min(size, CELLS_AHEAD // width))
        if self.format.kind == "csv":
            return _csv_blocks(self.path, self.format, width, size)
        return _sheet_blocks(self.path, self.format.kind, width, size)

    def _check_one_line(self, rows: list[list[str]], lines: list[int], column: int) -> None:
        """Raise if a cell of ``column`` contains a line break."""
        joined = "".join([row[column] for row in rows])  # one C-speed search for the common case
        if "\n" not in joined and "\r" not in joined:
            return
        for row, line in zip(rows, lines, strict=True):
            cell = row[column]
            if "\n" in cell or "\r" in cell:
                name = self.header[column]
                if self.format.kind != "csv":
                    raise InputFileError(self.path, _sheet_break_message(name), line=line)
                opened = line + sum(_line_breaks(c) for c in row[:column])
                raise InputFileError(self.path, _swallow_message(opened, name), line=opened)


def open_table(path: Path, *, encoding: str | None = None) -> Table:
    """Open a campaign file: one byte pass, then the header.

    ``encoding`` is the codec for CSV files without a byte-order mark (default strict UTF-8);
    a BOM always decides (UTF-8 with BOM is ``utf-8-sig``, UTF-16 is ``utf-16``).
    """
    requested = _codec_name(encoding) if encoding is not None else None
    _check_readable_twice(path)
    scanned = _byte_pass(path, requested)
    if scanned.kind != "csv":
        if scanned.kind == "ods":
            _check_ods_area(path)
        fmt = TableFormat(kind=scanned.kind, encoding="", delimiter="")
        header = _sheet_header(path, scanned.kind)
    else:
        fmt = TableFormat(
            kind="csv", encoding=scanned.encoding, delimiter=_detect_delimiter(scanned.sample)
        )
        header = _csv_header(path, fmt)
    return Table(path=path, format=fmt, header=header, sha256=scanned.sha256)


def write_table(
    path: Path, fmt: TableFormat, header: Sequence[str], rows: Iterable[Sequence[str]]
) -> None:
    """Write ``rows`` in the same format as the input (a workbook as ``.xlsx``), atomically
    (temp file, then replace).

    The campaign's own cells were read in ``fmt``'s codec, so they always encode again; a cell
    added beside them (an export's ``error``, with Kaleyra's or Meta's words in it) may hold a
    character a legacy codec such as cp1252 lacks: it is written as ``?`` rather than failing
    the whole export.
    """
    if fmt.kind != "csv":
        with atomic_write(path) as binary:
            _write_xlsx(binary, header, rows)
    else:
        with atomic_write(path, encoding=fmt.encoding, errors="replace") as text:
            _write_csv(text, fmt, header, rows)


# --- what the path is --------------------------------------------------------------------------


def _check_readable_twice(path: Path) -> None:
    """Refuse standard input, a pipe, a device or a socket before opening it: the file is read
    several times, and a pipe would make the first open wait forever for a writer."""
    if str(path) == "-" and not path.exists():
        message = f"reading the campaign from standard input is not supported: {_READ_TWICE}"
        raise InputFileError(path, message)
    with _os_errors(path):
        mode = path.stat().st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a folder gets its own message on open
        return
    what = (
        "a pipe"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device (such as a terminal or /dev/stdin)"
    )
    raise InputFileError(path, f"this is {what}, not a file: {_READ_TWICE}")


# --- the byte pass ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bytes:
    """What the byte pass learned."""

    kind: Kind
    encoding: str
    sha256: str
    sample: str


def _byte_pass(path: Path, requested: str | None) -> _Bytes:
    """Hash the file, tell its kind and, for text, prove it decodes and has no NUL."""
    digest = hashlib.sha256()
    with _os_errors(path), path.open("rb") as file:
        block = file.read(_BLOCK)
        if not block:
            raise InputFileError(path, _EMPTY_MESSAGE)
        kind = _kind(path, block)
        codec = _bom_codec(block) or requested or "utf-8"
        text = _TextCheck(path, codec, auto=requested is None) if kind == "csv" else None
        while block:
            digest.update(block)
            if text is not None:
                text.feed(block)
            block = file.read(_BLOCK)
        if text is not None:
            text.feed(b"", final=True)
    sample = text.sample if text is not None else ""
    return _Bytes(kind=kind, encoding=codec, sha256=digest.hexdigest(), sample=sample)


class _TextCheck:
    """Decodes a file incrementally, tracking the physical line; raises on bad bytes or NUL."""

    __slots__ = ("_auto", "_codec", "_decoder", "_path", "_pending_cr", "line", "sample")

    def __init__(self, path: Path, codec: str, *, auto: bool) -> None:
        self._path = path
        self._codec = codec
        self._auto = auto
        self._decoder = codecs.getincrementaldecoder(codec)("strict")
        self._pending_cr = False
        self.line = 1
        self.sample = ""

    def feed(self, data: bytes, *, final: bool = False) -> None:
        """Decode one block; a character split across blocks is carried to the next."""
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            self._count(self._valid_prefix(data, exc))
            message = _decode_message(self._codec, auto=self._auto)
            raise InputFileError(self._path, message, line=self.line) from exc
        nul = text.find("\x00")
        if nul >= 0:
            self._count(text[:nul])
            raise InputFileError(self._path, _NUL_MESSAGE, line=self.line)
        self._count(text)
        if len(self.sample) < _SAMPLE_CHARS:
            self.sample += text[: _SAMPLE_CHARS - len(self.sample)]

    def _valid_prefix(self, data: bytes, exc: UnicodeDecodeError) -> str:
        """The text before the bad byte, decoded with the same decoder state."""
        carried = len(exc.object) - len(data)  # bytes the decoder held back from earlier blocks
        try:
            return self._decoder.decode(data[: max(0, exc.start - carried)])
        except UnicodeDecodeError:
            return ""

    def _count(self, text: str) -> None:
        """Advance the line number over ``text``; a CRLF split across blocks counts once."""
        if not text:
            return
        self.line += _line_breaks(text) - (self._pending_cr and text[0] == "\n")
        self._pending_cr = text[-1] == "\r"


def _decode_message(codec: str, *, auto: bool) -> str:
    """What to tell the user when the bytes do not decode."""
    if auto:
        return _UTF8_HINT
    if codec == "utf-16":
        return "the file starts with a UTF-16 byte-order mark but is not valid UTF-16"
    return f"the file is not valid {codec}; check [campaign] encoding in config.toml"


def _kind(path: Path, head: bytes) -> Kind:
    """The file's kind by content and name; raises when the two disagree."""
    content = _content(path, head)
    named = _WORKBOOK_SUFFIXES.get(path.suffix.lower())
    if named is not None and (content == named or (content == "zip" and named != "xls")):
        return named  # a damaged .xlsx or .ods is refused by its reader, as damaged
    if content == "csv" and named in (None, "xls"):
        return "csv"
    raise InputFileError(path, _impostor_message(content, path.suffix, named))


_Content = Kind | Literal["zip", "pdf"]


def _content(path: Path, head: bytes) -> _Content:
    """What the bytes are: text ("csv"), a workbook of some kind, another ZIP, or a PDF."""
    if head.startswith(_MAGIC_OLE):
        return "xls"  # or another Office 97 file, or an encrypted .xlsx: calamine tells
    if head.startswith(_MAGIC_PDF):
        return "pdf"
    if not head.startswith(_MAGIC_ZIP):
        return "csv"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "xl/workbook.xml" in names:
                return "xlsx"
            if "mimetype" in names and archive.read("mimetype").strip() == _ODS_MIMETYPE:
                return "ods"
    except (OSError, zipfile.BadZipFile, KeyError, RuntimeError):  # RuntimeError: encrypted
        pass
    return "zip"


def _impostor_message(content: _Content, suffix: str, named: Kind | None) -> str:
    """Why a file is not what its name says, and what to do."""
    name = f"a {suffix} name" if suffix else "no extension"
    if content == "xlsx":
        return (
            f"this is an Excel workbook saved with {name}; rename it to .xlsx or export it as CSV"
        )
    if content == "ods":
        return (
            f"this is an OpenDocument spreadsheet saved with {name}; rename it to .ods or "
            "export it as CSV"
        )
    if content == "xls" and named == "xlsx":
        return (
            "this .xlsx file is encrypted (password-protected) or is an old .xls renamed; save "
            "a copy without a password as .xlsx, or as CSV UTF-8"
        )
    if content == "xls":
        return f"this is an old Excel 97-2003 workbook (.xls) saved with {name}; rename it to .xls"
    if content == "zip":
        return "this is a ZIP archive, not a spreadsheet; unzip it and use the CSV or .xlsx inside"
    if content == "pdf":
        return "this is a PDF document, not a spreadsheet; export the recipients as CSV or .xlsx"
    if named == "ods":
        return (
            "this file is named .ods but is not an OpenDocument spreadsheet; if it is CSV, "
            "rename it .csv"
        )
    return "this file is named .xlsx but is not an Excel workbook; if it is CSV, rename it .csv"


def _bom_codec(head: bytes) -> str | None:
    """The codec a byte-order mark proves, if the file starts with one."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def _codec_name(encoding: str) -> str:
    """The canonical name of a configured codec."""
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        message = f'unknown encoding "{encoding}"; use a name such as "utf-8" or "cp1252"'
        raise ConfigError("[campaign] encoding", message) from exc


def _line_breaks(text: str) -> int:
    """How many line ends ``text`` holds, counting CRLF once and a lone CR as one."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _detect_delimiter(sample: str) -> str:
    """The delimiter among comma, semicolon and tab: sniffed, checked against the header line."""
    complete = sample[: max(sample.rfind("\n"), sample.rfind("\r")) + 1] or sample
    header = next((line for line in complete.splitlines() if line.strip()), "")
    try:
        sniffed = csv.Sniffer().sniff(complete, delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        sniffed = ""
    if sniffed and sniffed in header:
        return sniffed
    best = max(_DELIMITERS, key=header.count)
    return best if header.count(best) else ","


@contextlib.contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    """Translate a failure to open or read the file."""
    try:
        yield
    except FileNotFoundError as exc:
        raise InputFileError(path, "no such file; check the campaign file's path") from exc
    except IsADirectoryError as exc:
        raise InputFileError(path, "this is a folder; give the campaign file's path") from exc
    except OSError as exc:
        raise InputFileError(path, f"the file cannot be read: {exc.strerror}") from exc


# --- CSV -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _csv_reader(path: Path, fmt: TableFormat) -> Iterator[_csv.Reader]:
    """A csv reader over the file's lines plus the end marker; translates every read error."""
    with _os_errors(path), path.open(encoding=fmt.encoding, newline="") as file:
        reader = csv.reader(itertools.chain(file, (_END_LINE,)), delimiter=fmt.delimiter)
        try:
            yield reader
        except csv.Error as exc:
            raise _csv_error(path, fmt, exc, line=reader.line_num) from exc
        except UnicodeDecodeError as exc:
            message = f"the file changed while it was read and no longer decodes as {fmt.encoding}"
            raise InputFileError(path, message) from exc


def _csv_header(path: Path, fmt: TableFormat) -> tuple[str, ...]:
    """The first non-blank record, exactly as in the file."""
    with _csv_reader(path, fmt) as reader:
        line, header = _read_header(reader)
    if header == [_END_LINE]:
        raise InputFileError(path, _EMPTY_MESSAGE)
    if header[-1].endswith(_END_MARK):
        opened = line + sum(_line_breaks(c) for c in header[:-1])
        raise InputFileError(path, _unclosed_message(opened), line=opened)
    return tuple(header)


def _read_header(reader: _csv.Reader) -> tuple[int, list[str]]:
    """Skip blank records; return the first other one and the line it starts on."""
    end = reader.line_num
    for row in reader:
        start, end = end + 1, reader.line_num
        if "".join(row).strip():
            return start, row
    raise AssertionError("the end marker always yields a record")  # pragma: no cover


def _csv_blocks(
    path: Path, fmt: TableFormat, width: int, size: int
) -> Iterator[tuple[list[list[str]], list[int]]]:
    """Blocks of ``size`` padded data rows and the line each starts on."""
    with _csv_reader(path, fmt) as reader:
        _read_header(reader)
        yield from _record_blocks(path, reader, width, size)


def _record_blocks(
    path: Path, reader: _csv.Reader, width: int, size: int
) -> Iterator[tuple[list[list[str]], list[int]]]:
    """The hot loop: skip blank records, pad short ones, refuse long ones; hold back the last.

    The last record is always the end marker, or the record a never-closed quote swallowed.
    """
    pad = [""] * width
    rows: list[list[str]] = []
    lines: list[int] = []
    end = reader.line_num
    for row in reader:
        start, end = end + 1, reader.line_num
        count = len(row)
        if count != width:
            row = _fit(path, row, width, start) if count > width else row + pad[count:]
        first = row[0]
        if (not first or first.isspace()) and not "".join(row).strip():
            continue
        rows.append(row)
        lines.append(start)
        if len(rows) > size:
            yield rows[:size], lines[:size]
            del rows[:size], lines[:size]
    last, start = rows.pop(), lines.pop()
    if last[0] != _END_LINE:
        _raise_unclosed(path, last, start)
    if rows:
        yield rows, lines


def _fit(path: Path, row: list[str], width: int, line: int) -> list[str]:
    """Drop empty cells past the header; raise if a past-the-header cell holds something."""
    if row[-1].endswith(_END_MARK):
        _raise_unclosed(path, row, line)
    if any(cell.strip() for cell in row[width:]):
        raise InputFileError(path, _too_many_message(len(row), width), line=line)
    return row[:width]


def _raise_unclosed(path: Path, row: list[str], line: int) -> NoReturn:
    """Raise for a record whose last real cell ran to the end of the file."""
    cell = max((i for i, c in enumerate(row) if c.endswith(_END_MARK)), default=len(row) - 1)
    opened = line + sum(_line_breaks(c) for c in row[:cell])
    raise InputFileError(path, _unclosed_message(opened), line=opened)


def _csv_error(path: Path, fmt: TableFormat, exc: csv.Error, *, line: int) -> InputFileError:
    """Explain a csv.Error: in practice a cell longer than csv's field size limit."""
    limit = csv.field_size_limit()
    with _os_errors(path), path.open(encoding=fmt.encoding, newline="", errors="replace") as file:
        found = _long_field(file, fmt.delimiter, limit)
    if found is None:
        return InputFileError(path, f"the file cannot be read as CSV ({exc})", line=line)
    start, quoted, closed = found
    if quoted and not closed:
        return InputFileError(path, _unclosed_message(start), line=start)
    if quoted:
        message = (
            f"a quote opened on line {start} swallows the following lines into one cell of "
            f'more than {limit} characters; look for a stray " on line {start}'
        )
        return InputFileError(path, message, line=start)
    message = (
        f"line {start} has a cell of more than {limit} characters; this is not a campaign file"
    )
    return InputFileError(path, message, line=start)


def _long_field(lines: Iterable[str], delimiter: str, limit: int) -> tuple[int, bool, bool] | None:
    """The first field longer than ``limit``: (line it starts on, quoted, quote closed).

    Follows the csv module's rules: a quote is special only at the start of a field, ``""``
    inside quotes is one quote, and text after a closing quote continues the field.
    """
    field_end = re.compile(f"[{re.escape(delimiter)}\r\n]")
    quoted = opened_quoted = False
    at_start = True
    length = begin = 0
    for number, line in enumerate(lines, 1):
        if not quoted and at_start and '"' not in line and len(line) <= limit:
            continue
        pos = 0
        while pos < len(line):
            if quoted:
                quote = line.find('"', pos)
                if quote < 0:
                    length += len(line) - pos
                    break
                length += quote - pos
                doubled = line.startswith('"', quote + 1)
                length += doubled
                quoted = doubled
                pos = quote + 1 + doubled
            elif at_start:
                begin, at_start = number, False
                opened_quoted = quoted = line[pos] == '"'
                pos += quoted
            else:
                match = field_end.search(line, pos)
                stop = match.start() if match else len(line)
                length += stop - pos
                if match is None:
                    break
                if length > limit:
                    return begin, opened_quoted, True
                length, at_start, pos = 0, True, stop + 1
    # a quote still open at the end is reported even when short: nothing closed it
    return (begin, opened_quoted, not quoted) if length > limit or quoted else None


def _unclosed_message(line: int) -> str:
    """The message for a quote that is never closed."""
    return (
        f"a quote opened on line {line} is never closed, so the rest of the file would merge "
        f'into one cell; close the quote or remove the stray " on line {line}'
    )


def _swallow_message(line: int, column: str) -> str:
    """The message for a quote in a one-line column that closes lines later."""
    return (
        f'a quote opened on line {line} swallows the following lines into the "{column}" '
        f'cell, which cannot span lines; remove the stray " on line {line} or close the '
        "quote where the cell ends"
    )


def _too_many_message(count: int, width: int) -> str:
    """The message for a row with more cells than the header."""
    return (
        f"this row has {count} cells but the header has {width}; a cell that contains the "
        "delimiter must be quoted, or the header is missing a column"
    )


def _write_csv(
    file: IO[str], fmt: TableFormat, header: Sequence[str], rows: Iterable[Sequence[str]]
) -> None:
    """Write a CSV with the format's codec (its BOM included) and delimiter."""
    writer = csv.writer(file, delimiter=fmt.delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)


# --- workbooks --------------------------------------------------------------------------------


def _sheet_header(path: Path, kind: Kind) -> tuple[str, ...]:
    """The first non-blank row of the first sheet, trailing empty cells dropped."""
    for _number, row in _sheet_rows(path, kind):
        if any(cell.strip() for cell in row):
            while not row[-1]:
                row.pop()
            return tuple(row)
    raise InputFileError(path, _EMPTY_MESSAGE)


def _sheet_blocks(
    path: Path, kind: Kind, width: int, size: int
) -> Iterator[tuple[list[list[str]], list[int]]]:
    """Blocks of ``size`` padded data rows and their sheet row numbers."""
    rows: list[list[str]] = []
    numbers: list[int] = []
    header_seen = False
    for number, row in _sheet_rows(path, kind):
        if not any(cell.strip() for cell in row):
            continue
        if not header_seen:
            header_seen = True
            continue
        rows.append(_fit_sheet_row(path, row, width, number))
        numbers.append(number)
        if len(rows) == size:
            yield rows, numbers
            rows, numbers = [], []
    if rows:
        yield rows, numbers


def _fit_sheet_row(path: Path, row: list[str], width: int, number: int) -> list[str]:
    """Pad a sheet row to ``width``; raise if a cell past the header holds something."""
    if len(row) <= width:
        return row + [""] * (width - len(row))
    extra = [i for i, cell in enumerate(row) if i >= width and cell.strip()]
    if extra:
        from openpyxl.utils import get_column_letter

        column = get_column_letter(extra[0] + 1)
        message = (
            f"this row has a value in column {column}, but the header has only {width} "
            "columns; add a header for it or delete the value"
        )
        raise InputFileError(path, message, line=number)
    return row[:width]


def _sheet_rows(path: Path, kind: Kind) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells as text) for every row of the first sheet, gaps included."""
    values = _xlsx_values(path) if kind == "xlsx" else _calamine_values(path, kind)
    for number, row in enumerate(values, 1):
        yield number, [_cell_text(value) for value in row]


def _xlsx_values(path: Path) -> Iterator[Sequence[object]]:
    """The first sheet's rows of values, streamed by openpyxl."""
    workbook = _load_workbook(path)
    try:
        values = iter(_first_sheet(path, workbook).iter_rows(values_only=True))
        while (row := _next_sheet_row(path, values)) is not None:
            yield row
    finally:
        workbook.close()


class _Sheet(Protocol):
    """The part of openpyxl's read-only worksheet used here."""

    def reset_dimensions(self) -> None:
        """Forget the stored sheet size."""

    def iter_rows(self, *, values_only: bool) -> Iterator[tuple[object, ...]]:
        """Rows of cell values, empty rows included."""


# openpyxl reports a malformed workbook with whatever its zip, XML or parsing layer raised
# (BadZipFile, KeyError, zlib.error, SyntaxError, ValueError, ...): there is no common base.
def _load_workbook(path: Path) -> openpyxl.Workbook:
    """Open a workbook read-only, with cached formula values."""
    import openpyxl

    with _os_errors(path):
        try:
            return openpyxl.load_workbook(path, read_only=True, data_only=True)
        except OSError:
            raise
        except Exception as exc:
            raise _not_workbook(path, "xlsx") from exc


def _first_sheet(path: Path, workbook: openpyxl.Workbook) -> _Sheet:
    """The workbook's first worksheet, with dimensions re-read from the cells themselves."""
    try:
        sheet: _Sheet = workbook.worksheets[0]
        sheet.reset_dimensions()  # a wrong stored size would otherwise cut rows short
    except Exception as exc:
        raise _not_workbook(path, "xlsx") from exc
    return sheet


def _next_sheet_row(path: Path, values: Iterator[tuple[object, ...]]) -> tuple[object, ...] | None:
    """The next row of values, or None at the end."""
    try:
        return next(values, None)
    except Exception as exc:
        raise _not_workbook(path, "xlsx") from exc


def _calamine_values(path: Path, kind: Kind) -> Iterator[Sequence[object]]:
    """The first sheet's rows of values from calamine, from row 1 and column A like openpyxl's.

    calamine reads the whole sheet before the first row comes out; rows are then made one at
    a time. Its row iterator starts at row 1 but at the used area's first column.
    """
    sheet = _calamine_sheet(path, kind)
    start = sheet.start
    if start is None:  # an empty sheet (and iter_rows would fail on it)
        return
    pad: list[object] = [""] * start[1]
    for row in sheet.iter_rows():
        yield pad + row if pad else row


def _calamine_sheet(path: Path, kind: Kind) -> CalamineSheet:
    """The workbook's first sheet, read whole; every calamine error becomes ours."""
    from python_calamine import CalamineWorkbook, PasswordError

    with _os_errors(path):
        try:
            with CalamineWorkbook.from_path(path) as workbook:
                return workbook.get_sheet_by_index(0)
        except OSError:
            raise
        except PasswordError as exc:
            message = "this workbook is password-protected; save a copy without a password"
            raise InputFileError(path, message) from exc
        except Exception as exc:  # CalamineError, or ValueError/TypeError from odd content
            raise _not_workbook(path, kind) from exc


def _check_ods_area(path: Path) -> None:
    """Refuse an .ods whose used area calamine would need gigabytes to hold."""
    with _os_errors(path):
        try:
            rows, columns = ods_used_area(path)
        except OSError:
            raise
        except Exception as exc:  # BadZipFile, KeyError, ValueError, ExpatError: damaged
            raise _not_workbook(path, "ods") from exc
    if rows * columns <= SHEET_CELLS_MAX:
        return
    from openpyxl.utils import get_column_letter

    message = (
        f"the first sheet's used area is {rows:,} rows by {columns:,} columns (to column "
        f"{get_column_letter(columns)}), more than the {SHEET_CELLS_MAX:,} cells an .ods may "
        "have; delete stray values far right of or below the table, or save the sheet as CSV"
    )
    raise InputFileError(path, message)


def _not_workbook(path: Path, kind: Kind) -> InputFileError:
    """The error for a workbook its reader cannot read."""
    what = "OpenDocument spreadsheet" if kind == "ods" else "Excel workbook"
    program = "LibreOffice or Excel" if kind == "ods" else "Excel"
    message = f"this .{kind} file is not a valid {what}; open it in {program} and save it again"
    return InputFileError(path, message)


def _cell_text(value: object) -> str:
    """A sheet cell as the text a user sees, keeping phone numbers stored as numbers whole.

    A date reads as ``2024-01-05`` (a date cell that openpyxl reads as midnight too), a date
    and time as ``2024-01-05T09:30:00``, in every workbook kind.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime) and value.time() == time() and value.tzinfo is None:
        return value.date().isoformat()
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _sheet_break_message(column: str) -> str:
    """The message for a line break in a one-line column of a workbook."""
    return f'the "{column}" cell on this row contains a line break; put one value in each cell'


def _write_xlsx(file: IO[bytes], header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Write a one-sheet workbook whose every cell is a string."""
    import openpyxl

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet()
    for row in itertools.chain((header,), rows):
        sheet.append([_text_cell(sheet, value) for value in row])
    workbook.save(file)


def _text_cell(sheet: object, value: str) -> object:
    """A cell stored as a string, even when it starts with "=" (never a formula)."""
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, value=value)
    cell.data_type = "s"
    return cell
