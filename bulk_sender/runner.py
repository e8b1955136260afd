"""One ``send`` from start to finish: check, lock, journal, send, report. No argument parsing.

Order matters for the promise "a broken file or setting stops before anything is sent":

1. open the table (byte scan: encoding, NULs, wrong file type) and bind it to the settings
   (recipient column, body placeholders); read the API key and the opt-out files;
2. check every output path (record/paths.py); take the run lock; check the journal belongs to
   this campaign; scan the whole file's structure unless an earlier run of the same bytes
   already did;
3. only then open the journal and the audience ledger and send; finally rebuild the results
   and the failed export.

:func:`send` is a coroutine: the CLI runs it on a loop of its own (:func:`run_loop`), the
Python API on the caller's. Stopping from outside goes through a :class:`StopControl`: the
CLI's signal handlers (:func:`handle_signals`) and a cancelled task both ask for a graceful
stop. No new request leaves; requests in flight get ``[sending] stop_grace_seconds`` to be
answered; what is still in flight then is abandoned and recorded ``unknown``, exactly what a
crash would leave; the results are written and the run ends. The run's files are only ever
read and written between awaits, so a cancellation cannot cut them half-way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import resource
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from bulk_sender.audience.gate import AudienceGate, AudienceReport, Rules
from bulk_sender.audience.rules import Clock, wall_clock_ms
from bulk_sender.audience.setup import DryRunScreen, open_gate, read_rules
from bulk_sender.config import (
    CallbacksSettings,
    KaleyraSettings,
    Secret,
    SendingSettings,
    Settings,
    read_api_key,
)
from bulk_sender.delivery.merge import merged_or_none
from bulk_sender.errors import PlannerCrashedError, UsageError
from bulk_sender.input.campaign import Campaign, LoadStats, Planned
from bulk_sender.input.plan_inline import plan_inline
from bulk_sender.input.plan_process import (
    PLAN_IN_PROCESS_ROWS,
    PlanJob,
    PlanProcess,
    start_planner,
)
from bulk_sender.input.table import Table, open_table
from bulk_sender.model import Record, Status
from bulk_sender.record.journal import SANDBOX, Journal, ResumeState, journal_path
from bulk_sender.record.lock import acquire_lock
from bulk_sender.record.paths import Output, check_outputs, send_outputs
from bulk_sender.record.results import Totals, write_outputs, write_results_only
from bulk_sender.record.summary import DryRunResult, SendResult
from bulk_sender.sending.engine import Engine, Plan, StopReason
from bulk_sender.sending.stats import RunStats
from bulk_sender.sending.transport import Route, open_poster, plan_route

__all__ = [
    "RunOptions",
    "StopControl",
    "default_failed_path",
    "default_results_path",
    "dry_run",
    "handle_signals",
    "run_loop",
    "send",
]

log = logging.getLogger("bulk_sender")
T = TypeVar("T")

#: Called with the live figures while sending (the progress display), returns a context.
DisplayFactory = Callable[[RunStats, LoadStats, int], contextlib.AbstractContextManager[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """What the command line (or the Python API) asked for, beyond the settings."""

    campaign: Path  # the campaign as summaries name it: the file read, unless ``table`` is given
    results: Path
    failed: Path | None = None  # None: beside the results, with the campaign's own extension
    sandbox: bool = False
    restart: bool = False
    resend_unknown: bool = False
    failed_include_unknown: bool = False
    table: Table | None = None  # already opened (a frame spooled to CSV); else campaign is read
    wait_lock: float = 60.0  # seconds to wait for a run that holds the lock and is stopping


class StopControl:
    """Asks a run to stop gracefully from outside: a signal handler, or a cancelled task.

    The first reason given is the one reported. Whoever must react (the engine, the lock that
    tells other runs this one is stopping) registers with :meth:`on_request`, and is called at
    once if a stop was asked for already.
    """

    def __init__(self) -> None:
        self.reason: StopReason | None = None
        #: Whether the run's task was cancelled (its caller gets CancelledError at the end).
        self.cancelled = False
        self._listeners: list[Callable[[StopReason], object]] = []
        self._requested: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"StopControl(reason={self.reason!r}, cancelled={self.cancelled!r})"

    def request(self, reason: StopReason) -> None:
        """Stop taking new rows; requests in flight get the grace period to finish."""
        if self.reason is not None:
            return
        self.reason = reason
        for listener in self._listeners:
            listener(reason)
        if self._requested is not None and not self._requested.done():
            self._requested.set_result(None)

    def cancel(self) -> None:
        """The run's task was cancelled: a graceful stop, then CancelledError for the caller."""
        self.cancelled = True
        self.request(StopReason("cancelled", "", "the task was cancelled"))

    def on_request(self, listener: Callable[[StopReason], object]) -> None:
        """Call ``listener`` with the reason when a stop is requested (now, if it was)."""
        self._listeners.append(listener)
        if self.reason is not None:
            listener(self.reason)

    def why(self) -> str | None:
        """Why the run was asked to stop, in words, or None."""
        return None if self.reason is None else f"when this run was stopped ({self.reason.message})"

    def requested(self) -> asyncio.Future[None]:
        """A future of the running loop, done once a stop is requested."""
        if self._requested is None:
            self._requested = asyncio.get_running_loop().create_future()
            if self.reason is not None:
                self._requested.set_result(None)
        return self._requested


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


