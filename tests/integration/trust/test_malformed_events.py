"""Malformed messages on every topic every installed service consumes, through the real broker.

Not JSON, not UTF-8, an empty value, JSON that is no CloudEvent, an unknown event
type, each handled type with data of the wrong shape, and a message far larger
than any event: each goes to the service's dead-letter topic with the reason, in
order, the consumer keeps going, and no table of the service changes. The
service's consumers are found on the app (`app.state.consumer_factory`), so a
service that lands later (reporting) is walked too.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from shared.events import CloudEvent, ReferralReceivedV1
from tests.support.kafka import started_consumer
from tests.support.services import consuming_services

HUGE_BYTES = 700 * 1024  # over the consumers' 512 kB limit, under the broker's 1 MB


def poison(handled_types: list[str]) -> list[tuple[bytes | None, str]]:
    """(message value, what the dead-letter reason must say) for each kind of bad message."""

    def event(type_: str, data: dict) -> bytes:
        return CloudEvent(source="/hostile", type=type_, subject="x", data=data).to_bytes()

    cases = [
        (b"this is not json", "not a CloudEvent"),
        (b"\xff\xfe\x00{\x80", "not a CloudEvent"),
        (None, "not a CloudEvent"),
        (orjson.dumps({"specversion": "1.0", "id": "not-a-uuid", "data": []}), "not a CloudEvent"),
        (orjson.dumps(["a", "list"]), "not a CloudEvent"),
        (event("uk.gov.kent.nonsense.v1", {"a": 1}), "unknown event type 'uk.gov.kent.nonsense.v1'"),
        (b'{"pad": "' + b"x" * HUGE_BYTES + b'"}', "too large"),
    ]
    cases += [(event(type_, {"unexpected": True}), f"invalid {type_} data") for type_ in sorted(handled_types)]
    return cases


def valid_sample(type_: str) -> CloudEvent | None:
    """A good event of a type, to show the consumer still works after the poison (where we know how to make one)."""
    if type_ == ReferralReceivedV1.type:
        from datetime import datetime

        return ReferralReceivedV1(
            referral_id=uuid.uuid4(),
            reference="KT-AAAA-0001",
            channel="phone",
            received_at=datetime.now(UTC),
            consent_to_share=True,
            resident={
                "name": "Ada Lovelace",
                "phone": "+441843577001",
                "address": {"line1": "1 Harbour Street", "town": "Ramsgate", "postcode": "CT9 2RN"},
            },
            requests=[{"request_id": uuid.uuid4(), "type": "food", "details": "shop", "urgency": "today"}],
        ).envelope(source="/kent-together/referrals")
    return None


async def produce(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=b"one-partition")
    finally:
        await producer.stop()


async def read_raw(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0
) -> list[tuple[bytes | None, dict]]:
    """(value, headers) of the first `expect` messages on `topic` (fewer if `timeout` passes)."""
    consumer = await started_consumer(bootstrap, topic, deadline=asyncio.get_running_loop().time() + 30)
    found = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while loop.time() < deadline and len(found) < expect:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                found += [(m.value, {k: v.decode() for k, v in m.headers}) for m in messages]
    finally:
        await consumer.stop()
    return found


async def row_counts(runtime) -> dict[str, int]:
    async with runtime.db.sessions() as session:
        return {
            t.name: await session.scalar(select(func.count()).select_from(t))
            for t in runtime.tables.metadata.sorted_tables
        }


@pytest.mark.parametrize("service", consuming_services())
async def test_malformed_messages_on_every_consumed_topic_are_dead_lettered_with_the_reason_and_change_nothing(
    service,
    start_service,
    unique,
):
    async with start_service(service, consumer_group=f"{service}-{unique}") as client:
        app, runtime = client.app, client.app.state.runtime
        factory = app.state.consumer_factory
        assert factory is not None, f"{service} has handlers but its app consumes nothing"
        consumers = factory(runtime)
        assert consumers and all(c.topics and c.handlers for c in consumers)
        bootstrap = runtime.settings.kafka_bootstrap_servers
        expected = {}
        for consumer in consumers:
            cases = poison(list(consumer.handlers))
            for topic in consumer.topics:
                await produce(bootstrap, topic, [value for value, _ in cases])
                expected.setdefault(consumer.dead_letter_topic, []).extend((topic, v, r) for v, r in cases)
        before = await row_counts(runtime)
        tasks = [asyncio.create_task(consumer.run()) for consumer in consumers]
        try:
            wrong = []
            for dlq, cases in expected.items():
                parked = await read_raw(bootstrap, dlq, expect=len(cases))
                assert len(parked) == len(cases), f"{dlq}: {len(parked)} of {len(cases)} dead-lettered"
                # In order within each source topic; a consumer of several topics interleaves them.
                by_topic: dict[str, list] = {}
                for parked_value, headers in parked:
                    by_topic.setdefault(headers.get("dlq-topic"), []).append((parked_value, headers))
                in_order = [by_topic[topic].pop(0) if by_topic.get(topic) else (None, {}) for topic, _, _ in cases]
                for (topic, value, reason), (parked_value, headers) in zip(cases, in_order):
                    if reason not in headers.get("dlq-reason", "") or headers.get("dlq-topic") != topic:
                        wrong.append(f"{topic}: expected {reason!r}, parked with {headers.get('dlq-reason')!r}")
                    if value is not None and len(value) <= HUGE_BYTES and parked_value != value:
                        wrong.append(f"{topic}: the parked message is not the one that came ({reason})")
                    if (
                        value is not None
                        and len(value) > HUGE_BYTES - 1
                        and headers.get("dlq-value-omitted-bytes") != str(len(value))
                    ):
                        wrong.append(f"{topic}: the huge message's size is not on the parked one")
            assert not wrong, "\n".join(wrong)
            assert await row_counts(runtime) == before, "a malformed message changed a table"
            assert all(not task.done() for task in tasks), "a consumer stopped"

            # And it keeps going: a good event after the poison is handled.
            for consumer in consumers:
                samples = [e for e in map(valid_sample, consumer.handlers) if e is not None]
                for topic in consumer.topics[:1]:
                    await produce(bootstrap, topic, [e.to_bytes() for e in samples])
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while consumer.processed_total < len(samples) and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                assert consumer.processed_total == len(samples)
                assert consumer.dead_lettered_total == len(poison(list(consumer.handlers))) * len(consumer.topics)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
