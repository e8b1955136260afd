"""The naive callback receiver the benchmark compares against: what one would write first.

An ``aiohttp.web`` handler that checks the secret, parses the JSON, and commits each callback
to SQLite on its own (WAL, ``synchronous=FULL``: the same durability as bulk-sender's store)
before answering 200. ``python bench/naive_receiver.py --store PATH --secret S`` prints
``PORT <n>`` once it listens and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from aiohttp import web


def app(db: sqlite3.Connection, secret: str) -> web.Application:
    """One route: POST /kaleyra/status."""

    async def status(request: web.Request) -> web.Response:
        if request.headers.get("X-Callback-Secret") != secret:
            return web.Response(status=401)
        body = await request.read()
        try:
            doc = orjson.loads(body)
            entry = doc["meta_object"]["value"]["statuses"][0]
            row = (entry["id"], doc["extra_info"]["message_id"], entry["status"], body)
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            return web.Response(status=400)
        db.execute("INSERT INTO callbacks VALUES (?, ?, ?, ?)", row)
        db.commit()
        return web.Response(status=200, text="{}", content_type="application/json")

    application = web.Application(client_max_size=1 << 20)
    application.router.add_post("/kaleyra/status", status)
    return application


async def serve(store: Path, secret: str) -> None:
    """Serve until SIGTERM."""
    db = sqlite3.connect(store)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS callbacks (id TEXT, message_id TEXT, status TEXT, body BLOB)"
    )
    db.commit()
    runner = web.AppRunner(app(db, secret), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    db.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and serve (on uvloop, as bulk-sender's receiver runs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.store, args.secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
