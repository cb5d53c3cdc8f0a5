"""The topic plan made on, and checked against, a running three-broker cluster."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.settings import Topics
from shared.topic_plan import check_topics, create_topics, topic_plan, until_led
from tests.support.kafka import TEST_BROKER

pytestmark = pytest.mark.skipif(TEST_BROKER != "kafka", reason="replication and topic configs: Apache Kafka only")


def plan_for(unique: str):
    """The real plan under names of this test's own (the cluster is shared by the session)."""
    topics = Topics(
        referrals=f"t{unique}.referrals",
        request_stats=f"t{unique}.stats",
        assignment_status=f"t{unique}.status",
        actions=f"t{unique}.actions",
        hubs=f"t{unique}.hub.{{hub}}",
        dead_letter_prefix=f"t{unique}.dlq.",
    )
    return topic_plan(["thanet", "maidstone"], topics)


async def test_the_plan_is_made_with_three_replicas_its_retention_and_min_insync_2_and_then_checks_clean(
    broker, unique
):
    plan = plan_for(unique)
    created = await create_topics(broker.bootstrap_servers, plan)
    assert sorted(created) == sorted(spec.name for spec in plan)
    assert await check_topics(broker.bootstrap_servers, plan) == []
    assert await create_topics(broker.bootstrap_servers, plan) == []  # a second run makes nothing

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics([spec.name for spec in plan])}
    finally:
        await admin.close()
    for spec in plan:
        partitions = described[spec.name]["partitions"]
        assert len(partitions) == spec.partitions
        assert all(len(p["replicas"]) == 3 for p in partitions), spec.name


async def test_a_topic_made_by_hand_unlike_the_plan_is_reported(broker, unique):
    plan = plan_for(unique)
    stats = next(spec for spec in plan if spec.name.endswith(".stats"))
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        # Someone made the rebuild topic with a week's retention and one replica.
        await admin.create_topics(
            [NewTopic(stats.name, num_partitions=2, replication_factor=1, topic_configs={"retention.ms": "604800000"})]
        )
        await until_led(admin, [stats.name])
    finally:
        await admin.close()
    await create_topics(broker.bootstrap_servers, plan)
    differences = await check_topics(broker.bootstrap_servers, plan)
    assert f"{stats.name}: 2 partitions, the plan says 6" in differences
    assert f"{stats.name}: retention.ms=604800000, the plan says -1" in differences
    assert any(d.startswith(f"{stats.name}: partitions [0, 1] have fewer than 3 replicas") for d in differences)
    assert all(d.startswith(stats.name) for d in differences)


async def test_a_missing_topic_is_reported(broker, unique):
    differences = await check_topics(broker.bootstrap_servers, plan_for(unique))
    assert f"t{unique}.referrals: missing" in differences
