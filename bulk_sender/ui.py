"""What the operator sees while a run goes: logging set-up and the live progress.

At a terminal a ``rich`` progress display shows rows done, counts by status, the sending rate
against the configured one and an ETA. Elsewhere (cron, Airflow, ``--quiet``, ``--log-format
json``) a ``bulk_sender.progress`` log line every few seconds carries the same figures. Log
events have stable dotted names (``bulk_sender.rate_changed``) and structured fields; in JSON
mode every line is one JSON object. Nothing here ever sees the API key. The summary printed
at the end is :mod:`bulk_sender.record.summary`'s.

A log line can quote Kaleyra's text or the campaign's: both formatters show every control
character in it as an escape (:mod:`bulk_sender.printable`), so no line can forge another or
drive the terminal. The progress bar shows only figures.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from bulk_sender.input.campaign import LoadStats
from bulk_sender.model import RESULT_STATUSES, Status
from bulk_sender.printable import json_printable, printable
from bulk_sender.sending.stats import RunStats

__all__ = ["Progress", "setup_logging"]

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message", "asctime", "event",
}  # fmt: skip


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = " ".join(f"{k}={_plain(v)}" for k, v in _fields(record).items())
        return printable(f"{stamp} {record.levelname:<7} {record.getMessage()} {fields}".rstrip())


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **_fields(record),
        }
        return json_printable(orjson.dumps(doc, default=str).decode())


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
                    "in_flight_limit": stats.inflight_limit,
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
        f"[green]sent {s[Status.SENT]}[/] [red]failed {s[Status.FAILED]}[/] "
        f"[yellow]unknown {s[Status.UNKNOWN]}[/] invalid {s[Status.INVALID]}"
    )
    achieved = meter.rate(stats.requests)
    if stats.rate < stats.target_rate:
        rate = f"[yellow]{achieved:.0f}/s, slowed to {stats.rate:g} of {stats.target_rate:g}/s[/]"
    else:
        rate = f"{achieved:.0f}/s of {stats.target_rate:g}/s"
    if stats.inflight_note:
        rate += f" [yellow](concurrency caps it at {stats.inflight_limit})[/]"
    return {"completed": done, "total": total, "counts": counts, "rate": rate}


def _progress(stats: RunStats, load: LoadStats, rows: int) -> tuple[int, int]:
    """Messages done (earlier runs' included) and the total to show (never below done)."""
    done = load.skipped_done + stats.finished
    return done, max(rows, done)
