"""Routing throughput: referral events consumed and assigned, beside the raw consume rate of the same topic.

    .venv/bin/python -m bench.fulfilment_routing [--referrals 3000] [--database sqlite|postgres|both]

One run, one machine: the embedded broker (or KAFKA_BOOTSTRAP_SERVERS), a topic
filled with `referral.received` events as the referrals service writes them
(1 to 3 requests each, in the April 2020 mix of types, at real postcodes: most
in Kent's 12 districts, some in Medway and London, a few unknown), then:

1. raw: an aiokafka consumer in a fresh group reads every message (no parsing,
   no database): the ceiling for anything that consumes this topic;
2. fulfilment: the real service (its consumer, inbox, routing, assignments,
   history, hub and status events into the outbox, the outbox relay publishing
   them meanwhile) on a fresh database, from the same topic.

Both rates are timed from the first message handled to the last, so the
broker's three-second group join is not counted against either. Prints
figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, select

from services.fulfilment.app import FulfilmentSettings, create_app
from services.fulfilment.hubs import KENT_HUBS
from services.fulfilment.models import assignments
from services.fulfilment.postcodes import PostcodeDirectory
from shared.bus import EmbeddedBroker, ensure_topics, free_port
from shared.db import upgrade
from shared.events import ReferralReceivedV1
from shared.settings import Topics
from suite import registry

ADMIN_DSN = os.environ.get("KT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PARTITIONS = 6
# The April 2020 briefing: 55% food, 27% prescriptions; the rest shared out.
TYPES = (
    ["food"] * 55 + ["prescription"] * 27 + ["befriending"] * 8 + ["financial"] * 4 + ["practical"] * 4 + ["other"] * 2
)


def make_referrals(count: int, directory: PostcodeDirectory, *, seed: int = 2020) -> list[ReferralReceivedV1]:
    rng = random.Random(seed)
    kent = {hub.district_code: directory.postcodes(district_code=hub.district_code) for hub in KENT_HUBS}
    medway = directory.postcodes(district_code="E06000035")
    now = datetime.now(UTC)
    referrals = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.90:
            postcode = rng.choice(kent[rng.choice(list(kent))])
        elif roll < 0.97:
            postcode = rng.choice(medway)
        elif roll < 0.99:
            postcode = "SE1 7PB"
        else:
            postcode = "CT9 9XX"  # in no directory: triage
        requests = [
            {
                "request_id": uuid.uuid4(),
                "type": kind,
                "details": "bench",
                "urgency": rng.choice(["today", "within-48-hours", "this-week", "routine"]),
            }
            for kind in rng.sample(TYPES, k=rng.choice([1, 1, 1, 2, 2, 3]))
        ]
        referrals.append(
            ReferralReceivedV1(
                referral_id=uuid.uuid4(),
                reference=f"KT-BNCH-{i:04d}",
                channel="phone",
                received_at=now,
                consent_to_share=True,
                requests=requests,
                resident={
                    "name": f"Resident {i}",
                    "phone": "+441843577000",
                    "address": {"line1": f"{i} High Street", "postcode": postcode},
                },
            )
        )
    return referrals


async def fill_topic(bootstrap: str, topic: str, *, referrals: list[ReferralReceivedV1]) -> None:
    await ensure_topics(bootstrap, {topic: PARTITIONS})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for referral in referrals:
            event = referral.envelope(source="/kent-together/referrals")
            futures.append(await producer.send(topic, value=event.to_bytes(), key=event.subject.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consume(bootstrap: str, topic: str, *, expect: int) -> float:
    """Messages per second, first to last, for a consumer that does nothing with them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )
    await consumer.start()
    seen, first = 0, None
    try:
        while seen < expect:
            batches = await consumer.getmany(timeout_ms=100)
            for partition, messages in batches.items():
                if messages and first is None:
                    first = time.perf_counter()
                seen += len(messages)
                if messages:
                    await consumer.commit({partition: messages[-1].offset + 1})
        return (seen - 1) / (time.perf_counter() - first)
    finally:
        await consumer.stop()


async def fulfilment_consume(
    *,
    bootstrap: str,
    topics: Topics,
    database_url: str,
    directory: PostcodeDirectory,
    expect: int,
    var_dir: Path,
) -> tuple[float, int, float, float]:
    """(events/s, assignments made, assignments/s, CPU ms per event), first event handled to last, with the relay
    running. The CPU is this process's (its SQLite thread and relay included; not PostgreSQL's): steadier than
    the rate on a shared machine."""
    settings = FulfilmentSettings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        topics=topics,
        var_dir=var_dir,
        jwt_signing_key="bench-signing-key-" + "b" * 32,
        log_json=False,
        consumer_group=f"bench-{uuid.uuid4().hex[:6]}",
        run_scheduler=False,
        run_webhooks=False,
        create_hub_topics=False,
    )
    app = create_app(settings, directory=directory)
    runtime = app.state.runtime
    async with app.router.lifespan_context(app):
        while not runtime.consumers:
            await asyncio.sleep(0.01)
        consumer = runtime.consumers[0]
        first = None
        while consumer.processed_total + consumer.dead_lettered_total < expect:
            if first is None and consumer.processed_total:
                first, done_at_first = time.perf_counter(), consumer.processed_total
                cpu_at_first = time.process_time()
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - first
        cpu = time.process_time() - cpu_at_first
        async with runtime.db.sessions() as session:
            made = await session.scalar(select(func.count()).select_from(assignments))
        if consumer.dead_lettered_total:
            print(f"  warning: {consumer.dead_lettered_total} events dead-lettered")
    handled = expect - done_at_first
    return handled / elapsed, made, made * (handled / expect) / elapsed, 1000 * cpu / handled


