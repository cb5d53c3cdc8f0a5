"""The shared consumer: redelivery is harmless, poison goes to the dead-letter topic, offsets follow commits."""

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import Column, String, Table, func, insert, select, text

from services.referrals.models import tables
from shared.bus import Producer, topic_partitions
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events import CloudEvent, RequestCancelledV1
from shared.uow import UnitOfWork

SERVICE = "referrals"  # any service's migrated database has the inbox table

effects = Table("test_effects", tables.metadata.__class__(), Column("event_id", String(36), primary_key=True))


def cancelled_event() -> CloudEvent:
    return RequestCancelledV1(
        referral_id=uuid.uuid4(),
        request_id=uuid.uuid4(),
        request_type="food",
        reason="no-longer-needed",
        cancelled_at="2020-04-02T10:00:00Z",
    ).envelope(source="/test")


@pytest.fixture
def broker(either_broker):
    """Apache Kafka, and the embedded broker `make run` starts (tests/conftest.py)."""
    return either_broker


@pytest.fixture
async def db(database_url):
    database = Database(database_url)
    async with database.engine.begin() as connection:
        await connection.run_sync(effects.metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
def topic(unique):
    return f"test.consumer.{unique}"


async def produce(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=b"k")
    finally:
        await producer.stop()


def make_consumer(*, db, broker, topic, unique, handler, max_attempts=3, batch_size=200) -> EventConsumer:
    return EventConsumer(
        group_id=f"test-group-{unique}",
        topics=[topic],
        handlers={RequestCancelledV1.type: handler},
        uow_factory=lambda: UnitOfWork(db, source="/test", outbox=tables.outbox),
        inbox=tables.inbox,
        bootstrap_servers=broker.bootstrap_servers,
        producer=Producer(broker.bootstrap_servers),
        dead_letter_topic=f"{topic}.dlq",
        max_attempts=max_attempts,
        retry_base_seconds=0.01,
        session_timeout_ms=6000,
        batch_size=batch_size,
    )


async def run_until(consumer: EventConsumer, condition, timeout=20.0):
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.producer.stop()


async def record_effect(uow, event):
    await uow.session.execute(insert(effects).values(event_id=str(event.id)))


async def count_effects(db) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(effects))


async def dead_letters(bootstrap, topic, expect):
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, metadata_max_age_ms=300
    )
    await consumer.start()
    found = []
    try:
        async with asyncio.timeout(15):
            while len(found) < expect:
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    found += messages
    finally:
        await consumer.stop()
    return found


async def test_an_event_delivered_twice_changes_things_once(db, broker, topic, unique):
    event = cancelled_event()
    await produce(broker.bootstrap_servers, topic, event.to_bytes(), event.to_bytes())
    calls = []

    async def handler(uow, event):
        calls.append(event.id)
        await record_effect(uow, event)

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=handler)
    await run_until(consumer, lambda: consumer.processed_total >= 2)
    assert calls == [event.id]  # the second delivery never reached the handler
    assert await count_effects(db) == 1


async def test_a_message_that_is_not_a_cloudevent_is_dead_lettered_and_the_next_one_is_handled(
    db, broker, topic, unique
):
    good = cancelled_event()
    await produce(broker.bootstrap_servers, topic, b"\x00not json at all", b'{"specversion": "1.0"}', good.to_bytes())
    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=record_effect)
    await run_until(consumer, lambda: consumer.processed_total >= 1)
    assert await count_effects(db) == 1
    parked = await dead_letters(broker.bootstrap_servers, f"{topic}.dlq", expect=2)
    reasons = [dict(m.headers)["dlq-reason"].decode() for m in parked]
    assert all(r.startswith("not a CloudEvent") for r in reasons)
    assert parked[0].value == b"\x00not json at all"  # kept as it came, for replay


async def test_an_unknown_event_type_is_dead_lettered_with_the_reason(db, broker, topic, unique):
    stranger = CloudEvent(source="/elsewhere", type="uk.gov.kent.together.mystery.v9", data={})
    await produce(broker.bootstrap_servers, topic, stranger.to_bytes())
    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=record_effect)
    await run_until(consumer, lambda: consumer.dead_lettered_total >= 1)
    [parked] = await dead_letters(broker.bootstrap_servers, f"{topic}.dlq", expect=1)
    assert dict(parked.headers)["dlq-reason"] == b"unknown event type 'uk.gov.kent.together.mystery.v9'"


