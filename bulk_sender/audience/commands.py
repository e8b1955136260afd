"""``bulk-sender optout``: opt-outs by hand, in the ledger of the config's account.

::

    bulk-sender optout add NUMBER... [--note TEXT]   opt these numbers out, now
    bulk-sender optout remove NUMBER...              opt them back in, now
    bulk-sender optout list                          every opted-out number, as CSV on stdout
    bulk-sender optout import FILE                   opt out every number of FILE

Numbers are read like a campaign's (``[campaign] default_region`` for those without a country
code); one that cannot be read stops the command before anything changes (exit 2). ``list``
shows the ledger's opt-outs (with their date and what made them) and the opt-out files'
numbers. ``remove`` cannot take a number out of an opt-out file: it says so and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bulk_sender.audience.optout_files import OptOutList, read_opt_out_file
from bulk_sender.audience.rules import wall_clock_ms
from bulk_sender.config import AudienceSettings, Settings, load_settings
from bulk_sender.errors import ConfigError, ExitCode, UsageError
from bulk_sender.input.phone import normalise
from bulk_sender.stores.ledger import Ledger, OptChange, OptOutRow, open_ledger
from bulk_sender.stores.locations import shown

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Add ``optout`` and its subcommands to the CLI's subparsers."""
    parser = commands.add_parser("optout", help="add, remove, list or import opt-outs by hand")
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in (("add", "opt numbers out"), ("remove", "opt numbers back in")):
        action = actions.add_parser(name, help=text)
        action.add_argument("numbers", nargs="+", help="phone numbers, as in a campaign file")
        if name == "add":
            action.add_argument("--note", default="", help="why (kept with the opt-out)")
        _config_option(action)
    _config_option(actions.add_parser("list", help="every opted-out number, as CSV"))
    imported = actions.add_parser("import", help="opt out every number of a file")
    imported.add_argument("file", type=Path, help="a CSV or workbook with a phone column")
    _config_option(imported)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=Path("config.toml"), help="default: ./config.toml"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``optout ACTION``; return the exit code."""
    settings = load_settings(args.config)
    if args.action == "list":
        return asyncio.run(_list(settings))
    if not settings.audience.enabled:
        raise ConfigError(
            "[audience] ledger",
            "is empty, so there is no ledger to keep opt-outs in; set it (the default is "
            "ledger.db beside the config file), or list the numbers in an opt-out file",
        )
    if args.action == "import":
        numbers = read_opt_out_file(
            args.file, default_region=_region(settings), encoding=_encoding(settings)
        ).numbers
        keys = [int(n) for n in numbers]
        by = f"the import of {args.file.name}"
        return asyncio.run(_change(settings, keys, opted_out=True, by=by))
    keys = [_key(number, settings) for number in args.numbers]
    if args.action == "add":
        by = f"hand ({args.note})" if args.note.strip() else "hand"
        return asyncio.run(_change(settings, keys, opted_out=True, by=by))
    code = asyncio.run(_change(settings, keys, opted_out=False, by="hand"))
    return max(code, _still_in_files(settings, keys))


def _region(settings: Settings) -> str | None:
    return settings.campaign.default_region or None


def _encoding(settings: Settings) -> str | None:
    return settings.campaign.encoding or None


def _key(number: str, settings: Settings) -> int:
    verdict = normalise(number, _region(settings))
    if verdict.e164 is None:
        raise UsageError(f"{number!r} is not a phone number that can be read: {verdict.problem}")
    return int(verdict.e164[1:])


async def _change(settings: Settings, keys: list[int], *, opted_out: bool, by: str) -> int:
    ledger = await _open(settings.audience)
    try:
        now = wall_clock_ms()
        changed = await ledger.change_opt([OptChange(key, opted_out, now, by) for key in keys])
    finally:
        await ledger.close()
    verb = "opted out" if opted_out else "opted back in"
    where = shown(settings.audience.ledger_location())
    print(f"{changed:,} of {len(keys):,} numbers {verb} (ledger: {where})")
    return ExitCode.OK


async def _open(settings: AudienceSettings) -> Ledger:
    ledger = await open_ledger(settings.ledger_location())
    assert ledger is not None  # only a read-only open finds nothing
    return ledger


def _still_in_files(settings: Settings, keys: list[int]) -> int:
    """Exit 1 (and say where) if an opt-out file still lists one of ``keys``."""
    code = ExitCode.OK
    for listed in _files(settings):
        numbers = set(listed.numbers.tolist())
        for key in keys:
            if key in numbers:
                print(
                    f"bulk-sender: +{key} is still opted out by the opt-out file {listed.name}; "
                    "remove it there too",
                    file=sys.stderr,
                )
                code = ExitCode.SOME_NOT_SENT
    return code


def _files(settings: Settings) -> list[OptOutList]:
    return [
        read_opt_out_file(
            Path(name), default_region=_region(settings), encoding=_encoding(settings)
        )
        for name in settings.audience.opt_out_files
    ]


async def _list(settings: Settings) -> int:
    rows: list[OptOutRow] = []
    if settings.audience.enabled:
        ledger = await open_ledger(settings.audience.ledger_location(), read_only=True)
        if ledger is not None:
            try:
                rows = await ledger.opt_outs()
            finally:
                await ledger.close()
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["number", "opted_out_on", "by"])
    for row in rows:
        day = datetime.fromtimestamp(row.at / 1000, UTC).date().isoformat()
        out.writerow([f"+{row.recipient}", day, row.by])
    for listed in _files(settings):
        out.writerows([f"+{key}", "", f"the opt-out file {listed.name}"] for key in listed.numbers)
    return ExitCode.OK
