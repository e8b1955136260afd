"""The callback receiver over real HTTP: auth, limits, bad bodies, durability, retries, signals."""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from bulk_sender.delivery.events import Callback
from bulk_sender.errors import StoreError
from bulk_sender.stores.base import CallbackStore
from tests.conftest import CliRunner, write_config
from tests.delivery_helpers import (
    SECRET,
    ThreadedReceiver,
    count_events,
    post,
    sqlite_store,
    store_factory,
    v2_status,
)

STATUS = "/kaleyra/status"


@pytest.fixture
def receiver(backend: str) -> Iterator[str]:
    """A receiver on 127.0.0.1 with a fresh store (on each backend); its base URL."""
    with ThreadedReceiver(store_factory(backend)) as url:
        yield url


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Callback-Secret": ""},
        {"X-Callback-Secret": "wrong"},
        {"X-Callback-Secret": "x" + SECRET},
        {"X-Callback-Secret": "", "Authorization": _basic("kaleyra", "wrong")},
        {"X-Callback-Secret": "", "Authorization": "Basic !!not-base64!!"},
        {
            "X-Callback-Secret": "",
            "Authorization": "Basic " + base64.b64encode(SECRET.encode()).decode(),
        },
        {"X-Callback-Secret": "", "Authorization": f"Bearer {SECRET}"},
        {"X-Callback-Secret": "", "api-key": SECRET},
    ],
    ids=[
        "empty",
        "wrong",
        "prefixed",
        "basic-wrong",
        "basic-garbage",
        "basic-no-colon",
        "bearer",
        "other-header",
    ],
)
def test_every_auth_failure_is_401_and_stores_nothing(
    receiver: str, backend: str, tmp_path: Path, headers: dict[str, str]
) -> None:
    """Without the exact secret in the header or as the Basic password: 401, nothing stored."""
    if headers.get("X-Callback-Secret") == "":
        headers = {**headers}
        del headers["X-Callback-Secret"]
        status, answer = _post_without_secret(receiver + STATUS, headers)
    else:
        status, answer = post(receiver + STATUS, v2_status("READ"), headers=headers)
    assert status == 401
    assert "secret" in str(answer["error"])
    assert count_events(backend) == 0


def _post_without_secret(url: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    connection.request("POST", parts.path, body=orjson.dumps(v2_status("READ")), headers=headers)
    answer = connection.getresponse()
    return answer.status, orjson.loads(answer.read())


def test_basic_auth_with_any_user_name_is_accepted(
    receiver: str, backend: str, tmp_path: Path
) -> None:
    """The secret as the Basic auth password is enough, whatever the user name."""
    parts = urlsplit(receiver)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    headers = {"Authorization": _basic("anyone at all", SECRET), "Content-Type": "application/json"}
    connection.request("POST", STATUS, body=orjson.dumps(v2_status("READ")), headers=headers)
    assert connection.getresponse().status == 200
    assert count_events(backend) == 1


def test_healthz_needs_no_secret(receiver: str) -> None:
    """GET /healthz answers 200 while the store commits, without the secret."""
    parts = urlsplit(receiver)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    connection.request("GET", "/healthz")
    answer = connection.getresponse()
    assert (answer.status, orjson.loads(answer.read())) == (200, {"health": "ok"})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "must be a JSON object"),
        (orjson.dumps({"meta_object": {"value": {"statuses": "x"}}}), "must be a list"),
        (orjson.dumps(v2_status("EXPLODED")), "is not a status"),
        (orjson.dumps({"unrelated": True}), "No status"),
    ],
)
def test_malformed_bodies_are_400_with_a_reason_and_store_nothing(
    receiver: str, backend: str, tmp_path: Path, body: bytes, reason: str
) -> None:
    """Bad JSON, wrong types or an unknown shape: 400 with a short reason; nothing stored."""
    status, answer = post(receiver + STATUS, body)
    assert status == 400
    assert reason in answer["error"]
    assert count_events(backend) == 0