async def test_an_event_that_keeps_failing_is_retried_then_dead_lettered_and_nothing_half_done(
    db, broker, topic, unique
):
    poison, good = cancelled_event(), cancelled_event()
    await produce(broker.bootstrap_servers, topic, poison.to_bytes(), good.to_bytes())
    attempts = []

    async def handler(uow, event):
        await record_effect(uow, event)  # rolled back with the failure
        if event.id == poison.id:
            attempts.append(1)
            raise RuntimeError("hub table unavailable")

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=handler, max_attempts=3)
    await run_until(consumer, lambda: consumer.processed_total >= 1 and consumer.dead_lettered_total >= 1)
    assert len(attempts) == 3
    assert await count_effects(db) == 1  # only the good one
    [parked] = await dead_letters(broker.bootstrap_servers, f"{topic}.dlq", expect=1)
    assert dict(parked.headers)["dlq-reason"] == b"failed 3 times: RuntimeError: hub table unavailable"


async def test_a_restarted_consumer_resumes_after_what_it_committed(db, broker, topic, unique):
    first = [cancelled_event() for _ in range(3)]
    await produce(broker.bootstrap_servers, topic, *[e.to_bytes() for e in first])
    calls = []

    async def handler(uow, event):
        calls.append(event.id)
        await record_effect(uow, event)

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=handler)
    await run_until(consumer, lambda: consumer.processed_total >= 3)
    later = cancelled_event()
    await produce(broker.bootstrap_servers, topic, later.to_bytes())
    again = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=handler)
    await run_until(again, lambda: again.processed_total >= 1)
    assert calls == [e.id for e in first] + [later.id]


async def test_events_fetched_together_share_one_commit_and_a_poison_among_them_spoils_none(db, broker, topic, unique):
    events = [cancelled_event() for _ in range(20)]
    poison = events[7]
    await produce(broker.bootstrap_servers, topic, *[e.to_bytes() for e in events])
    commits, attempts = [], []

    async def handler(uow, event):
        await record_effect(uow, event)
        if event.id == poison.id:
            attempts.append(1)
            raise RuntimeError("cannot place this one")

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=handler, max_attempts=3)
    factory = consumer.uow_factory

    def counting_uow():
        uow = factory()
        original = uow.commit

        async def commit():
            await original()
            commits.append(1)

        uow.commit = commit
        return uow

    consumer.uow_factory = counting_uow
    await run_until(consumer, lambda: consumer.processed_total >= 19 and consumer.dead_lettered_total >= 1)
    assert await count_effects(db) == 19  # every good event once; nothing of the poison's
    assert len(attempts) == 3  # the batch's try counts as the first of the bounded three
    assert len(commits) < 19  # good events shared commits rather than one each


