"""The command line: parse, build settings, run, print the summary, return the exit code.

A thin layer over the Python API (:mod:`bulk_sender.api`): the flags become a
:class:`~bulk_sender.api.Call`, run with the CLI's own signal handling and progress display.
The codes are :class:`~bulk_sender.errors.ExitCode` (also in the docs). A run that ends in an
error exits with the code its class carries in errors.py, through the one handler in
:func:`main`; a run that finishes exits with what :func:`~bulk_sender.api.exit_code` reads
from its result:

===  ==========================================================================================
0    every message was sent (or deliberately skipped as a duplicate); dry run: all rows valid
1    the run finished but some messages were not sent (failed, invalid, unknown); dry run: some
     rows are invalid
2    usage, config or campaign-file error, an output path that cannot be used: nothing was sent
3    the run stopped early (account-level error, error threshold, journal not readable or
     writable, results not writable, planner killed); run the same command again to resume
70   a bug (the traceback is printed); the journal is consistent, the same command resumes
75   another run holds the lock (busy): nothing was sent; run the same command again later
129  stopped by SIGHUP; 130: by SIGINT (Ctrl-C); 143: by SIGTERM. All resumable.
===  ==========================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from bulk_sender import __version__
from bulk_sender.api import Call, execute_dry_run, execute_send
from bulk_sender.audience import commands as optout_commands
from bulk_sender.config import Settings, load_settings
from bulk_sender.delivery import commands as delivery_commands
from bulk_sender.errors import ExitCode, OutputPathError, OutputWriteError, exit_code_of
from bulk_sender.printable import printable
from bulk_sender.record.paths import Output, check_outputs, send_outputs
from bulk_sender.record.summary import error_summary, write_summary_json
from bulk_sender.runner import default_failed_path, default_results_path, run_loop
from bulk_sender.stores import commands as db_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``bulk-sender`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="bulk-sender",
        description="Send WhatsApp catalog messages in bulk through Kaleyra's API.",
    )
    parser.add_argument("--version", action="version", version=f"bulk-sender {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("send", help="send (or resume) a campaign file")
    s.add_argument(
        "campaign",
        type=Path,
        help="the campaign file (.csv, .xlsx, .xls, .ods, or .parquet with pyarrow)",
    )
    s.add_argument(
        "--config", type=Path, default=Path("config.toml"), help="default: ./config.toml"
    )
    s.add_argument(
        "--out",
        type=Path,
        help="results file (default: CAMPAIGN.results.csv, or CAMPAIGN.sandbox.results.csv)",
    )
    s.add_argument(
        "--failed",
        type=Path,
        help="failed-row export (default: RESULTS.failed.csv, with the campaign's own extension)",
    )
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
    s.add_argument(
        "--wait-lock",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for a run that holds the lock and is stopping (default: 60)",
    )
    s.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    s.add_argument("--log-format", choices=("text", "json"), default="text")

    _add_sandbox(commands)
    delivery_commands.add_parsers(commands)
    optout_commands.add_parser(commands)
    db_commands.add_parser(commands)
    return parser


def _add_sandbox(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``sandbox`` command's arguments."""
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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sandbox":
            return _sandbox(args)
        if args.command == "optout":
            return optout_commands.run(args)
        if args.command == "db":
            return db_commands.run(args)
        if args.command in delivery_commands.COMMANDS:
            from bulk_sender import ui

            json_format = getattr(args, "log_format", "text") == "json"
            ui.setup_logging(verbosity=getattr(args, "verbose", 0), json_format=json_format)
            return delivery_commands.run(args)
        invoked = [*_program(), *sys.argv[1:]] if argv is None else ["bulk-sender", *argv]
        return _send(args, invoked)
    except KeyboardInterrupt:
        print("bulk-sender: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as exc:  # every error ends here, with the exit code errors.py gives it
        return _failed(args, exc)


def _failed(args: argparse.Namespace, exc: Exception) -> int:
    """Report an error in one line (a bug: with its traceback) and return its exit code."""
    code = exit_code_of(exc)
    message = str(exc)
    if code is ExitCode.INTERNAL:
        traceback.print_exc()
        message = (
            f"internal error ({type(exc).__name__}; a bug, the traceback is above). The journal "
            "is consistent: rows that were in flight are unknown; run the same command to resume"
        )
    print(f"bulk-sender: {printable(message)}", file=sys.stderr)
    if not (isinstance(exc, OutputPathError) and "--summary-json" in exc.options):
        _error_summary(args, code, message)
    return code


def _program() -> list[str]:
    """How this program was invoked, word by word, so printed commands can be pasted as they
    are (``python -m bulk_sender`` is three words, never one quoted string)."""
    name = Path(sys.argv[0])
    return ["python", "-m", "bulk_sender"] if name.name == "__main__.py" else [str(name)]


def _error_summary(args: argparse.Namespace, code: int, message: str) -> None:
    """A run that could not start still replaces --summary-json, so no stale success remains."""
    path = getattr(args, "summary_json", None)
    if path is not None:
        # The line printed says what went wrong; a summary that cannot be written is removed.
        with contextlib.suppress(OutputWriteError):
            write_summary_json(path, error_summary(code, message))


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, Any]] = {
        "kaleyra": {"base_url": args.base_url},
        "sending": {"rate_per_second": args.rate, "concurrency": args.concurrency},
    }
    return load_settings(args.config, overrides=overrides)


