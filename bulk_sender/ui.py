"""What the operator sees: logging set-up, the live progress, the summary (text and JSON).

At a terminal a ``rich`` progress display shows rows done, counts by status, the sending rate
against the configured one and an ETA. Elsewhere (cron, Airflow, ``--quiet``, ``--log-format
json``) a ``bulk_sender.progress`` log line every few seconds carries the same figures. Log
events have stable dotted names (``bulk_sender.rate_changed``) and structured fields; in JSON
mode every line is one JSON object. Nothing here ever sees the API key.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from bulk_sender.input.campaign import LoadStats
from bulk_sender.model import DRY_RUN_STATUSES, RESULT_STATUSES, Status
from bulk_sender.record.atomic import atomic_write
from bulk_sender.runner import RunResult
from bulk_sender.sending.stats import RunStats

__all__ = [
    "Progress",
    "setup_logging",
    "summary_dict",
    "summary_text",
    "write_summary_json",
]

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message", "asctime", "event",
}  # fmt: skip


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = " ".join(f"{k}={_plain(v)}" for k, v in _fields(record).items())
        return f"{stamp} {record.levelname:<7} {record.getMessage()} {fields}".rstrip()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **_fields(record),
        }
        return orjson.dumps(doc, default=str).decode()


def _plain(value: object) -> str:
    text = str(value)
    return f'"{text}"' if " " in text or not text else text


def setup_logging(*, verbosity: int, json_format: bool, stream: TextIO | None = None) -> None:
    """Send bulk_sender's log events to stderr: run events by default, -v adds per-row detail."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_format else _TextFormatter())
    logger = logging.getLogger("bulk_sender")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)


class Progress:
    """The live display: a rich progress bar at a terminal, periodic log lines elsewhere."""

    def __init__(self, *, interactive: bool, every: float = 5.0) -> None:
        self.interactive = interactive
        self.every = every

    @contextlib.contextmanager
    def __call__(self, stats: RunStats, load: LoadStats, rows: int) -> Iterator[None]:
        if self.interactive:
            with self._rich(stats, load, rows):
                yield
        else:
            with self._log_lines(stats, load, rows):
                yield

    @contextlib.contextmanager
    def _rich(self, stats: RunStats, load: LoadStats, rows: int) -> Iterator[None]:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        console = Console(stderr=True)
        bar = RichProgress(
            TextColumn("[bold]sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
        )
        task = bar.add_task("sending", total=rows, counts="", rate="")
        meter = _RateMeter()

        def refresh() -> None:
            bar.update(task, **_rich_fields(stats, load, rows, meter))

        with bar, _logs_through(sys.stderr):
            # Inside the live display sys.stderr is rich's proxy, which prints above the bar.
            with self._ticker(refresh, 0.25):
                yield
            refresh()

    @contextlib.contextmanager
    def _log_lines(self, stats: RunStats, load: LoadStats, rows: int) -> Iterator[None]:
        log = logging.getLogger("bulk_sender")
        meter = _RateMeter()

        def emit() -> None:
            done, total = _progress(stats, load, rows)
            log.info(
                "bulk_sender.progress",
                extra={
                    "event": "bulk_sender.progress",
                    "done": done,
                    "total": total,
                    **{s.value: stats.statuses[s] for s in RESULT_STATUSES},
                    "rate": round(meter.rate(stats.requests), 1),
                    "target_rate": round(stats.rate, 1),
                },
            )

        with self._ticker(emit, self.every):
            yield

    @staticmethod
    @contextlib.contextmanager
    def _ticker(action: Any, every: float) -> Iterator[None]:
        """Call ``action`` every ``every`` seconds from a thread (never the sending loop)."""
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(every):
                action()

        thread = threading.Thread(target=tick, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


@contextlib.contextmanager
def _logs_through(stream: TextIO) -> Iterator[None]:
    """Send bulk_sender's log handlers to ``stream`` for the duration, then back."""
    handlers = [
        h for h in logging.getLogger("bulk_sender").handlers if isinstance(h, logging.StreamHandler)
    ]
    previous = [h.setStream(stream) for h in handlers]
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            if old is not None:
                handler.setStream(old)


class _RateMeter:
    """Requests per second over the trailing ``window`` seconds, from a growing count."""

    def __init__(self, window: float = 3.0) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])

    def rate(self, count: int) -> float:
        now = time.monotonic()
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        then, before = self._samples[0]
        return (count - before) / (now - then) if now > then else 0.0


def _rich_fields(stats: RunStats, load: LoadStats, rows: int, meter: _RateMeter) -> dict[str, Any]:
    done, total = _progress(stats, load, rows)
    s = stats.statuses
    counts = (
        f"[green]sent {s['sent']}[/] [red]failed {s['failed']}[/] "
        f"[yellow]unknown {s['unknown']}[/] invalid {s['invalid']}"
    )
    achieved = meter.rate(stats.requests)
    if stats.rate < stats.target_rate:
        rate = f"[yellow]{achieved:.0f}/s, slowed to {stats.rate:g} of {stats.target_rate:g}/s[/]"
    else:
        rate = f"{achieved:.0f}/s of {stats.target_rate:g}/s"
    return {"completed": done, "total": total, "counts": counts, "rate": rate}


