"""The ``receive`` and ``report`` subcommands: their arguments and how they run.

Exit codes: 0 done; 2 usage or config error (no secret, a wrong file, a port that cannot be
listened on); 3 a callback store that cannot be opened, written or read.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bulk_sender.config import CallbacksSettings, Settings, load_settings, read_callback_secret
from bulk_sender.errors import ExitCode
from bulk_sender.stores.locations import shown

if TYPE_CHECKING:
    from bulk_sender.audience.incoming import LedgerReplies
    from bulk_sender.delivery.workers import WorkerSpec

__all__ = ["COMMANDS", "add_parsers", "receive", "run"]

COMMANDS = frozenset({"receive", "report"})


def add_parsers(commands: Any) -> None:
    """Add ``receive`` and ``report`` to the CLI's subparsers."""
    config = {"type": Path, "default": Path("config.toml"), "help": "default: ./config.toml"}
    r = commands.add_parser("receive", help="receive Kaleyra's delivery callbacks")
    r.add_argument("--config", **config)
    r.add_argument("--host", help="address to listen on (default: [callbacks] host)")
    r.add_argument("--port", type=int, help="port to listen on (default: [callbacks] port)")
    r.add_argument(
        "--workers",
        type=_workers,
        help="receiver processes on the port (default: the cores, up to 4)",
    )
    r.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    r.add_argument("--log-format", choices=("text", "json"), default="text")

    p = commands.add_parser("report", help="merge delivery callbacks into a campaign's results")
    p.add_argument("results", type=Path, help="the results file of a send (its --out)")
    p.add_argument("--config", **config)
    p.add_argument("--campaign", type=Path, help="the campaign file, if it has moved")
    p.add_argument("--html", type=Path, help="also write the HTML report here")
    p.add_argument("--summary-json", type=Path, help="also write the funnel as JSON here")
    p.add_argument("--failed", type=Path, help="write the rows worth sending again here")


def _callbacks(settings: Settings, config: Path) -> CallbacksSettings:
    return settings.callbacks or CallbacksSettings.beside(config)


def run(args: argparse.Namespace) -> int:
    """Run ``receive`` or ``report`` (logging set up by the CLI); errors go to the CLI's one
    handler, with the exit codes errors.py gives them (a StoreError is 3)."""
    if args.command == "receive":
        return _receive(args)
    return _report(args)


def _run_async(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/Linux
        asyncio.run(coro)
        return
    uvloop.run(coro)


def _workers(text: str) -> int:
    from bulk_sender.delivery.workers import MOST_WORKERS

    if not text.isdigit() or not 1 <= int(text) <= MOST_WORKERS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MOST_WORKERS}")
    return int(text)


def _receive(args: argparse.Namespace) -> int:
    from bulk_sender.delivery.workers import WorkerSpec, default_workers, supervise

    settings = load_settings(args.config)
    callbacks = _callbacks(settings, args.config)
    read_callback_secret(callbacks)  # no secret: exit 2 before anything starts
    spec = WorkerSpec(
        config=str(args.config), host=args.host or callbacks.host,
        port=callbacks.port if args.port is None else args.port,
    )  # fmt: skip
    workers = args.workers or default_workers()
    several = f", {workers} workers" if workers > 1 else ""
    where = shown(callbacks.location())

    def ready(url: str) -> None:
        print(f"Receiving Kaleyra callbacks on {url} (store {where}{several})", flush=True)

    if workers == 1:
        _run_async(receive(spec, ready, asyncio.Event()))
        return ExitCode.OK
    _run_async(_check_stores(settings, callbacks))  # exit 3 here, before any worker starts
    return supervise(spec, workers, receive, ready)


