"""The Python API: send a campaign from a notebook, a pipeline or a script, get the results back.

::

    import bulk_sender

    run = bulk_sender.send("campaign.csv", config="config.toml")             # no loop running
    run = await bulk_sender.send_async(frame, config="config.toml",          # inside a loop
                                       results="out/audience.results.csv")
    run.exit_code, run.statuses, run.to_dataframe()

A campaign is a file (``.csv``, ``.xlsx``, ``.parquet``), a pandas DataFrame or an iterable of
mappings; :mod:`bulk_sender.input.frames` says how cells become text and where the rows of a
frame are kept. ``config`` is a path or a :class:`~bulk_sender.config.Settings`. Keyword
``overrides`` are the command line's options by their Python names (:class:`Overrides`).

As a library it installs no signal handlers, never exits the process and shows no progress
display unless ``progress=True``; its log events go to the ``bulk_sender`` logger. Cancelling
the task of :func:`send_async` is a graceful stop: no new request leaves, requests in flight
get ``[sending] stop_grace_seconds`` and are then abandoned as ``unknown``, the rest is
``not_sent``, the results are written, and :class:`asyncio.CancelledError` propagates. Calling
again with the same campaign and results resumes: nothing is sent twice.

The command line is a thin layer over this module: it builds a :class:`Call` from its flags
and runs :func:`execute_send` or :func:`execute_dry_run` with its own signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict, Unpack

from bulk_sender import runner
from bulk_sender.config import Secret, Settings, load_settings, with_overrides
from bulk_sender.errors import BulkSenderError, ConfigError, ExitCode, UsageError, exit_code_of
from bulk_sender.input import frames
from bulk_sender.input.table import Table
from bulk_sender.record.summary import (
    DryRunResult,
    SendResult,
    error_summary,
    running_summary,
    stop_line,
    summary_dict,
    summary_text,
    write_summary_json,
)
from bulk_sender.runner import (
    DisplayFactory,
    RunOptions,
    StopControl,
    default_results_path,
    handle_signals,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Call",
    "CampaignSource",
    "ConfigSource",
    "Overrides",
    "Run",
    "dry_run",
    "execute_dry_run",
    "execute_send",
    "exit_code",
    "prepare",
    "send",
    "send_async",
]

#: What a campaign can be: a file's path, a pandas DataFrame, or rows as mappings.
CampaignSource: TypeAlias = "str | os.PathLike[str] | pd.DataFrame | Iterable[Mapping[str, object]]"
#: Where the settings come from: a config.toml path, or settings built in code.
ConfigSource: TypeAlias = "str | os.PathLike[str] | Settings"

_EXTRA_HINT = "pip install 'bulk-sender[pandas]'"


class Overrides(TypedDict, total=False):
    """The command line's options, by their Python names; each is optional."""

    rate: float  #: --rate: messages per second
    concurrency: int  #: --concurrency: requests in flight
    base_url: str  #: --base-url: send to this base URL instead of the pod's
    sandbox: bool  #: --sandbox: send to an embedded Kaleyra sandbox
    restart: bool  #: --restart: start afresh (the old journal is kept)
    resend_unknown: bool  #: --resend-unknown: send 'unknown' rows again
    failed: str | os.PathLike[str]  #: --failed: where the failed export goes
    failed_include_unknown: bool  #: --failed-include-unknown
    summary_json: str | os.PathLike[str]  #: --summary-json: also write the summary here
    wait_lock: float  #: --wait-lock: seconds to wait for a run that is stopping
    progress: bool  #: show the live progress display (the CLI's at a terminal)


