"""Retention really deletes on Apache Kafka: what docs/privacy.md's short-lived personal-data topics rely on."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.bus import topic_partitions
from shared.topic_plan import until_led
from tests.support.kafka import TEST_BROKER

pytestmark = pytest.mark.skipif(TEST_BROKER != "kafka", reason="tansu keeps everything in memory until it stops")


async def test_events_older_than_a_topics_retention_are_deleted_by_the_brokers(broker, unique):
    topic = f"test.retention.{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        # A personal-data topic's 7 days, shortened: 2 s, with segments rolled each second
        # (retention deletes whole closed segments).
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=3,
                    topic_configs={"retention.ms": "2000", "segment.ms": "1000", "min.insync.replicas": "2"},
                )
            ]
        )
        await until_led(admin, [topic])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, f"resident {i}".encode(), key=b"k")
        await asyncio.sleep(1.5)
        await producer.send_and_wait(topic, b"a later event rolls the segment", key=b"k")
    finally:
        await producer.stop()

    reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        [partition] = await topic_partitions(reader, [topic])
        assert (await reader.beginning_offsets([partition]))[partition] == 0
        async with asyncio.timeout(60):  # the brokers check retention every 5 s here
            while (await reader.beginning_offsets([partition]))[partition] < 5:
                await asyncio.sleep(0.5)
        assert (await reader.end_offsets([partition]))[partition] == 6
    finally:
        await reader.stop()