async def committed_offsets(bootstrap: str, topic: str, group: str) -> set[int]:
    """The group's committed offsets on the topic's partitions that have one."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        offsets = {await reader.committed(partition) for partition in await topic_partitions(reader, [topic])}
        return offsets - {None}
    finally:
        await reader.stop()


@pytest.mark.parametrize("batch_size", [1, 2])
async def test_a_consumer_stopped_mid_batch_commits_what_it_handled_and_hands_back_the_rest(
    db,
    broker,
    topic,
    unique,
    batch_size,
):
    events = [cancelled_event() for _ in range(5)]
    await produce(broker.bootstrap_servers, topic, *[e.to_bytes() for e in events])
    handled, stuck = [], asyncio.Event()

    async def slow_on_the_third(uow, event):
        if len(handled) == 2:
            stuck.set()
            await asyncio.sleep(3600)  # still working when the service is stopped
        handled.append(event.id)
        await record_effect(uow, event)

    consumer = make_consumer(
        db=db, broker=broker, topic=topic, unique=unique, handler=slow_on_the_third, batch_size=batch_size
    )
    await run_until(consumer, stuck.is_set)

    done = await count_effects(db)
    # The third's transaction was rolled back, not half done; what committed (the
    # first two, one or two transactions) is exactly what the offset says.
    assert done == 2
    assert await committed_offsets(broker.bootstrap_servers, topic, f"test-group-{unique}") == {done}
    resumed = []

    async def handler(uow, event):
        resumed.append(event.id)
        await record_effect(uow, event)

    again = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=handler)
    await run_until(again, lambda: again.processed_total >= 3)
    assert resumed == [e.id for e in events[done:]]  # nothing handled twice, nothing lost
    assert await count_effects(db) == 5


async def test_replaying_the_dead_letter_topic_after_the_fix_handles_the_parked_event_once(db, broker, topic, unique):
    from shared.deadletters import replay_dead_letters

    parked_event = cancelled_event()
    await produce(broker.bootstrap_servers, topic, parked_event.to_bytes())
    broken = True

    async def handler(uow, event):
        if broken:
            raise RuntimeError("hub table unavailable")
        await record_effect(uow, event)

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=handler)
    await run_until(consumer, lambda: consumer.dead_lettered_total >= 1)
    assert await count_effects(db) == 0

    broken = False  # the cause is fixed
    producer = Producer(broker.bootstrap_servers)
    try:
        replayed = await replay_dead_letters(
            bootstrap_servers=broker.bootstrap_servers, dead_letter_topic=f"{topic}.dlq", producer=producer
        )
    finally:
        await producer.stop()
    again = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=handler)
    await run_until(again, lambda: again.processed_total >= 1)

    assert replayed == 1
    assert await count_effects(db) == 1


async def test_a_batch_handler_takes_a_fetch_in_one_transaction_and_skips_what_the_inbox_has_seen(
    db, broker, topic, unique
):
    first, second = cancelled_event(), cancelled_event()
    await produce(broker.bootstrap_servers, topic, first.to_bytes(), second.to_bytes(), first.to_bytes())
    batches = []

    async def batch(uow, events):
        batches.append([e.id for e in events])
        for event in events:
            await record_effect(uow, event)

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=record_effect)
    consumer.batch_handler = batch
    await run_until(consumer, lambda: consumer.processed_total >= 3)
    assert [i for b in batches for i in b] == [first.id, second.id]  # the redelivered one never reached it
    assert await count_effects(db) == 2


async def test_a_batch_that_fails_is_handled_one_at_a_time_so_only_the_poison_is_dead_lettered(
    db, broker, topic, unique
):
    poison, good = cancelled_event(), cancelled_event()
    await produce(broker.bootstrap_servers, topic, poison.to_bytes(), good.to_bytes())

    async def batch(uow, events):
        for event in events:
            await record_effect(uow, event)
        if poison.id in [e.id for e in events]:
            raise RuntimeError("the batch cannot be taken whole")

    async def one(uow, event):
        if event.id == poison.id:
            raise RuntimeError("poison")
        await record_effect(uow, event)

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=one, max_attempts=2)
    consumer.batch_handler = batch
    await run_until(consumer, lambda: consumer.processed_total >= 1 and consumer.dead_lettered_total >= 1)
    assert await count_effects(db) == 1  # the good one, once; nothing of the failed batch kept
    [parked] = await dead_letters(broker.bootstrap_servers, f"{topic}.dlq", expect=1)
    assert parked.value == poison.to_bytes()


async def test_a_batch_handler_takes_a_fetch_of_several_partitions_together_and_commits_each_partition(
    db,
    broker,
    topic,
    unique,
):
    from shared.bus import ensure_topics

    await ensure_topics(broker.bootstrap_servers, {topic: 3})
    events = [cancelled_event() for _ in range(12)]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for index, event in enumerate(events):
            await producer.send_and_wait(topic, value=event.to_bytes(), key=b"k", partition=index % 3)
    finally:
        await producer.stop()
    batches = []

    async def batch(uow, fresh):
        batches.append([e.id for e in fresh])
        for event in fresh:
            await record_effect(uow, event)

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=record_effect)
    consumer.batch_handler = batch
    await run_until(consumer, lambda: consumer.processed_total >= 12)
    handled = [i for b in batches for i in b]
    assert sorted(map(str, handled)) == sorted(str(e.id) for e in events)
    for partition in range(3):  # each partition's events in their order
        assert [i for i in handled if i in {e.id for e in events[partition::3]}] == [e.id for e in events[partition::3]]
    assert max(map(len, batches)) > 4  # one transaction held more than one partition (4 each)
    assert await count_effects(db) == 12

    # Every partition's offset was committed: a restarted consumer has nothing to do.
    later = cancelled_event()
    await produce(broker.bootstrap_servers, topic, later.to_bytes())
    again = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=record_effect)
    again.batch_handler = batch
    await run_until(again, lambda: again.processed_total >= 1)
    assert batches[-1] == [later.id] and again.processed_total == 1


async def test_a_consumer_forgets_handled_event_ids_past_its_inbox_retention_and_only_its_own(
    db, broker, topic, unique
):
    from datetime import timedelta

    from shared.db import utcnow

    group, now = f"test-group-{unique}", utcnow()
    rows = [
        {"consumer": group, "event_id": "old-mine", "processed_at": now - timedelta(days=31)},
        {"consumer": group, "event_id": "recent-mine", "processed_at": now - timedelta(days=29)},
        {"consumer": f"other-{unique}", "event_id": "old-other", "processed_at": now - timedelta(days=31)},
    ]
    async with db.sessions() as session, session.begin():
        await session.execute(insert(tables.inbox), rows)
    event = cancelled_event()
    await produce(broker.bootstrap_servers, topic, event.to_bytes())

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=record_effect)
    consumer.inbox_retention = timedelta(days=30)
    await run_until(consumer, lambda: consumer.processed_total >= 1)

    async with db.sessions() as session:
        kept = set((await session.execute(select(tables.inbox.c.consumer, tables.inbox.c.event_id))).all())
    assert kept == {(group, "recent-mine"), (f"other-{unique}", "old-other"), (group, str(event.id))}


async def test_a_consumer_without_an_inbox_retention_keeps_every_handled_id(db, broker, topic, unique):
    from datetime import timedelta

    from shared.db import utcnow

    old = {"consumer": f"test-group-{unique}", "event_id": "old-mine", "processed_at": utcnow() - timedelta(days=3650)}
    async with db.sessions() as session, session.begin():
        await session.execute(insert(tables.inbox), [old])
    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=record_effect)
    assert await consumer.purge_inbox() == 0
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(tables.inbox)) == 1


async def test_a_consumer_asked_to_stop_mid_round_finishes_the_round_and_returns_every_connection(
    db,
    broker,
    topic,
    unique,
):
    """A stop (SIGTERM, a deploy) never tears a transaction: the batch in hand commits, its offsets too."""
    events = [cancelled_event() for _ in range(3)]
    await produce(broker.bootstrap_servers, topic, *[e.to_bytes() for e in events])
    in_query = asyncio.Event()
    slow_query = (
        "SELECT pg_sleep(0.3)"
        if db.dialect == "postgresql"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000000) SELECT count(*) FROM c"
    )

    async def slow_in_the_database(uow, event):
        in_query.set()
        await uow.session.execute(text(slow_query))
        await record_effect(uow, event)

    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=slow_in_the_database)
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(20):
            await in_query.wait()
        consumer.stop()
        async with asyncio.timeout(20):
            await asyncio.gather(task, return_exceptions=True)
    finally:
        task.cancel()
        await consumer.producer.stop()

    assert db.engine.pool.checkedout() == 0
    assert await count_effects(db) == 3  # the fetch in hand was finished, not torn
    assert await committed_offsets(broker.bootstrap_servers, topic, f"test-group-{unique}") == {3}


async def test_an_idle_consumer_asked_to_stop_stops_at_once(db, broker, topic, unique):
    consumer = make_consumer(db=db, broker=broker, topic=topic, unique=unique, handler=record_effect)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.sleep(1.0)  # connected, fetching an empty topic
        consumer.stop()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done == {task} and task.cancelled()
    finally:
        task.cancel()
        await consumer.producer.stop()
