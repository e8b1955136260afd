"""Helpers the delivery tests share: a journal to merge against, stores by backend, payloads."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson

from bulk_sender.config import Secret
from bulk_sender.delivery.receiver import serve
from bulk_sender.model import Record
from bulk_sender.record.journal import SANDBOX, Journal
from bulk_sender.stores.base import CallbackStore, open_callback_store
from bulk_sender.stores.locations import is_postgres
from tests.postgres import execute

SECRET = "cb-secret-5e6f7a8b"

StoreFactory = Callable[[], Awaitable[CallbackStore]]


def sqlite_store(tmp_path: Path) -> str:
    """The location of an SQLite callback store in ``tmp_path`` (for SQLite-only tests)."""
    return str(tmp_path / "callbacks.db")


def store_factory(location: str) -> StoreFactory:
    """An opener of the store at ``location`` (the same one every call)."""

    async def opener() -> CallbackStore:
        return await open_callback_store(location)

    return opener


def count_events(location: str) -> int:
    """How many distinct status events the store at ``location`` holds."""
    return int(query(location, "SELECT COUNT(*) FROM status_events")[0][0])


def query(location: str, statement: str) -> list[tuple[Any, ...]]:
    """The rows of one query on the store at ``location`` (SQLite or PostgreSQL)."""
    if is_postgres(location):
        return [tuple(row) for row in asyncio.run(execute(location, statement))]
    with closing(sqlite3.connect(location)) as db:
        return db.execute(statement).fetchall()


def write_journal(path: Path, records: Sequence[Record], *, created_at: str = "") -> Path:
    """A campaign journal holding ``records`` (created now, or at ``created_at``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = Journal.open(path, identity={"file_sha256": "x"}, destination=SANDBOX)
    if created_at:
        journal.set_meta("created_at", created_at)

    async def write() -> None:
        journal.start_writer()
        for record in records:
            journal.write_later(record)
        await journal.flush()
        journal.stop_writer()

    asyncio.run(write())
    journal.close()
    return path


def sent(row: int, message_id: str, to: str = "+919876543210", **fields: Any) -> Record:
    """A message Kaleyra accepted."""
    return Record(
        row=row, to=to, status="sent", message_id=message_id, http_status=202, code="WA202",
        attempts=1, finished_at="2026-11-24T10:00:00.000Z", **fields,
    )  # fmt: skip


def v2_status(
    status: str,
    *,
    ids: tuple[str, str, str] = ("wamid.X", "wamid.X", "A1"),
    timestamp: int = 1_764_000_000,
    recipient: str = "919876543210",
    code: int | None = None,
    refs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A status callback in Kaleyra's v2 shape: ids are (statuses[].id, message_id, extra_info)."""
    entry: dict[str, Any] = {"id": ids[0], "status": status, "timestamp": str(timestamp),
                             "recipient_id": recipient}  # fmt: skip
    if code is not None:
        entry["errors"] = [{"code": code, "title": f"error {code}", "message": f"error {code}",
                            "error_data": {"details": "details"}}]  # fmt: skip
    return {
        "meta_object": {"value": {"messaging_product": "whatsapp", "statuses": [entry]}},
        "extra_info": {"message_id": ids[2], **(refs or {})},
        "status": status.lower(),
        "message_id": ids[1],
    }


class ThreadedReceiver:
    """The callback receiver serving ``store`` in a thread of its own, for sync tests.

    ``with ThreadedReceiver(opener) as url:`` returns once it listens; leaving stops it (in-flight
    requests finish) and closes the store.
    """

    def __init__(self, opener: StoreFactory, secret: str = SECRET) -> None:
        self._opener = opener
        self._secret = secret
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.url = ""
        self.error: BaseException | None = None
        self.wrap: Callable[[CallbackStore], CallbackStore] = lambda store: store

    def __enter__(self) -> str:
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30) or not self.url:
            raise RuntimeError("the receiver did not start") from self.error
        return self.url

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        store = self.wrap(await self._opener())

        def ready(url: str) -> None:
            self.url = url
            self._ready.set()

        await serve(
            store, Secret(self._secret), host="127.0.0.1", port=0, ready=ready, stop=self._stop
        )


def post(
    url: str,
    body: bytes | dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, Any]]:
    """Send one request; (status, decoded JSON answer)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    sent_headers = {"Content-Type": "application/json", "X-Callback-Secret": SECRET}
    sent_headers.update(headers or {})
    request = urllib.request.Request(
        url, data=data if method == "POST" else None, headers=sent_headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, orjson.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read() or b"{}")
