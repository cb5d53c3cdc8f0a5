"""Replaying a dead-letter topic: each parked message goes back to the topic it came from.

Run after the cause is fixed (a deploy, a missing hub, a bad reference row).
The message goes back as it came (key, value, its own headers, without the
`dlq-*` ones); the consumer's inbox makes a message that was handled since
harmless, and one that fails again is parked again with its new reason.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.bus import OutgoingMessage, Producer, topic_partitions
from shared.kafka_security import KafkaSecurity, client_options


async def replay_dead_letters(
    *,
    bootstrap_servers: str,
    dead_letter_topic: str,
    producer: Producer,
    event_ids: set[str] | None = None,
    security: KafkaSecurity | None = None,
) -> int:
    """Send every message now on `dead_letter_topic` back to its topic; return how many were sent."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        **client_options(security),
    )
    await reader.start()
    messages: list[OutgoingMessage] = []
    try:
        partitions = await topic_partitions(reader, [dead_letter_topic])
        if partitions:
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            ends = await reader.end_offsets(partitions)  # what is parked now; later arrivals wait for next time
            while [p for p in partitions if await reader.position(p) < ends[p]]:
                for batch in (await reader.getmany(*partitions, timeout_ms=500)).values():
                    for message in batch:
                        if message.offset >= ends[TopicPartition(message.topic, message.partition)]:
                            continue
                        if event_ids is not None and not any(i.encode() in (message.value or b"") for i in event_ids):
                            continue
                        headers = dict(message.headers or ())
                        messages.append(
                            OutgoingMessage(
                                topic=headers["dlq-topic"].decode(),
                                key=message.key,
                                value=message.value or b"",
                                headers=tuple((k, v) for k, v in (message.headers or ()) if not k.startswith("dlq-")),
                            )
                        )
    finally:
        await reader.stop()
    if messages:
        await producer.send_many(messages)
    return len(messages)
