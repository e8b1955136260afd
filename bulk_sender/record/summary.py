"""The end of a run in figures: its result, the ``--summary-json`` document, the printed summary.

A send returns a :class:`SendResult`, a dry run a :class:`DryRunResult`; each knows only what
its kind of run has. :func:`summary_dict` turns either into the one JSON document (the same
fields for both, documented with ``--summary-json``), which :func:`summary_text` prints for a
person; :func:`stop_line` says what stopped a send and what to do next. The printed text
quotes Kaleyra (codes, the message of an account stop) and the campaign (paths, invalid
reasons): every line of it is made :func:`~bulk_sender.printable.printable` there.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bulk_sender.audience.gate import AudienceReport
from bulk_sender.audience.summary import audience_dict, audience_lines
from bulk_sender.errors import OutputWriteError
from bulk_sender.input.campaign import LoadStats
from bulk_sender.model import DRY_RUN_STATUSES, RESULT_STATUSES, Status, utc_now
from bulk_sender.printable import printable
from bulk_sender.record.atomic import atomic_write
from bulk_sender.record.results import Totals
from bulk_sender.sending.advice import account_advice, endpoint_advice
from bulk_sender.sending.engine import StopReason
from bulk_sender.sending.garbled import GARBLED_IN_A_ROW
from bulk_sender.sending.stats import RunStats

__all__ = [
    "DryRunResult",
    "SendResult",
    "error_summary",
    "running_summary",
    "stop_line",
    "summary_dict",
    "summary_text",
    "write_summary_json",
]

_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """What a send (or resume) did: the whole campaign's totals, this run's live figures."""

    campaign: Path
    results: Path
    failed: Path | None
    totals: Totals
    load: LoadStats
    stats: RunStats
    stop: StopReason | None
    resumed_done: int
    crashed_unknown: int
    duration: float
    audience: AudienceReport | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DryRunResult:
    """What a dry run found: every row's verdict counted, and the request a valid row makes."""

    campaign: Path
    verdicts: Path | None  # where the verdicts were written, if asked
    totals: Totals
    load: LoadStats
    duration: float
    example_request: dict[str, Any] | None
    audience: AudienceReport | None = None


def summary_dict(
    result: SendResult | DryRunResult, *, exit_code: int, command: list[str] | None
) -> dict[str, Any]:
    """The run's summary as plain data: the ``--summary-json`` document.

    ``command`` is the command line that ran it, for the resume and retry commands; ``None``
    (a call of the Python API) leaves both out.
    """
    if isinstance(result, DryRunResult):
        return _dry_run_dict(result, exit_code=exit_code)
    stop, totals = result.stop, result.totals
    retry = None
    if command and totals.failed_rows and result.failed is not None and stop is None:
        # After a stop the not_sent rows are sent by resuming; offering the export as well
        # would invite sending them twice.
        retry = _retry_command(command, result.failed, result.results)
    return {
        **_head("send", result.campaign, stop, exit_code),
        **_counts(totals, result.load, RESULT_STATUSES),
        "example_request": None,
        **_this_run(result),
        "results": str(result.results),
        "failed": None if result.failed is None else str(result.failed),
        "failed_rows": totals.failed_rows,
        "resume_command": _resume_command(command) if command and stop is not None else None,
        "retry_command": retry,
        "audience": audience_dict(result.audience, counts=totals.codes),
    }


def _dry_run_dict(result: DryRunResult, *, exit_code: int) -> dict[str, Any]:
    """A dry run's document: the same fields, with nothing sent and nothing to resume."""
    return {
        **_head("dry-run", result.campaign, None, exit_code),
        **_counts(result.totals, result.load, DRY_RUN_STATUSES),
        "example_request": result.example_request,
        "this_run": {
            "requests": 0,
            "retries": 0,
            "statuses": {},
            "already_done_before": 0,
            "unknown_after_crash": 0,
        },
        "duration_seconds": round(result.duration, 3),
        "mean_rate": 0.0,
        "latency_ms": {"p50": None, "p95": None, "p99": None},
        "rate": {"configured": None, "final": None, "changes": 0},
        "in_flight": {"limit": None, "capped": None},
        "results": None if result.verdicts is None else str(result.verdicts),
        "failed": None,
        "failed_rows": result.totals.failed_rows,
        "resume_command": None,
        "retry_command": None,
        "audience": audience_dict(result.audience),
    }


def _head(mode: str, campaign: Path, stop: StopReason | None, exit_code: int) -> dict[str, Any]:
    return {
        "version": _VERSION,
        "mode": mode,
        "campaign": str(campaign),
        "outcome": "stopped" if stop is not None else "finished",
        "stop": None
        if stop is None
        else {"reason": stop.kind, "code": stop.code, "message": stop.message},
        "exit_code": exit_code,
    }


