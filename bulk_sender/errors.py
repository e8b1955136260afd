"""The one exception tree of bulk-sender.

Everything the package raises on purpose derives from :class:`BulkSenderError`; the CLI maps
the tree to exit codes at one place and prints ``str(error)``, a complete sentence, never a
traceback::

    BulkSenderError
    ├── UsageError                  exit 2: nothing was sent
    │   ├── ConfigError             a bad or missing value in config.toml or on the command line
    │   ├── InputFileError          the campaign file itself is broken (file, line, what is wrong)
    │   ├── CampaignMismatchError   the journal belongs to another campaign or other settings
    │   └── AlreadyRunningError     another process is sending to the same results file
    └── TransportError              one HTTP attempt failed below HTTP (raised by the transports
                                    only); .phase, .cause: network, dns, certificate or proxy

Foreign exceptions (OSError, ssl, httptools, csv, openpyxl, sqlite3) are translated into these
at one boundary each, with ``raise Ours(...) from exc``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

#: What failed below HTTP: the network (refused, reset, timeout...), the name lookup, the
#: server's TLS certificate (it could not be verified), or the proxy (it refused the tunnel).
TransportCause = Literal["network", "dns", "certificate", "proxy"]

__all__ = [
    "AlreadyRunningError",
    "BulkSenderError",
    "CampaignMismatchError",
    "ConfigError",
    "InputFileError",
    "TransportCause",
    "TransportError",
    "UsageError",
]


class BulkSenderError(Exception):
    """Base of every error bulk-sender raises on purpose."""


class UsageError(BulkSenderError):
    """The run cannot start: a usage, config or input problem. Nothing has been sent."""


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
    """The journal beside the results file was written for another campaign file or settings."""


class AlreadyRunningError(UsageError):
    """Another bulk-sender process holds the lock on the same results file."""

    def __init__(self, message: str, *, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


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
