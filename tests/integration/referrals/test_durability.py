"""A referral answered 201 is published, whatever the broker does meanwhile."""

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from services.referrals.models import tables
from shared.bus import Producer
from shared.db import Database, utcnow
from shared.events import ReferralReceivedV1
from shared.outbox import OutboxRelay, republish
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token
from tests.support.kafka import read_topic

SERVICE = "referrals"


def person(i: int) -> dict:
    body = referral_body()
    body["resident"]["name"] = f"Resident Number {i}"
    return body


async def test_referrals_taken_while_the_broker_is_down_are_all_published_once_it_is_back(client, settings, broker):
    headers = token(settings, "call-centre")
    await client.post("/v1/referrals", json=person(0), headers=headers)  # the relay is connected
    await read_topic(settings.kafka_bootstrap_servers, settings.topics.referrals, expect=1)
    broker.pause()
    try:
        responses = [await client.post("/v1/referrals", json=person(i), headers=headers) for i in range(1, 101)]
        assert [r.status_code for r in responses] == [201] * 100
        ready = (await client.get("/ready")).json()
        assert ready["outbox"]["backlog"] >= 100  # waiting, not lost
    finally:
        broker.resume()
    accepted = {r.json()["id"] for r in responses}
    events = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.topics.referrals,
        expect=101,
        timeout=90,
        event_type=ReferralReceivedV1.type,
    )
    published = [e.data["referral_id"] for _, e in events]
    assert accepted <= set(published)
    assert len(published) == len(set(published)) == 101  # once each


async def test_published_events_are_kept_for_a_while_and_a_time_range_can_be_republished(client, settings):
    start = utcnow() - timedelta(seconds=1)
    await client.post("/v1/referrals", json=person(1), headers=token(settings, "call-centre"))
    first = await read_topic(settings.kafka_bootstrap_servers, settings.topics.referrals, expect=1)
    runtime = client.app.state.runtime
    outbox = runtime.tables.outbox
    while (await runtime.relay.backlog())[0]:  # on the topic; now marked published too
        await asyncio.sleep(0.05)
    async with runtime.db.sessions() as session:
        kept = await session.scalar(select(func.count()).select_from(outbox).where(outbox.c.published_at.is_not(None)))
    assert kept == 3  # the referral and its two request events, published and kept

    assert await republish(db=runtime.db, table=outbox, since=start, until=utcnow() + timedelta(seconds=1)) == 3
    runtime.relay.notify()
    again = await read_topic(settings.kafka_bootstrap_servers, settings.topics.referrals, expect=2)
    assert [e.id for _, e in again] == [first[0][1].id] * 2  # same event id: consumers' inboxes drop it


async def test_two_relays_share_the_outbox_and_publish_every_event_exactly_once(client, settings, database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite runs one relay per database by design; several relays are a PostgreSQL feature")
    runtime = client.app.state.runtime
    runtime.relay.batch_size = 0  # park the app's own relay: two separate relays do the work below
    for task in runtime.tasks:
        task.cancel()
    await asyncio.gather(*runtime.tasks, return_exceptions=True)
    runtime.tasks.clear()
    headers = token(settings, "call-centre")
    for i in range(60):
        assert (await client.post("/v1/referrals", json=person(i), headers=headers)).status_code == 201

    relays = []
    for _ in range(2):
        db = Database(database_url)
        relays.append(
            OutboxRelay(
                db=db,
                table=tables.outbox,
                producer=Producer(settings.kafka_bootstrap_servers),
                batch_size=7,
                keyring=settings.keyring(),
            )
        )

    async def drain(relay):
        total = 0
        while (published := await relay.publish_pending()) > 0:
            total += published
        return total

    counts = await asyncio.gather(*[drain(r) for r in relays])
    for relay in relays:
        await relay.producer.stop()
        await relay.db.dispose()
    assert sum(counts) == 180 and all(c > 0 for c in counts)  # both worked, nothing twice
    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.referrals, expect=60)
    ids = [e.id for _, e in events]
    assert len(ids) == len(set(ids)) == 60


async def test_when_the_database_fails_mid_batch_nobody_gets_a_201_and_nothing_is_half_stored(client, settings):
    runtime = client.app.state.runtime
    headers = token(settings, "call-centre")
    async with runtime.db.engine.begin() as connection:  # a real failure: the requests table is gone
        await connection.exec_driver_sql("ALTER TABLE requests RENAME TO requests_away")
    try:
        responses = await asyncio.gather(
            *[client.post("/v1/referrals", json=person(i), headers=headers) for i in range(5)]
        )
    finally:
        async with runtime.db.engine.begin() as connection:
            await connection.exec_driver_sql("ALTER TABLE requests_away RENAME TO requests")
    assert {r.status_code for r in responses} == {500}
    assert all("request_id" in r.json() and "Traceback" not in r.text for r in responses)
    async with runtime.db.sessions() as session:
        from services.referrals.models import referrals

        assert await session.scalar(select(func.count()).select_from(referrals)) == 0
        assert await session.scalar(select(func.count()).select_from(tables.outbox)) == 0
    again = await client.post("/v1/referrals", json=person(9), headers=headers)
    assert again.status_code == 201
