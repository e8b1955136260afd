"""The ``report`` command: results rewritten with delivery columns, the funnel, the exports.

1. find the campaign's journal beside the results and the campaign file it was sent from (the
   path the journal remembers, or ``--campaign``), checked against the journal's digest;
2. export every message's delivery state from the callback store (:mod:`.merge`);
3. rewrite the results file atomically, with the delivery columns, counting the funnel;
4. optionally write the ``--failed`` export, the ``--html`` report and ``--summary-json``.

It takes no lock: it can run while the campaign is still sending (the journal is read as it
is; the ``send`` rewrites the results again when it ends) and while the receiver is receiving.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bulk_sender.config import CallbacksSettings, Settings
from bulk_sender.delivery.export import again, write_resend_export
from bulk_sender.delivery.funnel import Funnel, FunnelCounter
from bulk_sender.delivery.merge import merged
from bulk_sender.errors import UsageError
from bulk_sender.input.campaign import Campaign
from bulk_sender.input.table import Table, open_table
from bulk_sender.model import Record
from bulk_sender.record.journal import Journal, journal_path
from bulk_sender.record.paths import Output, check_outputs
from bulk_sender.record.results import Totals, write_outputs
from bulk_sender.stores.base import store_exists
from bulk_sender.stores.locations import shown

__all__ = ["ReportOptions", "ReportResult", "report"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportOptions:
    """What the command line asked for."""

    results: Path
    campaign: Path | None = None
    failed: Path | None = None
    html: Path | None = None
    summary_json: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportResult:
    """What the funnel text, the HTML and the summary are made of."""

    options: ReportOptions
    campaign: Path
    store: str
    store_found: bool
    funnel: Funnel
    totals: Totals
    failed_rows: int | None
    generated_at: str


def report(
    settings: Settings,
    callbacks: CallbacksSettings,
    options: ReportOptions,
    *,
    now: datetime | None = None,
) -> ReportResult:
    """Run the report; see the module docstring."""
    moment = now or datetime.now(UTC)
    journal = journal_path(options.results)
    meta = _journal_meta(journal, options.results)
    campaign_file = _campaign_file(options, meta, journal)
    table = open_table(campaign_file, encoding=settings.campaign.encoding or None)
    if table.sha256 != meta.get("file_sha256"):
        raise UsageError(
            f"{campaign_file} is not the file this campaign was sent from (its contents "
            f"differ from what {journal} recorded); pass the original with --campaign PATH"
        )
    campaign = Campaign(table, settings.campaign)
    failed = _failed_path(options.failed, table)
    location = callbacks.location()
    _check_paths(options, campaign_file, failed, None if "://" in location else Path(location))
    counter = FunnelCounter()
    parent = options.results.parent
    with merged(location, journal, workdir=parent, counter=counter) as columns:
        totals = write_outputs(
            table=table, to_column=campaign.to_column, records=_records(journal),
            results=options.results, failed=None, delivery=columns,
        )  # fmt: skip
        failed_rows = None
        if failed is not None:
            with contextlib.closing(columns.again(failed_only=True)) as rows:
                failed_rows = write_resend_export(
                    table=table, to_column=campaign.to_column,
                    resendable=again(rows, now=moment), path=failed,
                )  # fmt: skip
    return ReportResult(
        options=options, campaign=campaign_file, store=shown(location),
        store_found=store_exists(location), funnel=counter.funnel, totals=totals,
        failed_rows=failed_rows, generated_at=moment.isoformat(timespec="seconds"),
    )  # fmt: skip


def _check_paths(
    options: ReportOptions, campaign: Path, failed: Path | None, store: Path | None
) -> None:
    """Refuse, before anything is written, an output that is the campaign file, another
    output, the store (a file; None: a server's), a database or settings file, or that cannot
    be written (exit 2)."""
    optional = (("--failed", failed), ("--html", options.html),
                ("--summary-json", options.summary_json))  # fmt: skip
    written = [
        Output("RESULTS", options.results),
        *(Output(flag, path) for flag, path in optional if path is not None),
    ]
    others = [] if store is None else [Output("[callbacks] store", store)]
    check_outputs(campaign, written, others=others)


def _journal_meta(journal: Path, results: Path) -> dict[str, str]:
    if not journal.is_file():
        raise UsageError(
            f"{results}: no journal {journal} beside it; give the results file a `send` wrote "
            "(the --out of the campaign)"
        )
    try:
        with contextlib.closing(sqlite3.connect(journal)) as db:
            return dict(db.execute("SELECT key, value FROM meta"))
    except sqlite3.Error as exc:
        raise UsageError(f"{journal} is not a bulk-sender journal ({exc})") from None


def _campaign_file(options: ReportOptions, meta: dict[str, str], journal: Path) -> Path:
    """The campaign file: ``--campaign``, else where the journal says, else beside the results."""
    if options.campaign is not None:
        if not options.campaign.is_file():
            raise UsageError(f"--campaign {options.campaign}: no such file")
        return options.campaign
    stored = Path(meta.get("input", ""))
    for candidate in (stored, options.results.parent / stored.name):
        if stored.name and candidate.is_file():
            return candidate
    raise UsageError(
        f"the campaign file {stored} that {journal} was sent from is not there; pass it with "
        "--campaign PATH"
    )


def _failed_path(failed: Path | None, table: Table) -> Path | None:
    """The ``--failed`` path, refused when its name contradicts the export's format (the
    campaign's own; an .xlsx workbook for any workbook), as ``send`` refuses it."""
    if failed is None:
        return None
    if (failed.suffix.lower() == ".xlsx") != (table.export_suffix == ".xlsx"):
        wanted = ".xlsx" if table.export_suffix == ".xlsx" else "a text extension such as .csv"
        raise UsageError(
            f"--failed {failed}: the export is written in the campaign's own format "
            f"({table.format.kind}), so name it with {wanted}"
        )
    return failed


def _records(journal: Path) -> Iterator[Record]:
    reader = Journal(journal, sqlite3.connect(journal))
    try:
        yield from reader.records()
    finally:
        reader.close()