def _open(settings: Settings, path: Path, table: Table | None) -> tuple[Table, Campaign]:
    if table is None:
        table = open_table(path, encoding=settings.campaign.encoding or None)
    return table, Campaign(table, settings.campaign)


def dry_run(
    settings: Settings,
    campaign_path: Path,
    verdicts: Path | None,
    *,
    table: Table | None = None,
    clock: Clock = wall_clock_ms,
) -> DryRunResult:
    """Check the whole file (or the opened ``table``), and what the audience rules would hold
    back now, without sending, touching the journal or writing the ledger.

    A large file is planned in a second process, as a send's is (:mod:`.input.plan_process`):
    this one screens and counts meanwhile.
    """
    started = time.monotonic()
    table, campaign = _open(settings, campaign_path, table)
    if verdicts is not None:
        check_outputs(campaign_path, [Output("--out", verdicts)])
    rules = _rules(settings)
    totals = Totals()
    with (
        DryRunScreen(rules, settings.audience, clock=clock) as screen,
        contextlib.ExitStack() as cleanup,
    ):
        # The ledger is read while the file is scanned, or while a planning process that checks
        # each row as the scan would plans a file that will clearly need one (no pass over the
        # file before planning: nothing is sent, so a broken row can be found on the way).
        large = _large(settings.sending, table)
        planner = start_planner(settings.sending, PLAN_IN_PROCESS_ROWS) if large else None
        if planner is None:
            rows = table.scan(no_line_breaks=frozenset({campaign.to_column}))
            if not large:
                planner = start_planner(settings.sending, rows)
        planned: Iterable[Planned] = campaign.plan(bodies=False)
        if planner is not None:
            cleanup.callback(planner.close)
            planner.give(PlanJob.dry_run(campaign))
            planned = screen.pulled(planner.plan(campaign.stats))

        def counted() -> Iterator[Record]:
            for item in screen.screened(planned):
                record = _verdict(item)
                totals.count(record)
                yield record

        if verdicts is not None:
            write_results_only(counted(), verdicts)
        else:
            collections.deque(counted(), maxlen=0)
    totals.rows = campaign.stats.rows
    return DryRunResult(
        campaign=campaign_path, verdicts=verdicts, totals=totals, load=campaign.stats,
        duration=time.monotonic() - started,
        example_request=_example_request(settings, campaign.stats.example_body),
        audience=None if screen.gate is None else screen.gate.report,
    )  # fmt: skip


#: A dry run plans a file at least this big in a planning process without scanning it first
#: (20,000 rows of a number and a name take about 0.6 MB).
_LARGE_BYTES: Final = 2 << 20


def _large(sending: SendingSettings, table: Table) -> bool:
    """Whether a dry run plans ``table`` in a planning process without a scan first."""
    if sending.planner == "process":
        return True
    try:
        return table.path.stat().st_size >= _LARGE_BYTES
    except OSError:
        return False


def _verdict(item: Planned) -> Record:
    """A dry run's verdict on a message: ``valid`` if it would be sent; a row held for quiet
    hours is valid too, the hold in its warning (it would be sent later)."""
    record = item.record
    if item.body is not None:
        return record._replace(status=Status.VALID)
    if record.status == Status.NOT_SENT:
        held = f"if sent now: {record.error}"
        return record._replace(status=Status.VALID, warning=held, code="", error="")
    return record