async def inbox_only_consume(*, bootstrap: str, topic: str, database_url: str, expect: int) -> float:
    """Events/s through the shared consumer with a handler that does nothing: one transaction per event
    (inbox check, inbox row, commit). The floor under any consumer built on it."""
    from services.fulfilment.models import tables
    from shared.bus import Producer
    from shared.consumer import EventConsumer
    from shared.db import Database
    from shared.uow import UnitOfWork

    db = Database(database_url)

    async def nothing(uow, event):
        return None

    consumer = EventConsumer(
        group_id=f"bench-inbox-{uuid.uuid4().hex[:6]}",
        topics=[topic],
        handlers={ReferralReceivedV1.type: nothing},
        uow_factory=lambda: UnitOfWork(db, source="/bench", outbox=tables.outbox),
        inbox=tables.inbox,
        bootstrap_servers=bootstrap,
        producer=Producer(bootstrap),
        dead_letter_topic=f"{topic}.dlq",
    )
    task = asyncio.create_task(consumer.run())
    try:
        first = None
        while consumer.processed_total < expect:
            if first is None and consumer.processed_total:
                first, done_at_first = time.perf_counter(), consumer.processed_total
            await asyncio.sleep(0.005)
        return (expect - done_at_first) / (time.perf_counter() - first)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.producer.stop()
        await db.dispose()


async def postgres_database() -> tuple[str, str]:
    name = f"kt_bench_fulfilment_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return name, f"{base}/{name}"


async def drop_postgres(name: str) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def main(referral_count: int, databases: list[str]) -> None:
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        os.environ.setdefault("KAFKA_IDEMPOTENT_PRODUCER", "false")  # tansu refuses InitProducerId
        broker = EmbeddedBroker(port=free_port()).start()
        bootstrap = broker.bootstrap_servers
    try:
        started = time.perf_counter()
        directory = await asyncio.to_thread(PostcodeDirectory.load)
        print(f"postcode directory: {len(directory):,} postcodes in {time.perf_counter() - started:.2f}s")
        referrals = make_referrals(referral_count, directory)
        requests = sum(len(r.requests) for r in referrals)
        run = uuid.uuid4().hex[:6]
        topics = Topics(
            referrals=f"bench.referrals.{run}",
            request_stats=f"bench.stats.{run}",
            assignment_status=f"bench.status.{run}",
            hubs=f"bench.hub.{run}.{{hub}}",
            dead_letter_prefix=f"bench.dlq.{run}.",
        )
        await fill_topic(bootstrap, topics.referrals, referrals=referrals)
        print(
            f"topic {topics.referrals}: {referral_count:,} referral.received events, {requests:,} requests, "
            f"{PARTITIONS} partitions"
        )

        raw = await raw_consume(bootstrap, topics.referrals, expect=referral_count)
        print(f"\n  raw consume (no parsing, no database)        {raw:>9,.0f} events/s")
        for database in databases:
            with tempfile.TemporaryDirectory() as scratch:
                if database == "sqlite":
                    name, url = None, f"sqlite+aiosqlite:///{scratch}/fulfilment.db"
                else:
                    name, url = await postgres_database()
                try:
                    await asyncio.to_thread(upgrade, registry.spec("fulfilment").migrations, url)
                    floor = await inbox_only_consume(
                        bootstrap=bootstrap,
                        topic=topics.referrals,
                        database_url=url,
                        expect=referral_count,
                    )
                    rate, made, assigned, cpu_ms = await fulfilment_consume(
                        bootstrap=bootstrap,
                        topics=topics,
                        database_url=url,
                        directory=directory,
                        expect=referral_count,
                        var_dir=Path(scratch),
                    )
                finally:
                    if name:
                        await drop_postgres(name)
            print(f"\n  {database}:")
            print(
                f"    shared consumer, handler doing nothing     {floor:>9,.0f} events/s   "
                f"(one transaction per event: the floor)"
            )
            print(
                f"    fulfilment: consumed and assigned          {rate:>9,.0f} events/s   "
                f"{assigned:,.0f} assignments/s; {made:,} assignments for {requests:,} requests"
            )
            print(f"    fulfilment CPU in this process: {cpu_ms:.2f} ms per event")
            print(f"    ratio to raw consume {rate / raw:.4f}; to the shared consumer's floor {rate / floor:.2f}")
    finally:
        if broker:
            broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=3000)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    chosen = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    asyncio.run(main(args.referrals, chosen))