async def receive(spec: WorkerSpec, ready: Callable[[str], None], stop: asyncio.Event) -> None:
    """One receiver, as ``spec`` says, until SIGTERM/SIGINT or ``stop`` (a worker's main)."""
    from bulk_sender.delivery.receiver import serve
    from bulk_sender.stores.base import open_callback_store

    settings = load_settings(Path(spec.config))
    callbacks = _callbacks(settings, Path(spec.config))
    secret = read_callback_secret(callbacks)
    replies = await _ledger_replies(settings)
    try:
        store = await open_callback_store(callbacks.location())
        _tune_process()
        await serve(
            store, secret, host=spec.host, port=spec.port, ready=ready, stop=stop,
            on_incoming=replies, reuse_port=spec.shared_port,
        )  # fmt: skip
    finally:
        if replies is not None:
            await replies.ledger.close()


#: The GIL switch interval of a receiver process (Python's default is 5 ms). The store's writer
#: thread needs the GIL back after every SQLite statement (its commit's fsync included); while
#: the loop is busy with requests it waits up to this long each time, and the callbacks of its
#: batch wait with it. Measured: about a quarter more callbacks per second than at 5 ms.
_SWITCH_INTERVAL: Final = 0.0005


def _tune_process() -> None:
    """A receiver process's own settings: the switch interval, and the objects made so far
    (modules, config) moved out of the garbage collector's reach, so that the full collections
    a flood of requests triggers do not walk them again and again."""
    sys.setswitchinterval(_SWITCH_INTERVAL)
    gc.freeze()


async def _check_stores(settings: Settings, callbacks: CallbacksSettings) -> None:
    """Open and close the store and the ledger, so that a worker does not find them broken."""
    from bulk_sender.stores.base import open_callback_store

    await (await open_callback_store(callbacks.location())).close()
    replies = await _ledger_replies(settings)
    if replies is not None:
        await replies.ledger.close()


async def _ledger_replies(settings: Settings) -> LedgerReplies | None:
    """Customers' messages go into the audience ledger too (STOP, START, the service window),
    unless ``[audience] ledger`` is empty."""
    from bulk_sender.audience.incoming import LedgerReplies
    from bulk_sender.stores.ledger import open_ledger

    if not settings.audience.enabled:
        return None
    ledger = await open_ledger(settings.audience.ledger_location())
    assert ledger is not None  # only a read-only open finds nothing
    return LedgerReplies(ledger, settings.audience)


def _report(args: argparse.Namespace) -> int:
    from bulk_sender.delivery.funnel import funnel_dict, funnel_text
    from bulk_sender.delivery.report import ReportOptions, report

    settings = load_settings(args.config)
    options = ReportOptions(
        results=args.results, campaign=args.campaign, failed=args.failed, html=args.html,
        summary_json=args.summary_json,
    )  # fmt: skip
    result = report(settings, _callbacks(settings, args.config), options)
    if args.html is not None:
        from bulk_sender.delivery.html import write_html

        write_html(args.html, result)
    files = {"results": str(args.results)}
    if not result.store_found:
        files["callbacks"] = f"none stored yet at {result.store}"
    if args.failed is not None:
        files["rows worth sending again"] = f"{args.failed} ({_rows(result.failed_rows or 0)})"
    if args.html is not None:
        files["HTML report"] = str(args.html)
    title = f"Delivery of {args.results} ({result.funnel.messages:,} messages)"
    print(funnel_text(result.funnel, title=title, files=files), flush=True)
    if args.summary_json is not None:
        from bulk_sender.record.summary import write_summary_json

        doc = {
            "version": 1, "mode": "report", "outcome": "finished", "exit_code": int(ExitCode.OK),
            "results": str(args.results), "campaign": str(result.campaign),
            "store": result.store, "store_found": result.store_found,
            "generated_at": result.generated_at, **funnel_dict(result.funnel),
            "failed": None if args.failed is None else str(args.failed),
            "failed_rows": result.failed_rows,
        }  # fmt: skip
        write_summary_json(args.summary_json, doc)
    return ExitCode.OK


def _rows(count: int) -> str:
    return f"{count:,} row" if count == 1 else f"{count:,} rows"
