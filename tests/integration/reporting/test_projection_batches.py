"""A fetched batch folds to exactly what the same events give one at a time, on SQLite and PostgreSQL.

The live consumer hands the projection a whole fetch (several partitions, both
topics) in one transaction: one request's events may arrive in it out of order,
twice, or after some of them were already projected.
"""

import random
from datetime import timedelta

from aiokafka.structs import ConsumerRecord
from sqlalchemy import select

from services.reporting import service
from services.reporting.app import consumed_topics
from services.reporting.handlers import project_batch, projection_handlers
from services.reporting.models import referral_facts, request_counts, request_facts, tables
from tests.integration.reporting.conftest import CANTERBURY, Story, deliver

SERVICE = "reporting"


def stories() -> list:
    """Events of several requests: received, moved on, escalated, cancelled; a late old change."""
    events = []
    for index, code in enumerate([None, CANTERBURY, "E07000114", "E06000035"] * 2):
        story = Story(
            district_code=code,
            hub=None if code is None else "canterbury",
            request_type="food",
            channel=["phone", "online"][index % 2],
        )
        events.append(story.received())
        events.append(story.status_changed("routed", after=timedelta(minutes=5)))
        if index % 3 == 0:
            events.append(story.escalated("accept", after=timedelta(hours=2)))
        events.append(story.status_changed("accepted", after=timedelta(hours=3)))
        if index % 2:
            events.append(story.status_changed("fulfilled", after=timedelta(hours=20), outcome="delivered"))
        else:
            events.append(story.cancelled(after=timedelta(hours=5)))
    envelopes = [event.envelope(source="/kent-together/test") for event in events]
    random.Random(5).shuffle(envelopes)  # the order of a fetch over two topics and several partitions
    return envelopes


def records(events) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(
            topic="test",
            partition=i % 3,
            offset=i,
            timestamp=0,
            timestamp_type=0,
            key=e.subject.encode(),
            value=e.to_bytes(),
            checksum=None,
            serialized_key_size=0,
            serialized_value_size=0,
            headers=(),
        )
        for i, e in enumerate(events)
    ]


async def read_models(runtime) -> tuple[list, list, dict]:
    async with runtime.db.engine.connect() as connection:
        facts = [
            {k: v for k, v in row._mapping.items() if k != "updated_at"}
            for row in (await connection.execute(select(request_facts).order_by(request_facts.c.request_id))).all()
        ]
        referrals = [
            {k: v for k, v in row._mapping.items() if k != "updated_at"}
            for row in (await connection.execute(select(referral_facts).order_by(referral_facts.c.referral_id))).all()
        ]
        counts = {
            (r.day, r.district, r.dimension, r.value): r.count
            for r in (await connection.execute(select(request_counts))).all()
            if r.count
        }
    return facts, referrals, counts


async def test_a_batch_out_of_order_with_repeats_folds_to_the_same_facts_and_counts_as_one_at_a_time(client):
    runtime = client.app.state.runtime
    events = stories()
    await deliver(client.app, *events)
    one_at_a_time = await read_models(runtime)
    assert len(one_at_a_time[0]) == 8 and one_at_a_time[2]

    async with runtime.uow() as uow:
        await service.clear(uow, inbox=tables.inbox, consumer=runtime.settings.consumer_group)
        await uow.commit()
    assert await read_models(runtime) == ([], [], {})

    # A few projected first, then the rest in one batch with some of those again and a repeat inside it.
    await deliver(client.app, *events[:4])
    batch = events[4:] + [events[1], events[7]]
    consumer = runtime.consumer(
        group=runtime.settings.consumer_group,
        topics=consumed_topics(runtime.settings),
        handlers=projection_handlers(),
        batch_handler=project_batch,
    )
    calls = []

    async def counted(uow, fresh):
        calls.append(len(fresh))
        await project_batch(uow, fresh)

    consumer.batch_handler = counted
    await consumer.process_many(records(batch))
    assert calls == [len(events) - 4]  # one transaction; what the inbox had seen never reached the fold
    assert consumer.dead_lettered_total == 0
    assert await read_models(runtime) == one_at_a_time

    await consumer.process_many(records(events))  # all of it again: nothing changes
    assert calls == [len(events) - 4]
    assert await read_models(runtime) == one_at_a_time