_FLAGS = frozenset({"sandbox", "restart", "resend_unknown", "failed_include_unknown", "progress"})
_PATHS = frozenset({"failed", "summary_json"})
_SETTINGS = {"rate": "rate_per_second", "concurrency": "concurrency", "base_url": "base_url"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """What a send or a dry run did. A send's figures cover the whole campaign, every run."""

    #: The command line's exit code for this outcome (docs/exit-codes.md): 0 all sent, 1 some
    #: not sent, 3 stopped early, 129/130/143 stopped by a signal.
    exit_code: int
    #: Messages by status (a dry run: ``valid``, ``invalid``, ``duplicate``).
    statuses: Mapping[str, int]
    #: The results file (a dry run: the verdicts, if ``results`` was given).
    results: Path | None
    #: The failed-row export (None for a dry run).
    failed: Path | None
    #: The summary document, as ``--summary-json`` writes it.
    summary: Mapping[str, Any]
    #: The summary as the command line prints it.
    report: str = field(repr=False)

    def to_dataframe(self) -> pd.DataFrame:
        """The results file as a DataFrame: its columns, every cell a string (needs pandas)."""
        if self.results is None:
            raise UsageError("this dry run wrote no verdicts: pass results=PATH to dry_run()")
        try:
            import pandas as pd
        except ImportError:
            raise UsageError(f"Run.to_dataframe() needs pandas: {_EXTRA_HINT}") from None
        return pd.read_csv(self.results, dtype=str, keep_default_na=False, encoding="utf-8")


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One call's arguments, checked: what :func:`send` and the command line both run."""

    settings: Settings
    campaign: CampaignSource
    results: Path | None = None
    api_key: Secret | None = field(default=None, repr=False)
    failed: Path | None = None
    summary_json: Path | None = None
    sandbox: bool = False
    restart: bool = False
    resend_unknown: bool = False
    failed_include_unknown: bool = False
    wait_lock: float = 60.0
    progress: bool = False


def send(
    campaign: CampaignSource,
    *,
    config: ConfigSource,
    results: str | os.PathLike[str] | None = None,
    api_key: str | None = None,
    **overrides: Unpack[Overrides],
) -> Run:
    """Send a campaign (or resume it) and return what happened; no event loop may be running.

    ``results`` defaults to ``CAMPAIGN.results.csv`` beside a campaign file; a DataFrame or
    rows given in memory need it (the same ``results`` on the next call resumes). ``api_key``
    wins over the environment variable the config names. Inside a running loop (a notebook
    cell, an async task) use :func:`send_async`. Raises :class:`~bulk_sender.BulkSenderError`
    subclasses, each with its ``exit_code``; a run that stops early returns normally.
    """
    _refuse_running_loop()
    call = prepare(campaign, config=config, results=results, api_key=api_key, **overrides)
    # asyncio's own loop, not uvloop: an exception raised by the host's signal handler (an
    # Airflow timeout) must come out of the loop, which then cancels the run (a graceful
    # stop) before it propagates; uvloop logs such an exception and carries on.
    return asyncio.run(send_async_call(call))


async def send_async(
    campaign: CampaignSource,
    *,
    config: ConfigSource,
    results: str | os.PathLike[str] | None = None,
    api_key: str | None = None,
    **overrides: Unpack[Overrides],
) -> Run:
    """:func:`send` as a coroutine, for a running event loop; cancelling it stops gracefully.

    After a cancellation the journal is consistent and the results are written (rows in
    flight that were not answered within the grace period are ``unknown``, the rest
    ``not_sent``), then :class:`asyncio.CancelledError` propagates.
    """
    call = prepare(campaign, config=config, results=results, api_key=api_key, **overrides)
    return await send_async_call(call)


async def send_async_call(call: Call) -> Run:
    """Run a prepared :class:`Call`; CancelledError after a cancelled run's results are written."""
    control = StopControl()
    run = await execute_send(call, control=control)
    if control.cancelled:
        raise asyncio.CancelledError
    return run


def dry_run(
    campaign: CampaignSource,
    *,
    config: ConfigSource,
    results: str | os.PathLike[str] | None = None,
    api_key: str | None = None,
    **overrides: Unpack[Overrides],
) -> Run:
    """Check a campaign without sending anything or touching a journal.

    Takes :func:`send`'s arguments; ``results``, if given, receives every row's verdict
    (``valid``, ``invalid`` with the reason, ``duplicate``). Works with or without a running
    loop: it does not use one.
    """
    call = prepare(campaign, config=config, results=results, api_key=api_key, **overrides)
    return execute_dry_run(call)


def prepare(
    campaign: CampaignSource,
    *,
    config: ConfigSource,
    results: str | os.PathLike[str] | None = None,
    api_key: str | None = None,
    **overrides: Unpack[Overrides],
) -> Call:
    """Check the arguments of :func:`send` and :func:`dry_run`, and load the settings."""
    given: dict[str, Any] = dict(overrides)
    unknown = sorted(set(given) - set(Overrides.__annotations__))
    if unknown:
        raise UsageError(
            f"{unknown[0]!r} is not an option of bulk_sender.send(); the options are "
            f"{', '.join(Overrides.__annotations__)}"
        )
    _check_types(given)
    settings = _settings(config, {k: given.pop(k) for k in _SETTINGS if k in given})
    paths: dict[str, Any] = {k: Path(given.pop(k)) for k in _PATHS if k in given}
    return Call(
        settings=settings,
        campaign=campaign,
        results=None if results is None else Path(results),
        api_key=_secret(api_key),
        **paths,
        **given,
    )


async def execute_send(
    call: Call,
    *,
    control: StopControl | None = None,
    command: list[str] | None = None,
    display: DisplayFactory | None = None,
    signals: bool = False,
) -> Run:
    """Send ``call``; the CLI adds its ``command`` (for resume commands), display and signals."""
    control = control or StopControl()
    with _summary_json(call, "send"):
        with handle_signals(control) if signals else contextlib.nullcontext():
            options = _options(call, call.results, spool_into=None)
            result = await runner.send(
                call.settings,
                options,
                api_key=call.api_key,
                display=display or _display(call),
                control=control,
            )
        return _run_of(call, result, command)


def execute_dry_run(call: Call, *, command: list[str] | None = None) -> Run:
    """Check ``call``'s campaign; a frame or Parquet file is spooled to a temporary folder."""
    with _summary_json(call, "dry-run"), tempfile.TemporaryDirectory() as scratch:
        options = _options(call, call.results or Path(scratch, "dry-run.csv"), Path(scratch))
        result = runner.dry_run(call.settings, options.campaign, call.results, table=options.table)
        return _run_of(call, result, command)


def exit_code(result: SendResult | DryRunResult) -> int:
    """The exit code a run's result calls for (docs/exit-codes.md)."""
    stop = result.stop if isinstance(result, SendResult) else None
    if stop is not None and stop.kind == "signal":
        return 128 + signal.Signals[stop.code].value
    if stop is not None and stop.kind == "cancelled":
        return 128 + signal.SIGINT  # as a Ctrl-C: stopped from outside, resumable
    if stop is not None:
        return ExitCode.STOPPED
    return ExitCode.SOME_NOT_SENT if result.totals.unsent else ExitCode.OK


# --- arguments --------------------------------------------------------------------------------


def _refuse_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UsageError(
        "bulk_sender.send() cannot run inside a running event loop (a notebook cell, an async "
        "task); there, use: run = await bulk_sender.send_async(...). Nothing was sent"
    )


def _check_types(given: Mapping[str, Any]) -> None:
    for name, value in given.items():
        if name in _FLAGS and not isinstance(value, bool):
            raise UsageError(f"{name} must be True or False, not {value!r}")
        if name in _PATHS and not isinstance(value, str | os.PathLike):
            raise UsageError(f"{name} must be a path, not {value!r}")
        if name == "wait_lock" and not _seconds(value):
            raise UsageError(f"wait_lock must be a number of seconds (0 or more), not {value!r}")


def _seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _settings(config: ConfigSource, values: Mapping[str, Any]) -> Settings:
    """Settings from a path or an object, with the rate, concurrency and base URL overridden."""
    overrides: dict[str, dict[str, Any]] = {"kaleyra": {}, "sending": {}}
    for name, value in values.items():
        overrides["kaleyra" if name == "base_url" else "sending"][_SETTINGS[name]] = value
    if isinstance(config, Settings):
        return with_overrides(config, overrides)
    if isinstance(config, str | os.PathLike):
        return load_settings(Path(config), overrides=overrides)
    raise UsageError(
        f"config must be the path of a config.toml or a bulk_sender.config.Settings, not "
        f"{type(config).__name__}"
    )


def _secret(api_key: str | None) -> Secret | None:
    """The API key given in code, checked as the one from the environment is."""
    if api_key is None:
        return None
    value = api_key.strip() if isinstance(api_key, str) else ""
    if not value or not (value.isascii() and value.isprintable()):
        raise ConfigError(
            "api_key",
            "must be your Kaleyra API key: a non-empty string of printable ASCII characters",
        )
    return Secret(value)


def _options(call: Call, results: Path | None, spool_into: Path | None) -> RunOptions:
    """The runner's options, the campaign's rows spooled to CSV if they are not a file."""
    source = call.campaign
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        results = results or default_results_path(path, sandbox=call.sandbox)
        table = None
        if path.suffix.lower() in frames.PARQUET_SUFFIXES:
            table = frames.spool_parquet(path, **_spool_place(results, spool_into))
    elif isinstance(source, bytes) or not (frames.is_dataframe(source) or _iterable(source)):
        raise UsageError(
            f"a campaign is a file's path, a pandas DataFrame or an iterable of mappings, not "
            f"{type(source).__name__}"
        )
    else:
        if results is None:
            raise UsageError(
                "a campaign given in memory needs results=PATH, the results file: the rows "
                "and the journal are kept beside it, and the same results on the next call "
                "resume the campaign"
            )
        table = frames.spool(source, **_spool_place(results, spool_into))
        path = table.path
    return _run_options(call, path, results, table)


def _run_options(call: Call, campaign: Path, results: Path, table: Table | None) -> RunOptions:
    return RunOptions(
        campaign=campaign,
        results=results,
        failed=call.failed,
        sandbox=call.sandbox,
        restart=call.restart,
        resend_unknown=call.resend_unknown,
        failed_include_unknown=call.failed_include_unknown,
        table=table,
        wait_lock=call.wait_lock,
    )


def _spool_place(results: Path, scratch: Path | None) -> dict[str, Any]:
    """Where a campaign's rows are spooled: beside the results, or in a dry run's scratch."""
    return {"folder": scratch or results.parent, "stem": results.stem}


def _iterable(value: object) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping)


