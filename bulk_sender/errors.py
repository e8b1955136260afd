"""The one exception tree of bulk-sender, and the exit code each of its errors ends a run with.

Everything the package raises on purpose derives from :class:`BulkSenderError`. Each class
names its :class:`ExitCode` in its ``exit_code`` attribute, here and nowhere else; the CLI
prints ``str(error)``, a complete sentence, and exits with that code. Only an error that is a
bug (exit 70) is printed with its traceback::

    BulkSenderError                 exit 70 unless a subclass says otherwise
    ├── UsageError                  exit 2: the run cannot start; nothing was sent
    │   ├── ConfigError             a bad or missing value in config.toml or on the command line
    │   ├── InputFileError          the campaign file itself is broken (file, line, what is wrong)
    │   ├── CampaignMismatchError   the journal belongs to another campaign, settings or target
    │   └── OutputPathError         an output path cannot or must not be written (checked first)
    ├── AlreadyRunningError         exit 75: another run holds the results file's lock; try later
    ├── JournalError                exit 3: the journal cannot be read or written; resumable
    ├── OutputWriteError            exit 3: a results file or summary could not be written
    ├── PlannerCrashedError         exit 70: the planning process failed or vanished
    │   └── PlannerKilledError      exit 3: it was killed (SIGKILL: out of memory, kill -9)
    ├── StoreError                  exit 3: the callback store or the audience ledger cannot be
    │                               opened, written or read (the receiver answers 503 instead,
    │                               so Kaleyra retries)
    ├── CallbackRejected            a callback that cannot be stored as it is; never leaves the
    │                               receiver, which answers 400 with it (delivery/parse.py)
    └── TransportError              one HTTP attempt failed below HTTP; never leaves the engine,
                                    which records it as that message's outcome (.phase, .cause:
                                    network, dns, certificate or proxy)

Any other exception reaching the CLI is a bug: exit 70, with its traceback. Foreign exceptions
(OSError, ssl, httptools, csv, openpyxl, sqlite3) are translated into these at one boundary
each, with ``raise Ours(...) from exc``.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import ClassVar, Literal

#: What failed below HTTP: the network (refused, reset, timeout...), the name lookup, the
#: server's TLS certificate (it could not be verified), or the proxy (it refused the tunnel).
TransportCause = Literal["network", "dns", "certificate", "proxy"]

__all__ = [
    "AlreadyRunningError",
    "BulkSenderError",
    "CampaignMismatchError",
    "ConfigError",
    "ExitCode",
    "InputFileError",
    "JournalError",
    "OutputPathError",
    "OutputWriteError",
    "PlannerCrashedError",
    "PlannerKilledError",
    "StoreError",
    "TransportCause",
    "TransportError",
    "UsageError",
    "exit_code_of",
]


class ExitCode(enum.IntEnum):
    """What bulk-sender's exit status means; a signal ends a run with 128 + its number."""

    OK = 0  #: every message was sent (or skipped as a duplicate); dry run: every row is valid
    SOME_NOT_SENT = 1  #: the run finished, some messages were not sent; dry run: some invalid
    USAGE = 2  #: usage, config or campaign-file error: nothing was sent
    STOPPED = 3  #: the run stopped early; the same command resumes it
    INTERNAL = 70  #: a bug (sysexits' EX_SOFTWARE), distinct from every designed outcome
    BUSY = 75  #: another run holds the lock (sysexits' EX_TEMPFAIL): nothing sent, try again later


class BulkSenderError(Exception):
    """Base of every error bulk-sender raises on purpose."""

    #: The exit code of a run this error ends.
    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL


def exit_code_of(error: BaseException) -> ExitCode:
    """The exit code ``error`` ends a run with: its own, or 70 for a foreign exception (a bug)."""
    return error.exit_code if isinstance(error, BulkSenderError) else ExitCode.INTERNAL


class UsageError(BulkSenderError):
    """The run cannot start: a usage, config or input problem. Nothing has been sent."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A value in config.toml, the environment or on the command line is missing or wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config: {key}: {message}")
        self.key = key


class InputFileError(UsageError):
    """The campaign file is broken; ``line`` is the 1-based physical line, when known."""

    def __init__(self, path: Path | str, message: str, *, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line = line
        self.reason = message


class CampaignMismatchError(UsageError):
    """The journal beside the results file was written for another campaign, settings or target."""


class AlreadyRunningError(BulkSenderError):
    """Another bulk-sender process holds the lock on the same results file: nothing was sent.

    Not a :class:`UsageError`: nothing is wrong with the input, and the same command succeeds
    once the other run has ended (a scheduler's retry is the right answer).
    """

    exit_code = ExitCode.BUSY

    def __init__(self, message: str, *, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class OutputPathError(UsageError):
    """An output path cannot be used: its folder is missing or read-only, it is a folder, or
    it is the campaign file or another output. Checked before anything is sent.

    ``options`` names what the path was given as (``--out``, ``--summary-json``, the journal).
    """

    def __init__(self, message: str, *, options: tuple[str, ...], path: Path) -> None:
        super().__init__(message)
        self.options = options
        self.path = path


class JournalError(BulkSenderError):
    """The journal cannot be written (disk full, permissions): the run must stop."""

    exit_code = ExitCode.STOPPED


class OutputWriteError(BulkSenderError):
    """The results file, the failed export, a dry run's verdicts or the summary JSON could not
    be written (disk full, permissions). The journal holds every outcome: the same command
    writes them again, and sends nothing already sent."""

    exit_code = ExitCode.STOPPED

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


class PlannerCrashedError(BulkSenderError):
    """The planning process failed or vanished: a bug, or it died in a way that may be one."""

    exit_code = ExitCode.INTERNAL


class PlannerKilledError(PlannerCrashedError):
    """The planning process was killed by SIGKILL: the out-of-memory killer, or ``kill -9``.

    Not a bug: what was sent is recorded and the results are written; the same command resumes.
    """

    exit_code = ExitCode.STOPPED


class TransportError(BulkSenderError):
    """An HTTP attempt failed below HTTP.

    ``phase`` says whether the request could have reached Kaleyra: ``"connect"`` means it
    never left this machine (safe to retry); ``"after_send"`` means it may have been acted on.
    ``cause`` says what failed (:data:`TransportCause`); ``status`` is the proxy's HTTP status
    when the proxy refused (``cause == "proxy"``).
    """

    def __init__(
        self,
        description: str,
        *,
        phase: Literal["connect", "after_send"],
        cause: TransportCause = "network",
        status: int | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.phase = phase
        self.cause = cause
        self.status = status


class StoreError(BulkSenderError):
    """A store (the callback store, the audience ledger) cannot be opened, written or read: disk
    full, permissions, not a store. ``receive`` answers 503 for a callback it cannot commit;
    ``report`` stops; ``send`` stops (exit 3), the rows not sent yet ``not_sent``."""

    exit_code = ExitCode.STOPPED
