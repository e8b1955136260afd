"""Every file a run will write, checked before the first request is sent.

A send writes the results file (``--out``), the failed export (``--failed``), the journal
(with its ``-wal`` and ``-shm`` files) and the lock beside the results, and the summary JSON
(``--summary-json``); a dry run its verdicts and the summary. Without this check a path that
cannot be written is found only at the end, after every message went out, and on every rerun
again; a path that is the campaign file replaces it. :func:`check_outputs` refuses, with one
:class:`~bulk_sender.errors.OutputPathError` (exit 2, nothing sent), an output:

* whose folder does not exist. It is refused, not created: a mistyped folder, or a network
  share that is not mounted, would get a journal of its own, which knows nothing of what the
  campaign already sent, so a later run with the right path could send it all again;
* that is a folder or, when it exists, not a regular file (``/dev/null``, a pipe: the atomic
  rename would replace the device itself);
* whose folder does not take a new file (one byte is written to a new file there, which is
  removed: a read-only mount, permissions, a full disk);
* that is opened in place (the journal, the lock) and exists but cannot be read and written;
* that is the campaign file, or another output: compared by real path (symlinks,
  ``./c.csv`` and ``c.csv``) and by device and inode (hard links).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bulk_sender.errors import OutputPathError
from bulk_sender.record.journal import journal_path
from bulk_sender.record.lock import lock_path

__all__ = ["Output", "check_outputs", "send_outputs"]


@dataclass(frozen=True, slots=True)
class Output:
    """One file a run writes, and how the user sets its path.

    ``given_as`` is the option that sets it (``--out``); ``what`` names the file when the
    option alone does not, and ``derived`` says its name is made from the option's path (the
    journal and the lock are named after ``--out``). ``in_place`` files are opened and changed
    where they are, not replaced by a rename.
    """

    given_as: str
    path: Path
    what: str = ""
    derived: bool = False
    in_place: bool = False

    def __str__(self) -> str:
        if not self.what:
            return f"{self.given_as} {self.path}"
        how = f"named after {self.given_as}" if self.derived else self.given_as
        return f"{self.what} {self.path} ({how})"


def send_outputs(results: Path, *failed: Path | None) -> list[Output]:
    """What a send writes for the results file ``results``: it, its journal and lock, and the
    failed export (each of ``failed`` that is not None: the one it will be, or those it may be)."""
    journal = journal_path(results)

    def beside(path: Path, what: str) -> Output:
        return Output("--out", path, what, derived=True, in_place=True)

    return [
        Output("--out", results),
        beside(journal, "the journal"),
        beside(Path(f"{journal}-wal"), "the journal's write-ahead log"),
        beside(Path(f"{journal}-shm"), "the journal's shared-memory file"),
        beside(lock_path(results), "the lock file"),
        *(Output("--failed", path, "the failed export") for path in failed if path is not None),
    ]


def check_outputs(
    campaign: Path, outputs: Sequence[Output], *, others: Sequence[Output] = ()
) -> None:
    """Refuse the first of ``outputs`` that cannot or must not be written (module docstring).

    ``others`` are written too but checked elsewhere: ``outputs`` need only differ from them.
    """
    _check_distinct(campaign, outputs, others)
    for output in outputs:
        _check_file(output)
    probed: set[Path] = set()
    for output in outputs:
        if output.path.parent not in probed:
            probed.add(output.path.parent)
            _check_folder_accepts_files(output.path.parent, output)


def _check_distinct(campaign: Path, outputs: Sequence[Output], others: Sequence[Output]) -> None:
    everything = [*outputs, *others]
    for i, output in enumerate(outputs):
        if _same_file(output.path, campaign):
            raise _refused(
                output,
                f"{output} is the campaign file itself: writing it would destroy the "
                f"campaign. Give {output.given_as} another path",
            )
        for other in everything[i + 1 :]:
            if _same_file(output.path, other.path):
                raise _refused(
                    output,
                    f"{output} and {other} are the same file: one would overwrite the other. "
                    "Give each its own name",
                    other,
                )


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist yet
        return False


def _check_file(output: Output) -> None:
    if output.path.is_symlink():
        target = os.path.realpath(output.path)
        raise _refused(
            output,
            f"{output} is a symbolic link to {target}: writing it would replace the link, not "
            f"the file. Give the path itself ({target}), or another one",
        )
    folder = output.path.parent
    try:
        if _stat(folder) is None:
            raise _refused(
                output,
                f"{output}: the folder {folder} does not exist. Create it (mkdir -p "
                f"{shlex.quote(str(folder))}), or give a path in a folder that exists",
            )
        mode = _stat(output.path)
    except OSError as exc:
        raise _refused(output, f"{output}: cannot look at it ({_reason(exc)})") from None
    if mode is None:
        return
    if stat.S_ISDIR(mode):
        raise _refused(output, f"{output} is a folder: give the path of a file, in it or elsewhere")
    if not stat.S_ISREG(mode):
        raise _refused(
            output, f"{output} is not a regular file (a device, pipe or socket): give a file path"
        )
    if not output.in_place and _precious(output.path):
        raise _refused(
            output,
            f"{output} is a settings file or a database (a journal, a store): writing it would "
            "destroy it. Give another path",
        )
    if output.in_place and not os.access(output.path, os.R_OK | os.W_OK):
        raise _refused(
            output,
            f"{output} exists but this user cannot read and write it: fix its owner or "
            "permissions, then run the same command again",
        )


#: Files an output must never replace, by name: settings and the stores' databases.
_PRECIOUS_SUFFIXES = frozenset({".toml", ".journal", ".db", ".sqlite", ".sqlite3"})
_SQLITE_HEADER = b"SQLite format 3\x00"


def _precious(path: Path) -> bool:
    """Whether ``path`` (a regular file, or nothing) is settings or an SQLite database."""
    if path.suffix.lower() in _PRECIOUS_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:  # nothing there (or unreadable: the other checks say so)
        return False


def _stat(path: Path) -> int | None:
    """The mode of ``path`` (symlinks followed), or None when there is nothing there."""
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


def _check_folder_accepts_files(folder: Path, output: Output) -> None:
    """Create a file of one byte in ``folder`` and remove it, as the atomic writer and SQLite
    will: a read-only mount, a folder of another user or a full disk fails here."""
    probe = folder / f".bulk-sender-check.{secrets.token_hex(6)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"\n")
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise _refused(
            output,
            f"{output}: cannot write a file in the folder {folder} ({_reason(exc)}). Free some "
            "space, fix the folder's permissions, or give a path on another disk",
        ) from None
    with contextlib.suppress(OSError):
        probe.unlink()


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _refused(output: Output, message: str, other: Output | None = None) -> OutputPathError:
    options = (output.given_as,) if other is None else (output.given_as, other.given_as)
    return OutputPathError(message, options=options, path=output.path)