def _counts(totals: Totals, load: LoadStats, shown: tuple[Status, ...]) -> dict[str, Any]:
    """The whole campaign's counts: by status (those ``shown``), by code, by invalid reason."""
    return {
        "rows": totals.rows,
        "messages": totals.messages,
        "statuses": {s.value: totals.statuses.get(s, 0) for s in shown},
        "codes": dict(totals.codes.most_common()),
        "warnings": totals.warnings,
        "refs_truncated": load.refs_truncated,
        "invalid_reasons": {
            reason: {"count": n, "example_rows": load.examples.get(reason, [])}
            for reason, n in load.invalid.most_common()
        },
    }


def _this_run(result: SendResult) -> dict[str, Any]:
    """This run's own figures: requests, retries, pace, latency, rate changes."""
    stats = result.stats
    latency = {
        f"p{p}": None if (v := stats.latency.percentile(p)) is None else round(v * 1000, 1)
        for p in (50, 95, 99)
    }
    return {
        "this_run": {
            "requests": stats.requests,
            "retries": stats.retries,
            "statuses": {str(k): v for k, v in stats.statuses.items()},
            "already_done_before": result.resumed_done,
            "unknown_after_crash": result.crashed_unknown,
        },
        "duration_seconds": round(result.duration, 3),
        "mean_rate": round(stats.pace, 2),
        "latency_ms": latency,
        "rate": {
            "configured": stats.target_rate,
            "final": stats.rate,
            "changes": stats.rate_changes,
        },
        "in_flight": {"limit": stats.inflight_limit, "capped": stats.inflight_note or None},
    }


def running_summary(mode: str, campaign: Path) -> dict[str, Any]:
    """The document written when a run starts: a run killed later never leaves an old outcome."""
    return {
        "version": _VERSION,
        "mode": mode,
        "campaign": str(campaign),
        "outcome": "running",
        "exit_code": None,
        "pid": os.getpid(),
        "started_at": utc_now(),
    }


def error_summary(exit_code: int, message: str) -> dict[str, Any]:
    """The document of a run that ended in an error (it replaces any older, successful one)."""
    return {"version": _VERSION, "outcome": "error", "exit_code": exit_code, "error": message}


def write_summary_json(path: Path, doc: dict[str, Any]) -> None:
    """Write the summary document as JSON (atomically).

    Raises :class:`OutputWriteError` if it cannot; an older summary there is then removed, so
    that no job reads an earlier run's outcome for this one's.
    """
    try:
        with atomic_write(path) as file:
            file.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    except OSError as exc:
        removed = " (the older summary there was removed)" if _remove_older(path) else ""
        raise OutputWriteError(
            f"cannot write the summary JSON {path}: {exc.strerror or exc}{removed}. Fix the "
            "cause, then run the same command again: it sends nothing already sent",
            path=path,
        ) from None


def _remove_older(path: Path) -> bool:
    """Remove the summary an earlier run left at ``path``; never a file that is not one."""
    try:
        with path.open("rb") as file:
            older = orjson.loads(file.read(1 << 20))
        if not isinstance(older, dict) or not {"version", "outcome", "exit_code"} <= older.keys():
            return False
        path.unlink()
    except (OSError, orjson.JSONDecodeError):
        return False
    return True


def _resume_command(command: list[str]) -> str:
    return shlex.join(arg for arg in command if arg != "--restart")


def _retry_command(command: list[str], failed: Path, results: Path) -> str:
    """``send`` of the failed export, with the same program, config, target and pace."""
    retry_out = results.with_name(results.stem + ".retry.csv")
    program = command[: command.index("send")] if "send" in command else command[:1]
    keep = [*program, "send", str(failed), "--out", str(retry_out)]
    for flag in ("--config", "--base-url", "--rate", "--concurrency"):
        if flag in command and command.index(flag) + 1 < len(command):
            keep += [flag, command[command.index(flag) + 1]]
    if "--sandbox" in command:
        keep.append("--sandbox")
    return shlex.join(keep)


