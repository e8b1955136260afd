"""The sandbox's callback emitter, on a fake clock, against a real receiver over HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bulk_sender.delivery.events import Callback, DeliveryStatus
from bulk_sender.delivery.precedence import BY_RANK
from bulk_sender.errors import StoreError
from bulk_sender.sandbox.callbacks import CallbackEmitter, CallbackMix, FakeClock, parse_mix
from bulk_sender.stores.base import CallbackStore
from bulk_sender.stores.sqlite_delivery import DeliveryRows
from tests.conftest import CliRunner, read_results, write_config, write_csv
from tests.delivery_helpers import (
    SECRET,
    ThreadedReceiver,
    count_events,
    sent,
    sqlite_store,
    store_factory,
    write_journal,
)

TO = "+919845000001"


def _emitter(url: str, clock: FakeClock, mix: CallbackMix) -> CallbackEmitter:
    return CallbackEmitter(url=url + "/kaleyra/status", secret=SECRET, mix=mix, clock=clock, seed=7)


def _state(tmp_path: Path) -> DeliveryStatus | None:
    """The delivery status the store gives message A1 (sent to TO)."""
    journal = write_journal(tmp_path / "r.csv.journal", [sent(1, "A1", to=TO)])

    async def export() -> None:
        store = await store_factory(sqlite_store(tmp_path))()
        await store.export_deliveries(
            journal=journal, since="2000-01-01T00:00:00.000Z", into=tmp_path / "d.db"
        )
        await store.close()

    asyncio.run(export())
    rows = list(DeliveryRows(tmp_path / "d.db").stream())
    return BY_RANK[rows[0].status_rank] if rows else None


def test_nothing_is_posted_before_its_time_then_sent_delivered_read(tmp_path: Path) -> None:
    """A 'read' message's three statuses wait for the clock, then arrive and merge to read."""
    clock = FakeClock()

    async def run(url: str) -> None:
        emitter = _emitter(url, clock, CallbackMix(outcomes={"read": 1}, duplicate=0, reorder=0))
        await emitter.start()
        emitter.accepted(message_id="A1", to=TO, refs=("", "", ""))
        await clock.until_sleeping(3)
        assert (emitter.planned, emitter.posted) == (3, 0)
        assert count_events(sqlite_store(tmp_path)) == 0
        clock.advance(3600)
        await emitter.wait_until(lambda e: e.posted == 3)
        await emitter.stop()

    with ThreadedReceiver(store_factory(sqlite_store(tmp_path))) as url:
        asyncio.run(run(url))
    assert count_events(sqlite_store(tmp_path)) == 3
    assert _state(tmp_path) is DeliveryStatus.READ


def test_reordered_and_repeated_callbacks_still_merge_to_the_last_status(tmp_path: Path) -> None:
    """Posted in reverse order and one of them twice: four posts, three events, status read."""
    clock = FakeClock()

    async def run(url: str) -> None:
        mix = CallbackMix(outcomes={"read": 1}, duplicate=1, reorder=1)
        emitter = _emitter(url, clock, mix)
        await emitter.start()
        emitter.accepted(message_id="A1", to=TO, refs=("", "", ""))
        await clock.until_sleeping(4)
        clock.advance(3600)
        await emitter.wait_until(lambda e: e.posted == 4)
        await emitter.stop()

    with ThreadedReceiver(store_factory(sqlite_store(tmp_path))) as url:
        asyncio.run(run(url))
    assert count_events(sqlite_store(tmp_path)) == 3
    assert _state(tmp_path) is DeliveryStatus.READ


class _RefuseFirst:
    """A store whose first save fails, so the receiver answers 503 once."""

    def __init__(self, store: CallbackStore) -> None:
        self.store = store
        self.refused = 0

    async def save(self, callback: Callback) -> None:
        if not self.refused:
            self.refused += 1
            raise StoreError("busy")
        await self.store.save(callback)

    async def check_writable(self) -> None:
        await self.store.check_writable()

    async def export_deliveries(
        self, *, journal: Path, since: str, into: Path, rows: tuple[int, int] | None = None
    ) -> None:
        await self.store.export_deliveries(journal=journal, since=since, into=into, rows=rows)

    async def close(self) -> None:
        await self.store.close()


def test_anything_but_200_is_retried_after_a_backoff(tmp_path: Path) -> None:
    """A 503 is posted again after the backoff on the clock, and then stored."""
    clock = FakeClock()

    async def run(url: str) -> None:
        mix = CallbackMix(outcomes={"131047": 1}, duplicate=0, reorder=0)
        emitter = _emitter(url, clock, mix)
        await emitter.start()
        emitter.accepted(message_id="A1", to=TO, refs=("c1", "", ""))
        await clock.until_sleeping(1)
        clock.advance(3600)
        await emitter.wait_until(lambda e: e.retried == 1)
        assert emitter.posted == 0
        clock.advance(0.5)
        await emitter.wait_until(lambda e: e.posted == 1)
        await emitter.stop()

    server = ThreadedReceiver(store_factory(sqlite_store(tmp_path)))
    server.wrap = _RefuseFirst
    with server as url:
        asyncio.run(run(url))
    with closing(sqlite3.connect(tmp_path / "callbacks.db")) as db:
        assert db.execute("SELECT status, code, ref FROM status_events").fetchall() == [
            ("failed", "131047", "c1")
        ]


def test_a_mix_is_read_from_its_flag() -> None:
    """--callback-mix names outcome weights and the duplicate/reorder shares."""
    mix = parse_mix("read=5, 131026=1, not_sent=1, duplicate=0.5", delay=0.1)
    assert dict(mix.outcomes) == {"read": 5, "131026": 1, "not_sent": 1}
    assert (mix.duplicate, mix.reorder, mix.delay) == (0.5, 0.1, 0.1)
    with pytest.raises(ValueError, match="outcomes"):
        parse_mix("bounced=1")


def test_sandbox_callbacks_need_a_secret(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sandbox --callback-url without a secret exits 2 before serving."""
    monkeypatch.delenv("BULK_SENDER_CALLBACK_SECRET", raising=False)
    config = write_config(tmp_path / "config.toml", "")
    run = cli("sandbox", "--config", config, "--callback-url", "http://127.0.0.1:1/kaleyra/status")
    assert run.code == 2 and "--callback-secret" in run.err


@pytest.mark.slow
def test_send_to_the_embedded_sandbox_posts_callbacks_that_the_results_show(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send --sandbox with [callbacks]: callbacks reach the receiver and the send merges them."""
    monkeypatch.setenv("BULK_SENDER_CALLBACK_SECRET", SECRET)
    numbers = [f"+9198450{n:05d}" for n in range(1, 13)]
    csv = write_csv(tmp_path / "c.csv", ["phone"], [[n] for n in numbers])
    with ThreadedReceiver(store_factory(sqlite_store(tmp_path))) as url:
        port = int(url.rsplit(":", 1)[1])
        config = write_config(tmp_path / "config.toml", "", callbacks={"port": port})
        run = cli("send", csv, "--sandbox", "--config", config, "--out", tmp_path / "r.csv")
        assert run.code == 0, run.err
    sent_results = read_results(tmp_path / "r.csv")
    assert sum(1 for r in sent_results if r["delivery_status"]) >= 1
    assert cli("report", tmp_path / "r.csv", "--config", config).code == 0
    reported = read_results(tmp_path / "r.csv")
    assert [r["delivery_status"] for r in reported] == [r["delivery_status"] for r in sent_results]
