"""The command line: parse, build settings, run, map outcomes and errors to exit codes.

Exit codes (also in the README):

===  ==========================================================================================
0    every message was sent (or deliberately skipped as a duplicate); dry run: all rows valid
1    the run finished but some messages were not sent (failed, invalid, unknown); dry run: some
     rows are invalid
2    usage, config or campaign-file error: nothing was sent
3    the run stopped early (account-level error, error threshold, journal not writable); run
     the same command again to resume
130  stopped by SIGINT (Ctrl-C); 143: stopped by SIGTERM. Both resumable.
===  ==========================================================================================
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from bulk_sender import __version__
from bulk_sender.config import Settings, load_settings
from bulk_sender.delivery import commands as delivery_commands
from bulk_sender.errors import UsageError
from bulk_sender.model import UNSENT, Status
from bulk_sender.record.journal import JournalError
from bulk_sender.runner import (
    RunOptions,
    RunResult,
    default_results_path,
    dry_run,
    send,
)
from bulk_sender.sending.engine import StopReason

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_SOME_NOT_SENT, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
#: A bug (sysexits' EX_SOFTWARE): distinct from every outcome of a run that worked as designed.
EXIT_INTERNAL = 70


def build_parser() -> argparse.ArgumentParser:
    """The ``bulk-sender`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="bulk-sender",
        description="Send WhatsApp catalog messages in bulk through Kaleyra's API.",
    )
    parser.add_argument("--version", action="version", version=f"bulk-sender {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("send", help="send (or resume) a campaign file")
    s.add_argument("campaign", type=Path, help="the campaign file (.csv, or .xlsx)")
    s.add_argument(
        "--config", type=Path, default=Path("config.toml"), help="default: ./config.toml"
    )
    s.add_argument("--out", type=Path, help="results file (default: CAMPAIGN.results.csv)")
    s.add_argument("--failed", type=Path, help="failed-row export (default: RESULTS.failed.csv)")
    s.add_argument("--sandbox", action="store_true", help="send to an embedded Kaleyra sandbox")
    s.add_argument("--base-url", help="send to this base URL instead of the pod's")
    s.add_argument("--rate", type=float, help="messages per second (overrides the config)")
    s.add_argument("--concurrency", type=int, help="requests in flight (overrides the config)")
    s.add_argument("--dry-run", action="store_true", help="check the file; send nothing")
    s.add_argument("--restart", action="store_true", help="start afresh; the old journal is kept")
    s.add_argument("--resend-unknown", action="store_true", help="send 'unknown' rows again")
    s.add_argument(
        "--failed-include-unknown", action="store_true", help="put 'unknown' rows in the export"
    )
    s.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")
    s.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    s.add_argument("--log-format", choices=("text", "json"), default="text")

    b = commands.add_parser("sandbox", help="run the Kaleyra-compatible sandbox server")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--port", type=int, default=8080)
    b.add_argument(
        "--config", type=Path, default=Path("config.toml"), help="sid and sender from here"
    )
    b.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    b.add_argument("--balance", type=int, help="messages accepted before E110 (low balance)")
    b.add_argument("--daily-limit", type=int, help="messages accepted before WAV2101")
    b.add_argument("--max-rate", type=float, help="answer 429 above this many requests/s")
    b.add_argument("--callback-url", help="post status callbacks of accepted messages here")
    b.add_argument(
        "--callback-secret",
        help="the receiver's secret (default: $BULK_SENDER_CALLBACK_SECRET)",
    )
    b.add_argument(
        "--callback-mix",
        default="",
        help="outcome weights, e.g. read=50,delivered=30,131047=10,not_sent=5,duplicate=0.1",
    )
    b.add_argument(
        "--callback-delay", type=float, default=2.0, help="mean seconds between statuses"
    )
    delivery_commands.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sandbox":
            return _sandbox(args)
        if args.command in delivery_commands.COMMANDS:
            return delivery_commands.run(args)
        invoked = [_program(), *sys.argv[1:]] if argv is None else ["bulk-sender", *argv]
        return _send(args, invoked)
    except UsageError as exc:
        print(f"bulk-sender: {exc}", file=sys.stderr)
        _error_summary(args, EXIT_USAGE, str(exc))
        return EXIT_USAGE
    except JournalError as exc:
        print(f"bulk-sender: {exc}", file=sys.stderr)
        _error_summary(args, EXIT_STOPPED, str(exc))
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print("bulk-sender: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as exc:  # a bug: keep its traceback for the report, exit distinctly
        traceback.print_exc()
        message = (
            f"internal error ({type(exc).__name__}; a bug, the traceback is above). The journal "
            "is consistent: rows that were in flight are unknown; run the same command to resume"
        )
        print(f"bulk-sender: {message}", file=sys.stderr)
        _error_summary(args, EXIT_INTERNAL, message)
        return EXIT_INTERNAL


def _program() -> str:
    """How this program was invoked, so printed commands can be pasted as they are."""
    name = Path(sys.argv[0])
    return "python -m bulk_sender" if name.name == "__main__.py" else str(name)


def _error_summary(args: argparse.Namespace, code: int, message: str) -> None:
    """A run that could not start still replaces --summary-json, so no stale success remains."""
    path = getattr(args, "summary_json", None)
    if path is not None:
        from bulk_sender.ui import write_summary_json

        doc = {"version": 1, "outcome": "error", "exit_code": code, "error": message}
        write_summary_json(path, doc)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, Any]] = {
        "kaleyra": {"base_url": args.base_url},
        "sending": {"rate_per_second": args.rate, "concurrency": args.concurrency},
    }
    return load_settings(args.config, overrides=overrides)


def _send(args: argparse.Namespace, command: list[str]) -> int:
    from bulk_sender import ui

    ui.setup_logging(verbosity=args.verbose, json_format=args.log_format == "json")
    settings = _settings(args)
    if args.dry_run:
        result = dry_run(settings, args.campaign, args.out)
    else:
        results = args.out or default_results_path(args.campaign)
        options = RunOptions(
            campaign=args.campaign,
            results=results,
            failed=args.failed,
            sandbox=args.sandbox,
            restart=args.restart,
            resend_unknown=args.resend_unknown,
            failed_include_unknown=args.failed_include_unknown,
        )
        interactive = (
            not args.quiet
            and args.log_format == "text"
            and sys.stdout.isatty()
            and sys.stderr.isatty()
        )
        result = send(settings, options, display=ui.Progress(interactive=interactive))
    code = exit_code(result)
    doc = ui.summary_dict(result, exit_code=code, command=command)
    if args.summary_json is not None:
        ui.write_summary_json(args.summary_json, doc)
    _print_quietly(ui.summary_text(doc, stop_line(result, settings)))
    return code


def _print_quietly(text: str) -> None:
    """Print the summary; a reader that went away (``| head``) does not change the outcome."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def exit_code(result: RunResult) -> int:
    """The exit code a run's result calls for (see the module docstring)."""
    statuses = result.totals.statuses
    if result.dry_run:
        return EXIT_SOME_NOT_SENT if statuses.get(Status.INVALID, 0) else EXIT_OK
    stop = result.stop
    if stop is not None and stop.kind == "signal":
        return 128 + signal.Signals[stop.code].value
    if stop is not None:
        return EXIT_STOPPED
    unsent = sum(n for status, n in statuses.items() if status in UNSENT)
    return EXIT_SOME_NOT_SENT if unsent else EXIT_OK


_ACCOUNT_ADVICE = {
    "E110": ("the balance is low", "Top up"),
    "WAV2101": ("the account's daily limit is used up", "Wait for the limit to reset"),
    "RBC001": (
        "the SID or API key is wrong",
        "Check [kaleyra] sid and the key in the environment variable [kaleyra] api_key_env",
    ),
    "WA401": (
        "the sender number is not on this account",
        "Check [kaleyra] sender against the numbers of your Kaleyra account",
    ),
    "WA-401": ("the API is not available for this account or number", "Contact Kaleyra support"),
}


def stop_line(result: RunResult, settings: Settings) -> str | None:
    """One sentence: what stopped the run and what to do next."""
    stop: StopReason | None = result.stop
    if stop is None:
        return None
    remaining = result.totals.statuses.get(Status.NOT_SENT, 0)
    again = f"run the same command again to send the remaining {remaining:,} rows."
    if stop.kind == "account":
        what, todo = _ACCOUNT_ADVICE.get(
            stop.code, (stop.message or "the account cannot send", "Fix it")
        )
        detail = f" ({stop.message})" if stop.code == "WA-401" and stop.message else ""
        return f"Kaleyra says {what} ({stop.code}){detail}. {todo}, then {again}"
    if stop.kind == "threshold":
        return (
            f"Stopped after {settings.sending.error_threshold} failed rows in a row (last: "
            f"{stop.code} {stop.message}). Look at the failures in {result.options.results}, fix "
            f"the cause, then {again}"
        )
    if stop.kind == "journal":
        return f"Stopped: {stop.message}"
    return f"Stopped by {stop.code}. To continue, {again}"


def _sandbox(args: argparse.Namespace) -> int:
    from bulk_sender.sandbox.server import Account, Faults, run_forever

    settings = load_settings(args.config)
    key = os.environ.get(settings.kaleyra.api_key_env) or "sandbox-key"
    account = Account(
        sid=settings.kaleyra.sid, api_key=key, senders=frozenset({settings.kaleyra.sender})
    )
    faults = Faults(
        latency=args.latency,
        balance=args.balance,
        daily_limit=args.daily_limit,
        max_rate=args.max_rate,
    )
    if key == "sandbox-key":
        print(f"accepting api-key 'sandbox-key': export {settings.kaleyra.api_key_env}=sandbox-key")
    callbacks = _callback_emitter(args)
    run_forever(host=args.host, port=args.port, account=account, faults=faults, callbacks=callbacks)
    return EXIT_OK


def _callback_emitter(args: argparse.Namespace) -> Any:
    """The sandbox's callback emitter for --callback-url, or None."""
    if not args.callback_url:
        return None
    from bulk_sender.config import DEFAULT_CALLBACK_SECRET_ENV
    from bulk_sender.sandbox.callbacks import CallbackEmitter, parse_mix

    secret = args.callback_secret or os.environ.get(DEFAULT_CALLBACK_SECRET_ENV, "")
    if not secret:
        raise UsageError(
            f"--callback-url needs the receiver's secret: pass --callback-secret or export "
            f"{DEFAULT_CALLBACK_SECRET_ENV}"
        )
    try:
        mix = parse_mix(args.callback_mix, delay=args.callback_delay)
    except ValueError as exc:
        raise UsageError(f"--callback-mix: {exc}") from None
    return CallbackEmitter(url=args.callback_url, secret=secret, mix=mix)