def _rules(settings: Settings) -> Rules:
    """The audience rules, opt-out files read: before anything is sent."""
    campaign = settings.campaign
    return read_rules(
        settings.audience,
        default_region=campaign.default_region or None,
        encoding=campaign.encoding or None,
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


async def send(
    settings: Settings,
    options: RunOptions,
    *,
    api_key: Secret | None = None,
    environ: Mapping[str, str] | None = None,
    display: DisplayFactory | None = None,
    control: StopControl | None = None,
    clock: Clock = wall_clock_ms,
) -> SendResult:
    """Send a campaign (or resume it) and write its results; see the module docstring.

    ``api_key`` wins over the environment variable the settings name (read from ``environ``).
    ``clock`` (POSIX milliseconds) is what the audience rules read: tests pass a fake one.
    """
    started = time.monotonic()
    control = control or StopControl()
    table, campaign = _open(settings, options.campaign, options.table)
    options = replace(options, failed=_failed_path(options, table))
    check_outputs(options.campaign, send_outputs(options.results, options.failed))
    api_key = _api_key(settings, options, api_key, environ)
    rules = _rules(settings)
    # The embedded sandbox is on this machine: no proxy variable applies to it.
    route = plan_route(settings.kaleyra, environ={} if options.sandbox else environ)
    destination = SANDBOX if options.sandbox else settings.kaleyra.messages_url
    path = journal_path(options.results)
    with contextlib.ExitStack() as cleanup:
        await _take_lock(options, control, cleanup)
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
            audience=_Audience(rules=rules, campaign=_ledger_campaign(journal, options),
                               clock=clock),
        )  # fmt: skip
        plan = _plan(campaign, state, path, planner)
        stop, totals = await _send_and_record(
            run, plan, control,
            lambda: _write_outputs(table, campaign, journal, options, settings.callbacks),
        )  # fmt: skip
    _log_finished(stop, totals, planned_apart=planner is not None)
    return SendResult(
        campaign=options.campaign, results=options.results, failed=options.failed,
        totals=totals, load=campaign.stats, stats=stats, stop=stop,
        resumed_done=sum(state.done.values()), crashed_unknown=state.crashed,
        duration=time.monotonic() - started, audience=run.audience.report,
    )  # fmt: skip


def _plan(campaign: Campaign, state: ResumeState, path: Path, planner: PlanProcess | None) -> Plan:
    """The plan: from the planning process if one was started, else planned here."""
    return plan_inline(campaign, state, path) if planner is None else planner.plan(campaign.stats)


async def _take_lock(
    options: RunOptions, control: StopControl, cleanup: contextlib.ExitStack
) -> None:
    """Hold the results file's lock until ``cleanup`` ends; a stop request marks it stopping."""
    lock = await acquire_lock(options.results, wait=options.wait_lock, give_up=control.why)
    cleanup.callback(lock.release)
    control.on_request(lambda _: lock.mark_stopping())
    _note_lock_taken_over(lock.previous)


def _ledger_campaign(journal: Journal, options: RunOptions) -> tuple[str, str] | None:
    """The campaign's key and name in the ledger, or None: a rehearsal never writes it.

    The key is the journal's own (made once, kept by every resume; a ``--restart`` starts a
    journal, so a key, of its own), so a resume renews its messages' slots.
    """
    if options.sandbox:
        return None
    return journal.ledger_key(), options.campaign.name


async def _send_and_record(
    run: _Sending, plan: Plan, control: StopControl, record: Callable[[], Totals]
) -> tuple[StopReason | None, Totals]:
    """Send, then write the results; a planner killed (out of memory) still gets them written."""
    try:
        stop = await _send_until_stopped(run, plan, control)
    except PlannerCrashedError:  # what was done is on record: write it, then report the crash
        record()
        raise
    return stop, record()


