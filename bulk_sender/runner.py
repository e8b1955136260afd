"""One ``send`` from start to finish: check, lock, journal, send, report. No argument parsing.

Order matters for the promise "a broken file or setting stops before anything is sent":

1. open the table (byte scan: encoding, NULs, wrong file type) and bind it to the settings
   (recipient column, body placeholders); read the API key;
2. check every output path (record/paths.py); take the run lock; check the journal belongs to
   this campaign; scan the whole file's structure unless an earlier run of the same bytes
   already did;
3. only then open the journal and send; finally rebuild the results and the failed export.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import resource
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from bulk_sender.config import KaleyraSettings, Secret, Settings, read_api_key
from bulk_sender.errors import PlannerCrashedError, UsageError
from bulk_sender.input.campaign import Campaign, LoadStats
from bulk_sender.input.plan_inline import plan_inline
from bulk_sender.input.plan_process import PlanJob, start_planner
from bulk_sender.input.table import Table, open_table
from bulk_sender.model import Record, Status
from bulk_sender.record.journal import SANDBOX, Journal, ResumeState, journal_path
from bulk_sender.record.lock import hold_lock
from bulk_sender.record.paths import Output, check_outputs, send_outputs
from bulk_sender.record.results import Totals, write_outputs, write_results_only
from bulk_sender.record.summary import DryRunResult, SendResult
from bulk_sender.sending.engine import Engine, Plan, StopReason
from bulk_sender.sending.stats import RunStats
from bulk_sender.sending.transport import Route, open_poster, plan_route

__all__ = [
    "RunOptions",
    "default_failed_path",
    "default_results_path",
    "dry_run",
    "send",
]

log = logging.getLogger("bulk_sender")

#: Called with the live figures while sending (the progress display), returns a context.
DisplayFactory = Callable[[RunStats, LoadStats, int], contextlib.AbstractContextManager[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """What the command line asked for, beyond the settings."""

    campaign: Path
    results: Path
    failed: Path | None = None  # None: beside the results, with the campaign's own extension
    sandbox: bool = False
    restart: bool = False
    resend_unknown: bool = False
    failed_include_unknown: bool = False


def default_results_path(campaign: Path, *, sandbox: bool = False) -> Path:
    """``campaign.csv`` -> ``campaign.results.csv`` beside it (``.sandbox.results.csv``).

    A rehearsal gets a journal of its own, so it can never stand in for the real send.
    """
    kind = ".sandbox" if sandbox else ""
    return campaign.with_name(f"{campaign.stem}{kind}.results.csv")


def default_failed_path(results: Path, suffix: str = ".csv") -> Path:
    """``results.csv`` -> ``results.failed.csv`` beside it, with the export's ``suffix``
    (:attr:`Table.export_suffix`: the campaign's own, ``.xlsx`` for a workbook)."""
    return results.with_name(f"{results.stem}.failed{suffix}")


def _failed_path(options: RunOptions, table: Table) -> Path:
    """Where the failed export goes; its name must not contradict the export's format."""
    if options.failed is None:
        return default_failed_path(options.results, table.export_suffix)
    is_xlsx = options.failed.suffix.lower() == ".xlsx"
    if is_xlsx != (table.export_suffix == ".xlsx"):
        kind = table.format.kind
        wanted = ".xlsx" if kind != "csv" else "a text extension such as .csv"
        written = "an .xlsx workbook" if kind != "csv" else "text in the campaign's own format"
        raise UsageError(
            f"--failed {options.failed}: the failed export of this {kind} campaign is "
            f"{written}, so name it with {wanted}"
        )
    return options.failed


def _open(settings: Settings, path: Path) -> tuple[Table, Campaign]:
    table = open_table(path, encoding=settings.campaign.encoding or None)
    return table, Campaign(table, settings.campaign)


def dry_run(settings: Settings, campaign_path: Path, verdicts: Path | None) -> DryRunResult:
    """Check the whole file without sending or touching the journal."""
    started = time.monotonic()
    table, campaign = _open(settings, campaign_path)
    if verdicts is not None:
        check_outputs(campaign_path, [Output("--out", verdicts)])
    table.scan(no_line_breaks=frozenset({campaign.to_column}))
    totals = Totals()

    def counted() -> Iterator[Record]:
        for item in campaign.plan(bodies=False):
            record = item.record if item.body is None else item.record._replace(status=Status.VALID)
            totals.count(record)
            yield record

    if verdicts is not None:
        write_results_only(counted(), verdicts)
    else:
        collections.deque(counted(), maxlen=0)
    totals.rows = campaign.stats.rows
    return DryRunResult(
        campaign=campaign_path,
        verdicts=verdicts,
        totals=totals,
        load=campaign.stats,
        duration=time.monotonic() - started,
        example_request=_example_request(settings, campaign.stats.example_body),
    )


def _example_request(settings: Settings, body: bytes | None) -> dict[str, Any] | None:
    """The first valid row's request as it would be sent, with the API key masked."""
    if body is None:
        return None
    return {
        "method": "POST",
        "url": settings.kaleyra.messages_url,
        "headers": {
            "Content-Type": "application/json",
            "api-key": f"<from ${settings.kaleyra.api_key_env}>",
        },
        "body": orjson.loads(body),
    }


def send(
    settings: Settings,
    options: RunOptions,
    *,
    environ: Mapping[str, str] | None = None,
    display: DisplayFactory | None = None,
) -> SendResult:
    """Send a campaign (or resume it) and write its results; see the module docstring."""
    started = time.monotonic()
    table, campaign = _open(settings, options.campaign)
    options = replace(options, failed=_failed_path(options, table))
    check_outputs(options.campaign, send_outputs(options.results, options.failed))
    api_key = _api_key(settings, options, environ)
    # The embedded sandbox is on this machine: no proxy variable applies to it.
    route = plan_route(settings.kaleyra, environ={} if options.sandbox else environ)
    destination = SANDBOX if options.sandbox else settings.kaleyra.messages_url
    path = journal_path(options.results)
    with hold_lock(options.results) as previous, contextlib.ExitStack() as cleanup:
        _note_lock_taken_over(previous)
        rows = _rows(table, campaign, path, destination, restart=options.restart)
        # Started now, so that its start-up overlaps the journal's; given its job below.
        planner = start_planner(settings.sending, rows)
        if planner is not None:
            cleanup.callback(planner.close)
        journal = _open_journal(path, campaign, destination, options, rows)
        cleanup.callback(journal.close)
        state = journal.resume_state(resend_unknown=options.resend_unknown)
        if planner is not None:
            planner.give(PlanJob.of(campaign, state, path))
        _announce(state, rows)
        _log_started(settings, options, rows)
        stats = RunStats(target_rate=settings.sending.rate_per_second)
        run = _Sending(
            settings=settings, sandbox=options.sandbox, route=route, api_key=api_key,
            journal=journal, stats=stats,
            display=(display or _no_display)(stats, campaign.stats, rows),
        )  # fmt: skip
        plan = (
            plan_inline(campaign, state, path) if planner is None else planner.plan(campaign.stats)
        )
        try:
            stop = _run_loop(_send_async(run, plan))
        except PlannerCrashedError:  # killed (out of memory): what was done is on record
            _write_outputs(table, campaign, journal, options)
            raise
        totals = _write_outputs(table, campaign, journal, options)
    _log_finished(stop, totals, planned_apart=planner is not None)
    return SendResult(
        campaign=options.campaign, results=options.results, failed=options.failed,
        totals=totals, load=campaign.stats, stats=stats, stop=stop,
        resumed_done=sum(state.done.values()), crashed_unknown=state.crashed,
        duration=time.monotonic() - started,
    )  # fmt: skip


def _api_key(settings: Settings, options: RunOptions, environ: Mapping[str, str] | None) -> Secret:
    """The key to send with: a throwaway one for the embedded sandbox."""
    if options.sandbox:
        return Secret(secrets.token_urlsafe(24))
    return read_api_key(settings.kaleyra, environ)


def _note_lock_taken_over(previous: int | None) -> None:
    if previous is not None:
        log.warning(
            "bulk_sender.lock_taken_over",
            extra={"event": "bulk_sender.lock_taken_over", "previous_pid": previous},
        )


def _rows(
    table: Table, campaign: Campaign, journal: Path, destination: str, *, restart: bool
) -> int:
    """The campaign's row count: from the journal when it already scanned these bytes."""
    rows = None if restart else Journal.known_rows(journal, campaign.identity(), destination)
    if rows is None:
        rows = table.scan(no_line_breaks=frozenset({campaign.to_column}))
    return rows


def _open_journal(
    path: Path, campaign: Campaign, destination: str, options: RunOptions, rows: int
) -> Journal:
    journal = Journal.open(
        path, identity=campaign.identity(), destination=destination, restart=options.restart
    )
    if journal.carried_over:
        log.info(
            "bulk_sender.carried_over",
            extra={
                "event": "bulk_sender.carried_over",
                "recipients": journal.carried_over,
                "hint": "sent (or possibly sent) before --restart: not sent again",
            },
        )
    journal.set_meta("rows", str(rows))
    journal.set_meta("input", str(options.campaign))
    return journal


def _write_outputs(
    table: Table, campaign: Campaign, journal: Journal, options: RunOptions
) -> Totals:
    """Rebuild the results file and the failed export from the whole journal."""
    return write_outputs(
        table=table,
        to_column=campaign.to_column,
        records=journal.records(),
        results=options.results,
        failed=options.failed,
        include_unknown=options.failed_include_unknown,
    )


def _log_started(settings: Settings, options: RunOptions, rows: int) -> None:
    log.info(
        "bulk_sender.started",
        extra={
            "event": "bulk_sender.started",
            "campaign": str(options.campaign),
            "rows": rows,
            "rate": settings.sending.rate_per_second,
            "concurrency": settings.sending.concurrency,
            "sandbox": options.sandbox,
        },
    )


def _log_finished(stop: StopReason | None, totals: Totals, *, planned_apart: bool) -> None:
    log.info(
        "bulk_sender.finished",
        extra={
            "event": "bulk_sender.finished",
            "outcome": "stopped" if stop is not None else "finished",
            **{f"total_{k}": v for k, v in totals.statuses.items()},
            **_peak_memory(planned_apart=planned_apart),
        },
    )


def _peak_memory(*, planned_apart: bool) -> dict[str, int]:
    """Peak RSS in MiB of this process and, once reaped, of the planning process (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    if not planned_apart:
        return {"peak_rss_mib": own}
    planner = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return {"peak_rss_mib": own, "planner_peak_rss_mib": planner}


def _announce(state: ResumeState, rows: int) -> None:
    done = sum(state.done.values())
    if done or state.crashed:
        log.info(
            "bulk_sender.resumed",
            extra={
                "event": "bulk_sender.resumed",
                "already_done": done,
                "remaining_estimate": max(rows - done, 0),
                "crashed_unknown": state.crashed,
            },
        )
    if state.crashed:
        log.warning(
            "bulk_sender.unknown_after_crash",
            extra={
                "event": "bulk_sender.unknown_after_crash",
                "rows": state.crashed,
                "hint": "an earlier run died with these requests in flight; they are marked "
                "unknown and not sent again (use --resend-unknown to send them again)",
            },
        )


def _run_loop(coro: Coroutine[Any, Any, StopReason | None]) -> StopReason | None:
    """Run the sending loop on uvloop where it is installed (it is on CPython/Linux)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/Linux
        return asyncio.run(coro)
    result: StopReason | None = uvloop.run(coro)
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class _Sending:
    """What the sending loop needs, gathered before it starts."""

    settings: Settings
    sandbox: bool
    route: Route
    api_key: Secret
    journal: Journal
    stats: RunStats
    display: contextlib.AbstractContextManager[None]


async def _send_async(run: _Sending, plan: Plan) -> StopReason | None:
    """Send ``plan`` to Kaleyra (or an embedded sandbox), the journal's writer running."""
    async with contextlib.AsyncExitStack() as stack:
        kaleyra, route = run.settings.kaleyra, run.route
        if run.sandbox:
            url = await stack.enter_async_context(_embedded_sandbox(kaleyra, run.api_key))
            route = Route(url=replace(kaleyra, base_url=url).messages_url)
        run.journal.start_writer()
        stack.callback(run.journal.stop_writer)
        client = await stack.enter_async_context(
            open_poster(route, api_key=run.api_key, sending=run.settings.sending)
        )
        engine = Engine(
            settings=run.settings.sending, client=client, journal=run.journal, stats=run.stats
        )
        stack.enter_context(_signals(engine))
        stack.enter_context(run.display)
        stop = await engine.run(plan)
    return stop


@contextlib.asynccontextmanager
async def _embedded_sandbox(kaleyra: KaleyraSettings, api_key: Secret) -> AsyncIterator[str]:
    """A Kaleyra sandbox on 127.0.0.1 for this run (``--sandbox``); yields its base URL."""
    from bulk_sender.sandbox.server import Account, Sandbox

    sandbox = Sandbox(
        Account(sid=kaleyra.sid, api_key=api_key.reveal(), senders=frozenset({kaleyra.sender}))
    )
    url = await sandbox.start()
    try:
        yield url
    finally:
        await sandbox.stop()


@contextlib.contextmanager
def _no_display(stats: RunStats, load: LoadStats, rows: int) -> Iterator[None]:
    yield


@contextlib.contextmanager
def _signals(engine: Engine) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop gracefully. Second: stop at once (the journal stays valid)."""
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def handler(signum: int) -> None:
        name = signal.Signals(signum).name
        received.append(name)
        if len(received) > 1:
            log.error(
                "bulk_sender.killed",
                extra={
                    "event": "bulk_sender.killed",
                    "signal": name,
                    "hint": "stopped at once; run the same command again to resume",
                },
            )
            logging.shutdown()
            os._exit(128 + signum)
        engine.request_stop(StopReason("signal", name, f"received {name}"))

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, handler, signum)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