def stop_line(result: SendResult | DryRunResult, *, error_threshold: int) -> str | None:
    """One sentence: what stopped the run and what to do next (None: it was not stopped)."""
    if not isinstance(result, SendResult) or result.stop is None:
        return None
    stop = result.stop
    remaining = result.totals.statuses.get(Status.NOT_SENT, 0)
    again = f"run the same command again to send the remaining {remaining:,} rows."
    if stop.kind == "account":
        advice = account_advice(stop.code, stop.message)
        detail = f" ({stop.message})" if stop.code == "WA-401" and stop.message else ""
        return f"Kaleyra says {advice.what} ({stop.code}){detail}. {advice.todo}, then {again}"
    if stop.kind == "endpoint":
        return (
            f"Stopped ({stop.code}): {stop.message}. {endpoint_advice(stop.code)}. No row was "
            f"marked failed for it; {again}"
        )
    if stop.kind == "threshold":
        return (
            f"Stopped after {error_threshold} failed rows in a row (last: "
            f"{stop.code} {stop.message}). Look at the failures in {result.results}, fix "
            f"the cause, then {again}"
        )
    if stop.kind == "answers":
        return (
            f"Stopped after {GARBLED_IN_A_ROW} answers in a row that Kaleyra accepted but "
            f"bulk-sender could not read ({stop.code}: {stop.message}). Those rows are unknown: "
            "they may have been delivered and are not sent again. Check that base_url points "
            f"at Kaleyra's API and nothing rewrites its answers, then {again}"
        )
    if stop.kind in ("journal", "ledger"):
        return f"Stopped: {stop.message}"
    if stop.kind == "cancelled":
        return (
            f"Stopped: the task was cancelled. To continue, call send again with the same "
            f"campaign and results to send the remaining {remaining:,} rows."
        )
    return f"Stopped by {stop.code}. To continue, {again}"


def summary_text(doc: dict[str, Any], stop_line: str | None) -> str:
    """The human summary printed at the end of every run."""
    st = doc["statuses"]
    lines = [
        f"{'Dry run of' if doc['mode'] == 'dry-run' else 'Campaign'} {doc['campaign']}: "
        f"{doc['outcome']} in {doc['duration_seconds']:.1f} s",
        f"  rows {doc['rows']:,}   messages {doc['messages']:,}",
        "  " + "   ".join(f"{name} {count:,}" for name, count in st.items()),
    ]
    if doc["codes"]:
        lines.append("  by code: " + ", ".join(f"{c} x{n:,}" for c, n in doc["codes"].items()))
    lines.append(f"  warnings {doc['warnings']:,}   refs truncated {doc['refs_truncated']:,}")
    lines.extend(_send_lines(doc) if doc["mode"] == "send" else _dry_run_lines(doc))
    lines.extend(audience_lines(doc.get("audience"), dry_run=doc["mode"] == "dry-run"))
    if stop_line:
        lines.append(stop_line)
    if doc["resume_command"]:
        lines.append(f"  to resume: {doc['resume_command']}")
        if doc["statuses"].get(Status.NOT_SENT):
            lines.append(
                "  (the not_sent rows are also in the failed export: send them by resuming or "
                "from the export, never both)"
            )
    if doc["retry_command"]:
        lines.append(f"  to retry the failed rows: {doc['retry_command']}")
    return "\n".join(printable(line) for line in lines)


def _send_lines(doc: dict[str, Any]) -> list[str]:
    lat = doc["latency_ms"]
    run = doc["this_run"]
    lines = [
        f"  this run: {_count(run['requests'], 'request')} "
        f"({_count(run['retries'], 'retry', 'retries')}), sending at "
        f"{doc['mean_rate']:g}/s (configured {doc['rate']['configured']:g}/s), latency "
        f"p50 {_ms(lat['p50'])} p95 {_ms(lat['p95'])} p99 {_ms(lat['p99'])}"
    ]
    if doc["in_flight"]["capped"]:
        lines.append(f"  the pace was held down by concurrency: {doc['in_flight']['capped']}")
    if run["already_done_before"]:
        lines.append(f"  already done before this run: {run['already_done_before']:,}")
    lines.append(f"  results: {doc['results']}")
    lines.append(f"  failed rows: {doc['failed']} ({doc['failed_rows']:,} rows)")
    return lines


def _dry_run_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    if doc["invalid_reasons"]:
        lines.append("  invalid, by reason (example rows):")
        for reason, info in doc["invalid_reasons"].items():
            rows = ", ".join(str(r) for r in info["example_rows"])
            label = "row" if len(info["example_rows"]) == 1 else "rows"
            lines.append(f"    {info['count']:>7,}  {reason}  ({label} {rows})")
    if doc["results"]:
        lines.append(f"  verdicts: {doc['results']}")
    example = doc["example_request"]
    if example is not None:
        lines.append("  example request (first valid row):")
        lines.append(f"    {example['method']} {example['url']}")
        lines.extend(f"    {name}: {value}" for name, value in example["headers"].items())
        body = orjson.dumps(example["body"], option=orjson.OPT_INDENT_2).decode()
        lines.extend(f"    {line}" for line in body.splitlines())
    return lines


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"