def _api_key(
    settings: Settings,
    options: RunOptions,
    api_key: Secret | None,
    environ: Mapping[str, str] | None,
) -> Secret:
    """The key to send with: a throwaway one for the embedded sandbox, else the given one."""
    if options.sandbox:
        return Secret(secrets.token_urlsafe(24))
    return api_key or read_api_key(settings.kaleyra, environ)


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
    table: Table,
    campaign: Campaign,
    journal: Journal,
    options: RunOptions,
    callbacks: CallbacksSettings | None = None,
) -> Totals:
    """Rebuild the results file and the failed export from the whole journal, with the
    delivery callbacks already stored when ``[callbacks]`` is set."""
    store = callbacks.location() if callbacks is not None else None
    with merged_or_none(store, journal.path) as delivery:
        return write_outputs(
            table=table,
            to_column=campaign.to_column,
            records=journal.records(),
            results=options.results,
            failed=options.failed,
            include_unknown=options.failed_include_unknown,
            delivery=delivery,
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


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a new loop: uvloop where it is installed (it is on CPython/Linux)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/Linux
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
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
    audience: _Audience


@dataclass(slots=True, kw_only=True)
class _Audience:
    """The audience rules of a run, its campaign in the ledger (None: read it only), and the
    gate once it is open."""

    rules: Rules
    campaign: tuple[str, str] | None
    clock: Clock
    gate: AudienceGate | None = None

    @property
    def report(self) -> AudienceReport | None:
        """What the rules did, if any applied."""
        return None if self.gate is None else self.gate.report


async def _send_until_stopped(run: _Sending, plan: Plan, control: StopControl) -> StopReason | None:
    """Send ``plan``; a cancelled task becomes a stop, with the journal whole either way."""
    try:
        stop = await _send_async(run, plan, control)
    except asyncio.CancelledError:  # while the client or the sandbox opened or closed
        control.cancel()
        stop = control.reason
    if control.reason is not None:
        # Abandoned after the grace period, or cut short by a cancellation: in flight
        # means "may have arrived", recorded now as a resume would.
        settled = run.journal.settle_in_flight()
        if settled:
            _log_abandoned(settled, run.settings.sending.stop_grace_seconds)
    return stop


async def _send_async(run: _Sending, plan: Plan, control: StopControl) -> StopReason | None:
    """Send ``plan`` to Kaleyra (or an embedded sandbox), the journal's writer running."""
    async with contextlib.AsyncExitStack() as stack:
        kaleyra, route = run.settings.kaleyra, run.route
        if run.sandbox:
            url = await stack.enter_async_context(
                _embedded_sandbox(kaleyra, run.api_key, run.settings.callbacks)
            )
            route = Route(url=replace(kaleyra, base_url=url).messages_url)
        run.journal.start_writer()
        stack.callback(run.journal.stop_writer)
        audience = run.audience
        audience.gate = await open_gate(
            audience.rules, run.settings.audience, campaign=audience.campaign, clock=audience.clock
        )
        if audience.gate is not None:
            stack.push_async_callback(audience.gate.close)  # commits the slots given back
        client = await stack.enter_async_context(
            open_poster(route, api_key=run.api_key, sending=run.settings.sending)
        )
        engine = Engine(
            settings=run.settings.sending, client=client, journal=run.journal, stats=run.stats,
            gate=audience.gate,
        )  # fmt: skip
        stack.enter_context(run.display)
        stop = await _drive(engine, plan, control, run.settings.sending.stop_grace_seconds)
    return stop


async def _drive(
    engine: Engine, plan: Plan, control: StopControl, grace: float
) -> StopReason | None:
    """Run ``engine`` over ``plan``; once a stop is requested, give it ``grace`` seconds.

    What is still in flight then is abandoned: the engine is cancelled, its rows stay
    ``in_flight`` in the journal. A cancellation of this task is a stop request; a second one
    ends the grace period at once.
    """
    if control.reason is not None:
        return control.reason  # asked to stop before the first request
    sending = asyncio.ensure_future(engine.run(plan))
    control.on_request(engine.request_stop)
    loop = asyncio.get_running_loop()
    deadline = math.inf
    while not sending.done():
        if control.reason is not None and deadline == math.inf:
            deadline = loop.time() + grace
        try:
            if loop.time() >= deadline:
                sending.cancel()
                await asyncio.wait([sending])
            elif deadline == math.inf:
                either: list[asyncio.Future[Any]] = [sending, control.requested()]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.wait([sending], timeout=deadline - loop.time())
        except asyncio.CancelledError:
            if control.reason is not None:
                deadline = -math.inf  # asked again: abandon what is in flight now
            control.cancel()
    if sending.cancelled():
        return engine.stop_reason or control.reason
    return sending.result()


@contextlib.asynccontextmanager
async def _embedded_sandbox(
    kaleyra: KaleyraSettings, api_key: Secret, callbacks: CallbacksSettings | None = None
) -> AsyncIterator[str]:
    """A Kaleyra sandbox on 127.0.0.1 for this run (``--sandbox``); yields its base URL.

    With ``[callbacks]`` set it posts status callbacks to ``receive`` (sandbox/callbacks.py).
    """
    from bulk_sender.sandbox.callbacks import emitter_for
    from bulk_sender.sandbox.server import Account, Sandbox

    sandbox = Sandbox(
        Account(sid=kaleyra.sid, api_key=api_key.reveal(), senders=frozenset({kaleyra.sender})),
        callbacks=emitter_for(callbacks),
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
def handle_signals(control: StopControl) -> Iterator[None]:
    """First SIGINT, SIGTERM or SIGHUP: stop gracefully. Second: exit at once (the journal
    stays valid). For the command line only: a library leaves the process's signals alone."""
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
        control.request(StopReason("signal", name, f"received {name}"))

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, handler, signum)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _log_abandoned(requests: int, grace: float) -> None:
    log.warning(
        "bulk_sender.abandoned",
        extra={
            "event": "bulk_sender.abandoned",
            "requests": requests,
            "grace_seconds": grace,
            "hint": "no answer within the grace period after the stop: these rows are unknown "
            "(they may have reached Kaleyra) and are not sent again unless --resend-unknown",
        },
    )