def test_an_oversize_body_is_413_declared_or_chunked(
    receiver: str, backend: str, tmp_path: Path
) -> None:
    """Over 1 MiB: 413, whether Content-Length says so or a chunked body grows too long."""
    big = b'{"pad": "' + b"x" * (1 << 20) + b'"}'
    assert post(receiver + STATUS, big)[0] == 413
    parts = urlsplit(receiver)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    headers = {"X-Callback-Secret": SECRET, "Content-Type": "application/json"}
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    connection.request("POST", STATUS, body=chunks, headers=headers, encode_chunked=True)
    assert connection.getresponse().status == 413
    assert count_events(backend) == 0


def test_out_of_order_and_repeated_callbacks_store_each_event_once(
    receiver: str, backend: str, tmp_path: Path
) -> None:
    """read, sent, read again, delivered: every answer 200, three events stored."""
    for name, at in [("READ", 30), ("SENT", 10), ("READ", 30), ("DELIVERED", 20)]:
        assert post(receiver + STATUS, v2_status(name, timestamp=1_764_000_000 + at))[0] == 200
    assert count_events(backend) == 3


def test_flat_callbacks_by_get_and_form(receiver: str, backend: str, tmp_path: Path) -> None:
    """A dynamic-variables profile's GET query and form body are stored like JSON."""
    query = "?status=DELIVERED&message_id=A1&mobile=919876543210&timestamp=1764000000"
    assert post(receiver + STATUS + query, b"", method="GET")[0] == 200
    form = b"status=read&message_id=A1&mobile=919876543210&timestamp=1764000001"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert post(receiver + STATUS, form, headers=headers)[0] == 200
    assert count_events(backend) == 2


def test_incoming_messages_are_stored(receiver: str, tmp_path: Path) -> None:
    """POST /kaleyra/incoming stores the sender, time and text (here a STOP)."""
    doc = {"meta_object": {"value": {"messages": [{"from": "919876543210", "id": "wamid.IN",
           "timestamp": "1764000000", "type": "text", "text": {"body": "STOP"}}]}}}  # fmt: skip
    assert post(receiver + "/kaleyra/incoming", doc) == (200, {"stored": 1})


class _Flaky:
    """A store that refuses writes while ``broken`` is set, like a full disk."""

    def __init__(self, store: CallbackStore) -> None:
        self.store = store
        self.broken = threading.Event()

    async def save(self, callback: Callback) -> None:
        if self.broken.is_set():
            raise StoreError("disk full")
        await self.store.save(callback)

    async def check_writable(self) -> None:
        if self.broken.is_set():
            raise StoreError("disk full")
        await self.store.check_writable()

    async def export_deliveries(
        self, *, journal: Path, since: str, into: Path, rows: tuple[int, int] | None = None
    ) -> None:
        await self.store.export_deliveries(journal=journal, since=since, into=into, rows=rows)

    async def close(self) -> None:
        await self.store.close()


def test_a_store_that_cannot_commit_gives_503_so_kaleyra_retries(
    backend: str, tmp_path: Path
) -> None:
    """While the store refuses writes: 503 (and /healthz 503); once it recovers, 200."""
    flaky: list[_Flaky] = []

    def wrap(store: CallbackStore) -> CallbackStore:
        flaky.append(_Flaky(store))
        return flaky[0]

    server = ThreadedReceiver(store_factory(backend))
    server.wrap = wrap
    with server as url:
        flaky[0].broken.set()
        status, answer = post(url + STATUS, v2_status("READ"))
        assert (status, "again later" in answer["error"]) == (503, True)
        assert post(url + "/healthz", b"", method="GET")[0] == 503
        flaky[0].broken.clear()
        assert post(url + STATUS, v2_status("READ"))[0] == 200
    assert count_events(backend) == 1