def _progress(stats: RunStats, load: LoadStats, rows: int) -> tuple[int, int]:
    """Messages done (earlier runs' included) and the total to show (never below done)."""
    done = load.skipped_done + stats.finished
    return done, max(rows, done)


# -- the summary ------------------------------------------------------------------------------


def summary_dict(result: RunResult, *, exit_code: int, command: list[str]) -> dict[str, Any]:
    """The run's summary as plain data: the ``--summary-json`` document (see README)."""
    totals, stats, options = result.totals, result.stats, result.options
    latency = stats.latency if stats is not None else None
    pct = {
        f"p{p}": (
            None if latency is None or (v := latency.percentile(p)) is None else round(v * 1000, 1)
        )
        for p in (50, 95, 99)
    }
    requests = stats.requests if stats is not None else 0
    stop = result.stop
    resume = _resume_command(command) if stop is not None else None
    retry = None
    if totals.failed_rows and options.failed is not None and stop is None:
        # After a stop the not_sent rows are sent by resuming; offering the export as well
        # would invite sending them twice.
        retry = _retry_command(command, options.failed, options.results)
    return {
        "version": 1,
        "mode": "dry-run" if result.dry_run else "send",
        "campaign": str(options.campaign),
        "outcome": "stopped" if stop is not None else "finished",
        "stop": None
        if stop is None
        else {"reason": stop.kind, "code": stop.code, "message": stop.message},
        "exit_code": exit_code,
        "rows": totals.rows,
        "messages": totals.messages,
        "statuses": {
            s.value: totals.statuses.get(s, 0)
            for s in (DRY_RUN_STATUSES if result.dry_run else RESULT_STATUSES)
        },
        "codes": dict(totals.codes.most_common()),
        "warnings": totals.warnings,
        "refs_truncated": result.load.refs_truncated,
        "invalid_reasons": {
            reason: {"count": n, "example_rows": result.load.examples.get(reason, [])}
            for reason, n in result.load.invalid.most_common()
        },
        "example_request": result.example_request,
        "this_run": {
            "requests": requests,
            "retries": stats.retries if stats is not None else 0,
            "statuses": {str(k): v for k, v in stats.statuses.items()} if stats is not None else {},
            "already_done_before": result.resumed_done,
            "unknown_after_crash": result.crashed_unknown,
        },
        "duration_seconds": round(result.duration, 3),
        "mean_rate": round(stats.pace, 2) if stats is not None else 0.0,
        "latency_ms": pct,
        "rate": {
            "configured": stats.target_rate if stats is not None else None,
            "final": stats.rate if stats is not None else None,
            "changes": stats.rate_changes if stats is not None else 0,
        },
        "results": str(options.results) if str(options.results) != "." else None,
        "failed": None if options.failed is None else str(options.failed),
        "failed_rows": totals.failed_rows,
        "resume_command": resume,
        "retry_command": retry,
    }


def _resume_command(command: list[str]) -> str:
    return shlex.join(arg for arg in command if arg != "--restart")


def _retry_command(command: list[str], failed: Path, results: Path) -> str:
    """``send`` of the failed export, with the same program, config, target and pace."""
    retry_out = results.with_name(results.stem + ".retry.csv")
    keep = [command[0], "send", str(failed), "--out", str(retry_out)]
    for flag in ("--config", "--base-url", "--rate", "--concurrency"):
        if flag in command and command.index(flag) + 1 < len(command):
            keep += [flag, command[command.index(flag) + 1]]
    if "--sandbox" in command:
        keep.append("--sandbox")
    return shlex.join(keep)


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
    if doc["mode"] == "send":
        lat = doc["latency_ms"]
        run = doc["this_run"]
        lines.append(
            f"  this run: {_count(run['requests'], 'request')} "
            f"({_count(run['retries'], 'retry', 'retries')}), sending at "
            f"{doc['mean_rate']:g}/s (configured {doc['rate']['configured']:g}/s), latency "
            f"p50 {_ms(lat['p50'])} p95 {_ms(lat['p95'])} p99 {_ms(lat['p99'])}"
        )
        if run["already_done_before"]:
            lines.append(f"  already done before this run: {run['already_done_before']:,}")
        lines.append(f"  results: {doc['results']}")
        lines.append(f"  failed rows: {doc['failed']} ({doc['failed_rows']:,} rows)")
    else:
        lines.extend(_dry_run_lines(doc))
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
    return "\n".join(lines)


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


def write_summary_json(path: Path, doc: dict[str, Any]) -> None:
    """Write the summary document as JSON (atomically)."""
    with atomic_write(path) as file:
        file.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
