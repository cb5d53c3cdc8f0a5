"""A hub system reads the hub topic with the CloudEvents SDK's Kafka binding, not with our code."""

import asyncio

from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from shared.events import AssignmentRoutedV1
from tests.integration.fulfilment.conftest import deliver, eventually, referral_received
from tests.support.kafka import started_consumer

SERVICE = "fulfilment"


async def raw_messages(bootstrap_servers: str, topic: str, *, expect: int):
    """The records on `topic` as any Kafka client gets them: key, value and headers, nothing parsed."""
    consumer = await started_consumer(bootstrap_servers, topic, deadline=asyncio.get_running_loop().time() + 30)
    found = []
    try:

        async def enough():
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(messages)
            return len(found) >= expect

        await eventually(enough)
    finally:
        await consumer.stop()
    return found


async def test_a_hub_topic_message_is_a_structured_cloudevent_the_cloudevents_sdk_reads(client, settings):
    referral = referral_received(types=("food",))
    await deliver(client.app, referral)

    [record] = await raw_messages(settings.kafka_bootstrap_servers, settings.topics.hub("thanet"), expect=1)
    headers = dict(record.headers)
    # The binding's rule (kafka-protocol-binding §3): without this header a receiver must read binary mode.
    assert headers["content-type"] == b"application/cloudevents+json"
    assert not any(name.startswith("ce_") for name in headers)

    event = from_kafka(KafkaMessage(headers=headers, key=record.key, value=record.value), JSONFormat())
    assert event.get_type() == AssignmentRoutedV1.type
    assert event.get_specversion() == "1.0"
    assert event.get_source() == "/kent-together/fulfilment"
    assert event.get_datacontenttype() == "application/json"
    routed = AssignmentRoutedV1.model_validate(event.get_data())
    assert routed.hub == "thanet" and routed.request.type == "food"
    assert routed.referral_id == referral.referral_id
    assert record.key == str(referral.referral_id).encode()