def test_a_failed_sqlite_commit_fails_its_batch_and_the_next_succeeds(tmp_path: Path) -> None:
    """The SQLite writer answers a failed commit with StoreError and keeps going."""
    from bulk_sender.delivery.parse import parse_status
    from bulk_sender.stores.sqlite import SqliteCallbackStore

    async def run() -> None:
        store = await SqliteCallbackStore.open(tmp_path / "callbacks.db")
        callback = parse_status(v2_status("READ"), received_at="2026-11-24T10:00:00.000Z")
        store._writer._db.execute("PRAGMA query_only=1")  # every write now fails
        with pytest.raises(StoreError, match="cannot write the callback store"):
            await store.save(callback)
        store._writer._db.execute("PRAGMA query_only=0")
        await store.save(callback)
        await store.close()

    asyncio.run(run())
    assert count_events(sqlite_store(tmp_path)) == 1


# --------------------------------------------------------------------------- the real process


def test_receive_refuses_to_start_without_a_secret(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No secret in the environment: exit 2 naming the variable, nothing listens."""
    monkeypatch.delenv("BULK_SENDER_CALLBACK_SECRET", raising=False)
    config = write_config(tmp_path / "config.toml", "", callbacks={"port": 0})
    run = cli("receive", "--config", config)
    assert run.code == 2
    assert "BULK_SENDER_CALLBACK_SECRET" in run.err


def _spawn_receiver(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """``bulk-sender receive`` as a process of its own; its base URL once it listens."""
    config = tmp_path / "config.toml"
    if not config.exists():
        write_config(config, "", callbacks={"port": 0, "store": "callbacks.db"})
    env = {**os.environ, "BULK_SENDER_CALLBACK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bulk_sender", "receive", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "Receiving Kaleyra callbacks on " in line, line + (
        process.stderr.read() if process.stderr else ""
    )
    return process, line.split(" on ", 1)[1].split()[0]


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_and_exits_0(tmp_path: Path) -> None:
    """A request half-sent when SIGTERM arrives is completed and stored; then exit 0."""
    process, url = _spawn_receiver(tmp_path)
    body = orjson.dumps(v2_status("DELIVERED"))
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    connection.putrequest("POST", STATUS)
    for name, value in (("X-Callback-Secret", SECRET), ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body)))):  # fmt: skip
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(body[:10])
    assert post(url + "/healthz", b"", method="GET")[0] == 200  # the half request is in
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    for line in process.stderr:
        if "bulk_sender.receiver_stopping" in line:
            break
    connection.send(body[10:])
    assert connection.getresponse().status == 200
    assert process.wait(timeout=60) == 0
    assert count_events(sqlite_store(tmp_path)) == 1


async def _flood(url: str, start: int, kill_after: int, process: subprocess.Popen[str]) -> set[int]:
    """Post distinct callbacks from 16 senders until the receiver dies; the ones answered 200."""
    acked: set[int] = set()
    numbers = iter(range(start, start + 1_000_000))
    dead = asyncio.Event()

    async def sender(session: aiohttp.ClientSession) -> None:
        while not dead.is_set():
            n = next(numbers)
            body = orjson.dumps(v2_status("DELIVERED", ids=(f"w{n}", f"w{n}", f"A{n}")))
            try:
                async with session.post(
                    url + STATUS, data=body, headers={"X-Callback-Secret": SECRET}
                ) as answer:
                    if answer.status == 200:
                        acked.add(n)
            except (aiohttp.ClientError, OSError):
                dead.set()
                return
            if len(acked) >= kill_after and process.poll() is None:
                process.kill()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(sender(session) for _ in range(16)))
    return acked


@pytest.mark.slow
def test_a_receiver_killed_while_callbacks_arrive_loses_nothing_it_acknowledged(
    tmp_path: Path,
) -> None:
    """SIGKILL mid-flood, twice: every callback answered 200 is in the store afterwards."""
    import sqlite3
    from contextlib import closing

    acked: set[int] = set()
    for round_ in range(2):
        process, url = _spawn_receiver(tmp_path)
        acked |= asyncio.run(_flood(url, round_ * 1_000_000, 300, process))
        assert process.wait(timeout=60) == -signal.SIGKILL
    with closing(sqlite3.connect(tmp_path / "callbacks.db")) as db:
        stored = {
            int(i[1:])
            for (i,) in db.execute("SELECT message_id FROM status_ids WHERE message_id LIKE 'A%'")
        }
    assert len(acked) >= 600
    assert acked <= stored
