"""The outbox relay on SQLite: the next batch goes out without waiting for the last one's mark; none is lost or sent twice."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select, update

from shared.bus import Producer
from shared.db import Database, new_metadata, utcnow
from shared.events import CloudEvent
from shared.outbox import OutboxRelay, outbox_table
from tests.support.kafka import read_topic
from tests.support.waiting import eventually

METADATA = new_metadata()
OUTBOX = outbox_table(METADATA)


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    async with database.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    yield database
    await database.dispose()


async def add_events(db: Database, topic: str, count: int, *, start: int = 0) -> None:
    rows = []
    for n in range(start, start + count):
        event = CloudEvent(type="test.relayed.v1", source="/tests", subject=str(n), data={"n": n})
        rows.append(
            {
                "event_id": str(event.id),
                "topic": topic,
                "key": "one-key",
                "type": event.type,
                "payload": event.to_bytes(),
                "created_at": utcnow(),
            }
        )
    async with db.sessions() as session, session.begin():
        await session.execute(insert(OUTBOX), rows)


async def unpublished(db: Database) -> int:
    async with db.read_sessions() as session:
        return await session.scalar(select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None)))


async def published(relay: OutboxRelay, count: int) -> bool:
    return relay.published_total >= count


def relay_for(db: Database, broker, **options) -> OutboxRelay:
    return OutboxRelay(db=db, table=OUTBOX, producer=Producer(broker.bootstrap_servers, idempotent=False), **options)


async def test_batches_sent_before_their_mark_are_each_sent_once_in_order_and_all_marked(db, broker, unique):
    topic = f"test.relay.{unique}"
    await add_events(db, topic, 25)
    relay = relay_for(db, broker, batch_size=10, mark_every_seconds=3600)  # no mark by time in this test
    try:
        sent = [await relay.publish_pending() for _ in range(3)]
        assert sent == [10, 10, 5]
        assert await unpublished(db) == 25  # sent, each batch read after the last one sent, none marked yet
        assert await relay.publish_pending() == 0  # nothing more to send: what was sent is marked now
        assert await unpublished(db) == 0
    finally:
        await relay.producer.stop()
    events = await read_topic(broker.bootstrap_servers, topic, expect=25)
    assert [e.data["n"] for _, e in events] == list(range(25))  # once each, in order


async def test_rows_an_operator_republished_are_sent_again_once_the_relay_has_marked_the_rest(db, broker, unique):
    topic = f"test.relay.{unique}"
    await add_events(db, topic, 3)
    relay = relay_for(db, broker, batch_size=10, mark_every_seconds=3600)
    try:
        assert await relay.publish_pending() == 3
        assert await relay.publish_pending() == 0
        async with db.sessions() as session, session.begin():  # `kent-together republish`, in effect
            await session.execute(update(OUTBOX).where(OUTBOX.c.id == 1).values(published_at=None))
        await add_events(db, topic, 1, start=3)
        assert await relay.publish_pending() == 2  # the republished row, before the new one
        assert await relay.publish_pending() == 0 and await unpublished(db) == 0
    finally:
        await relay.producer.stop()
    events = await read_topic(broker.bootstrap_servers, topic, expect=5)
    assert [e.data["n"] for _, e in events] == [0, 1, 2, 0, 3]


async def test_a_stopped_relay_marks_what_it_sent_so_a_restart_sends_nothing_twice(db, broker, unique):
    topic = f"test.relay.{unique}"
    relay = relay_for(db, broker, batch_size=10, mark_every_seconds=3600, poll_seconds=3600)
    running = asyncio.create_task(relay.run())
    try:
        await add_events(db, topic, 4)
        relay.notify()
        await eventually(lambda: published(relay, 4), timeout=20)
        await add_events(db, topic, 2, start=4)
        relay.notify()
        await eventually(lambda: published(relay, 6), timeout=20)
    finally:
        relay.stop()
        with pytest.raises(asyncio.CancelledError):
            await running
        await relay.producer.stop()
    assert await unpublished(db) == 0  # the last two were sent within the mark interval, and marked on the way out
