"""Reading what really reached the broker."""

from __future__ import annotations

import asyncio
import os

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import UnknownTopicOrPartitionError

from shared.events import CloudEvent

TEST_BROKER = os.environ.get("KT_TEST_BROKER", "kafka")
"""`kafka` (default): Apache Kafka, three KRaft nodes, replication 3, min.insync.replicas 2.
`tansu`: the embedded broker `make run` uses; `make test` runs a smaller set on it too."""


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 15.0,
    event_type: str | None = None,
) -> list[tuple[bytes | None, CloudEvent]]:
    """(key, event) pairs on `topic` from the beginning: until `expect` are read, or `timeout` passes.

    With `expect=None` it reads until the topic has been quiet for a second.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    consumer = await started_consumer(bootstrap_servers, topic, deadline=deadline)
    found: list[tuple[bytes | None, CloudEvent]] = []
    quiet_since = loop.time()
    try:
        while loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            got = False
            for messages in batches.values():
                for message in messages:
                    event = CloudEvent.from_bytes(message.value)
                    if event_type is None or event.type == event_type:
                        found.append((message.key, event))
                        got = True
            if got:
                quiet_since = loop.time()
            if expect is not None and len(found) >= expect:
                # Read a little longer: a duplicate must not hide behind an early return.
                extra = await consumer.getmany(timeout_ms=500)
                for messages in extra.values():
                    for message in messages:
                        event = CloudEvent.from_bytes(message.value)
                        if event_type is None or event.type == event_type:
                            found.append((message.key, event))
                break
            if expect is None and loop.time() - quiet_since > 1.0:
                break
    finally:
        await consumer.stop()
    return found


async def started_consumer(bootstrap_servers: str, topic: str, *, deadline: float) -> AIOKafkaConsumer:
    """A consumer of `topic` from the beginning, once the topic exists.

    The topic may not exist yet: the relay creates it with its first publish, which
    may come after the test starts reading. aiokafka's start() refuses a topic its
    metadata does not hold, so ask again until the deadline.
    """
    loop = asyncio.get_running_loop()
    while True:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=300,
            fetch_max_wait_ms=100,
        )
        try:
            await consumer.start()
            return consumer
        except UnknownTopicOrPartitionError:
            await consumer.stop()
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)
