"""The benchmark's inputs: recipients, campaign CSV files and config files.

:func:`recipients` is the single source of the benchmark's recipients, so the campaign file that
``bulk-sender`` reads and the in-process list that ``bare_loop.py`` builds hold the same people.
Numbers are distinct, valid Indian mobiles (``+9198`` and eight digits, scattered rather than
sequential), each with a first name for the body text's ``{first_name}`` and two refs.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "API_KEY",
    "BODY_TEXT",
    "HEADER",
    "KEY_ENV",
    "RETAILER_ID",
    "SENDER",
    "SID",
    "Recipient",
    "messages_url",
    "recipients",
    "write_campaign",
    "write_config",
]

KEY_ENV = "BULK_SENDER_BENCH_KEY"
API_KEY = "bench-key-0123456789"
SID = "HXAP16BENCH0001IN"
SENDER = "+919000000001"
BODY_TEXT = "Hi {first_name}, thanks for your interest! Explore our Diwali catalog for this season."
RETAILER_ID = "2lxxxxxxpt"
HEADER = ("to", "first_name", "ref", "ref1")

_NAMES = ("Asha", "Ravi", "Priya", "Arjun", "Meera", "Vikram", "Lakshmi", "Kabir", "Anita", "Dev")
_SPREAD = 7919  # coprime with 10**8, so i -> i * _SPREAD mod 10**8 never repeats a number


class Recipient(NamedTuple):
    """One campaign row."""

    to: str
    first_name: str
    ref: str
    ref1: str


def recipients(count: int) -> Iterator[Recipient]:
    """``count`` distinct recipients, the same ones on every call."""
    if not 0 <= count <= 10**8:
        raise ValueError("count must be between 0 and 100,000,000")
    for i in range(count):
        subscriber = (i * _SPREAD + 12_345) % 10**8
        yield Recipient(
            f"+9198{subscriber:08d}", _NAMES[i % len(_NAMES)], f"cust-{i:07d}", "diwali-2025"
        )


def write_campaign(path: Path, count: int) -> Path:
    """Write a ``count``-row campaign CSV at ``path`` (kept if it already has that many rows)."""
    marker = path.with_name(path.name + ".rows")
    if path.exists() and marker.exists() and marker.read_text() == str(count):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(recipients(count))
    marker.write_text(str(count))
    return path


def messages_url(base_url: str) -> str:
    """The endpoint ``bulk-sender`` posts to for the bench account (see its config module)."""
    return f"{base_url.rstrip('/')}/v2/{SID}/whatsapp/{SENDER.lstrip('+')}/messages"


def write_config(path: Path, base_url: str, *, ledger: Path | None = None) -> Path:
    """A config.toml for the bench account; the rate comes from the command line.

    It sets no ``concurrency``: a run without ``--concurrency`` has the default ceiling and
    sizes its requests in flight from the latency, as a user's would. The audience ledger is
    off unless ``ledger`` is given: every section sends the same recipients the same message
    again and again, which its repeat guard would hold back.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[kaleyra]\n"
        'pod = "in"\n'
        f'base_url = "{base_url}"\n'
        f'sid = "{SID}"\n'
        f'sender = "{SENDER}"\n'
        f'api_key_env = "{KEY_ENV}"\n'
        "\n[campaign]\n"
        f'body_text = "{BODY_TEXT}"\n'
        f'thumbnail_product_retailer_id = "{RETAILER_ID}"\n'
        'wa_source = "api"\n'
        'default_region = "IN"\n'
        "\n[sending]\n"
        "rate_per_second = 50\n"
        "max_attempts = 3\n"
        "timeout_seconds = 30\n"
        "\n[audience]\n"
        f'ledger = "{ledger or ""}"\n',
        encoding="utf-8",
    )
    return path
