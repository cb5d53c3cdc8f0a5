"""The tests' reader of a topic waits for a topic the relay has yet to create."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from shared.events import CloudEvent
from tests.support.kafka import read_topic


async def test_reading_a_topic_that_is_created_after_the_reader_starts_finds_its_events(broker, unique):
    topic = f"test.late.{unique}"
    event = CloudEvent(type="test.late.v1", source="/tests", subject="late", data={"n": 1})

    async def publish_later() -> None:
        await asyncio.sleep(1.0)  # the reader has asked for the topic and been told it does not exist
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, event.to_bytes(), key=b"late")
        finally:
            await producer.stop()

    publishing = asyncio.create_task(publish_later())
    found = await read_topic(broker.bootstrap_servers, topic, expect=1, timeout=20)
    await publishing
    assert [(key, e.data) for key, e in found] == [(b"late", {"n": 1})]