def _send(args: argparse.Namespace, command: list[str]) -> int:
    from bulk_sender import ui

    _check_summary_path(args)
    ui.setup_logging(verbosity=args.verbose, json_format=args.log_format == "json")
    call = _call(args, _settings(args))
    if args.dry_run:
        run = execute_dry_run(call, command=command)
    else:
        display = ui.Progress(interactive=_interactive(args))
        run = run_loop(execute_send(call, command=command, display=display, signals=True))
    _print_quietly(run.report)
    return run.exit_code


def _check_summary_path(args: argparse.Namespace) -> None:
    """Check --summary-json first, against every file the run may write (the runner checks
    those), so that even a run that cannot start writes its error summary only where safe."""
    if args.summary_json is None:
        return
    if args.dry_run:
        written = [] if args.out is None else [Output("--out", args.out)]
    else:
        results = args.out or default_results_path(args.campaign, sandbox=args.sandbox)
        # The default export's extension depends on the campaign's contents: every one it may be.
        suffixes = dict.fromkeys((args.campaign.suffix or ".csv", ".csv", ".xlsx"))
        defaults = [default_failed_path(results, suffix) for suffix in suffixes]
        written = send_outputs(results, *([args.failed] if args.failed else defaults))
    check_outputs(args.campaign, [Output("--summary-json", args.summary_json)], others=written)


def _call(args: argparse.Namespace, settings: Settings) -> Call:
    return Call(
        settings=settings,
        campaign=args.campaign,
        results=args.out,
        failed=args.failed,
        summary_json=args.summary_json,
        sandbox=args.sandbox,
        restart=args.restart,
        resend_unknown=args.resend_unknown,
        failed_include_unknown=args.failed_include_unknown,
        wait_lock=args.wait_lock,
    )


def seconds(text: str) -> float:
    """A number of seconds, 0 or more (argparse reports a ValueError as a usage error)."""
    value = float(text)
    if not value >= 0:
        raise ValueError(text)
    return value


def _interactive(args: argparse.Namespace) -> bool:
    """A live progress bar only when a person is watching both streams."""
    return (
        not args.quiet and args.log_format == "text" and sys.stdout.isatty() and sys.stderr.isatty()
    )


def _print_quietly(text: str) -> None:
    """Print the summary; a reader that went away (``| head``) does not change the outcome."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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
    return ExitCode.OK


def _callback_emitter(args: argparse.Namespace) -> Any:
    """The sandbox's callback emitter for --callback-url, or None."""
    if not args.callback_url:
        return None
    from bulk_sender.config import DEFAULT_CALLBACK_SECRET_ENV
    from bulk_sender.errors import UsageError
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
