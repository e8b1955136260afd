"""The peer a user would write instead of bulk-sender: one session, N workers, orjson, no files.

It sends the same requests as ``bulk-sender send`` (the body is built field for field like
``bulk_sender/sending/payload.py``; ``bench/run.py`` checks the bytes are equal) to the same server,
reading the recipients from a list made in-process: no CSV, no validation, no journal, no
results file, no rate limit. It runs on uvloop when that is importable, as bulk-sender does,
and prints one JSON line: ``{"sent": n, "failed": n, "seconds": s}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
from workload import BODY_TEXT, KEY_ENV, RETAILER_ID, Recipient, recipients

__all__ = ["body", "main", "send_all"]


def body(recipient: Recipient) -> bytes:
    """The catalog-message request body for one recipient."""
    return orjson.dumps(
        {
            "messaging_object": {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": recipient.to,
                "type": "interactive",
                "interactive": {
                    "type": "catalog_message",
                    "body": {"text": BODY_TEXT.format(first_name=recipient.first_name)},
                    "action": {
                        "name": "catalog_message",
                        "parameters": {"thumbnail_product_retailer_id": RETAILER_ID},
                    },
                },
            },
            "extra_info": {"ref": recipient.ref, "ref1": recipient.ref1, "wa_source": "api"},
        }
    )


async def send_all(*, url: str, api_key: str, count: int, concurrency: int) -> dict[str, Any]:
    """POST one message per recipient with ``concurrency`` workers; count the outcomes."""
    people = list(recipients(count))
    todo: Iterator[Recipient] = iter(people)
    headers = {"Content-Type": "application/json", "api-key": api_key}
    outcome = {"sent": 0, "failed": 0}

    async def worker(session: aiohttp.ClientSession) -> None:
        for recipient in todo:
            async with session.post(url, data=body(recipient), headers=headers) as response:
                answer = orjson.loads(await response.read())
            sent = response.status == 202 and bool(answer.get("data", {}).get("message_id"))
            outcome["sent" if sent else "failed"] += 1

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {**outcome, "seconds": round(time.monotonic() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, send, print the outcome; exit 1 if any message was not accepted."""
    parser = argparse.ArgumentParser(description="Send N catalog messages the simplest way.")
    parser.add_argument("--url", required=True, help="the messages endpoint")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    coro = send_all(
        url=args.url,
        api_key=os.environ.get(KEY_ENV, "bench-key"),
        count=args.count,
        concurrency=args.concurrency,
    )
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(orjson.dumps(result).decode(), flush=True)
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