def _display(call: Call) -> DisplayFactory | None:
    if not call.progress:
        return None
    from bulk_sender import ui

    return ui.Progress(interactive=True)


# --- results ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _summary_json(call: Call, mode: str) -> Iterator[None]:
    """``summary_json``: "running" first, the run's own document or its error at the end."""
    path = call.summary_json
    if path is None:
        yield
        return
    try:
        write_summary_json(path, running_summary(mode, _campaign_name(call.campaign)))
    except OSError as exc:
        raise UsageError(f"cannot write the summary JSON {path}: {exc.strerror}") from None
    try:
        yield
    except BaseException as exc:
        code = exit_code_of(exc) if isinstance(exc, Exception) else 128 + signal.SIGINT
        message = str(exc) if isinstance(exc, BulkSenderError) else _foreign(exc)
        write_summary_json(path, error_summary(code, message))
        raise


def _foreign(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "interrupted before anything was sent; run it again to send the campaign"
    return f"internal error ({type(exc).__name__}; a bug). The journal is consistent"


def _campaign_name(campaign: CampaignSource) -> Path:
    if isinstance(campaign, str | os.PathLike):
        return Path(campaign)
    return Path(f"<{type(campaign).__name__}>")


def _run_of(call: Call, result: SendResult | DryRunResult, command: list[str] | None) -> Run:
    """The :class:`Run` of a result; its summary JSON is written if asked for."""
    code = exit_code(result)
    doc = summary_dict(result, exit_code=code, command=command)
    if call.summary_json is not None:
        write_summary_json(call.summary_json, doc)
    stop = stop_line(result, error_threshold=call.settings.sending.error_threshold)
    results: Path | None
    if isinstance(result, SendResult):
        results, failed = result.results, result.failed
    else:
        results, failed = result.verdicts, None
    return Run(
        exit_code=int(code),
        statuses=dict(doc["statuses"]),
        results=results,
        failed=failed,
        summary=doc,
        report=summary_text(doc, stop),
    )
