"""bulk-sender: send WhatsApp catalog messages in bulk through Kaleyra's API.

Rate-limited, crash-safe (a durable journal makes every run resumable) and built so that no
recipient gets the same message twice because of us. The command line is ``bulk-sender``; the
same runs from Python::

    import bulk_sender

    run = bulk_sender.send("campaign.csv", config="config.toml")
    run = await bulk_sender.send_async(frame, config="config.toml", results="a.results.csv")
    check = bulk_sender.dry_run("campaign.csv", config="config.toml")

Every error it raises on purpose is a :class:`BulkSenderError`, with the command line's exit
code in ``exit_code``. See :mod:`bulk_sender.api` and docs/python-api.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bulk_sender.errors import (
    AlreadyRunningError,
    BulkSenderError,
    CampaignMismatchError,
    ConfigError,
    ExitCode,
    InputFileError,
    JournalError,
    OutputPathError,
    OutputWriteError,
    PlannerCrashedError,
    PlannerKilledError,
    StoreError,
    TransportError,
    UsageError,
)

if TYPE_CHECKING:
    from bulk_sender.api import Run, dry_run, send, send_async

__version__ = "0.1.0"

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
    "Run",
    "StoreError",
    "TransportError",
    "UsageError",
    "__version__",
    "dry_run",
    "send",
    "send_async",
]

# A library logs to its logger and leaves showing it to the application.
logging.getLogger("bulk_sender").addHandler(logging.NullHandler())

# The API is imported on first use, not here: the planning process imports this package before
# its own code ignores signals, and must get there quickly; and ``import bulk_sender`` stays
# cheap for a program that only needs the errors.
_API = frozenset({"Run", "dry_run", "send", "send_async"})


def __getattr__(name: str) -> object:
    if name in _API:
        from bulk_sender import api

        return getattr(api, name)
    raise AttributeError(f"module 'bulk_sender' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
