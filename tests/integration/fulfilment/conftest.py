import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from services.fulfilment.app import FulfilmentSettings, create_app
from services.fulfilment.handlers import referral_handlers
from services.fulfilment.postcodes import PostcodeDirectory
from shared.bus import ensure_topics
from shared.events import CloudEvent, EventData, ReferralReceivedV1
from tests.support.apps import record_of, running, test_topics, token
from tests.support.waiting import eventually  # noqa: F401  (the fulfilment tests import it from here)

THANET_POSTCODE = "CT9 2RN"  # Northdown Road, Margate
MEDWAY_POSTCODE = "ME4 4TR"  # Gun Wharf, Chatham
CANTERBURY_POSTCODE = "CT1 1YW"
UNKNOWN_POSTCODE = "CT9 9XX"  # well formed, in no directory


@pytest.fixture(scope="session")
def directory() -> PostcodeDirectory:
    """The real ONS directory, loaded once for every app the tests build (the service loads its own)."""
    return PostcodeDirectory.load()


def make_settings(*, database_url, broker, signing_key, unique, var_dir, **overrides) -> FulfilmentSettings:
    values = dict(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        jwt_signing_key=signing_key,
        topics=test_topics(unique),
        var_dir=var_dir,
        log_json=False,
        consumer_group=f"fulfilment-{unique}",
        outbox_poll_seconds=0.1,
        sla_poll_seconds=0.1,
        webhook_poll_seconds=0.05,
        webhook_backoff_seconds=0.05,
        create_hub_topics=False,
        consumer_session_timeout_ms=6000,
    )
    values.update(overrides)
    return FulfilmentSettings(**values)


@pytest.fixture
def settings(database_url, broker, signing_key, unique, var_dir):
    return make_settings(
        database_url=database_url, broker=broker, signing_key=signing_key, unique=unique, var_dir=var_dir
    )


@pytest.fixture
async def client(settings, directory):
    """The service without its Kafka consumer: events are handed to it with `deliver`.

    Joining a consumer group takes the embedded broker three seconds; the tests
    that are about consuming from the broker use `live_client`.
    """
    app = create_app(settings.model_copy(update={"run_consumers": False}), directory=directory)
    async with running(app) as http:
        http.app = app
        yield http


@pytest.fixture
async def live_client(settings, directory):
    """The service as it runs, consuming the referrals topic from the real broker."""
    # Made first, so the consumer's first metadata already has it (else it waits a refresh).
    await ensure_topics(settings.kafka_bootstrap_servers, {settings.topics.referrals: 3})
    app = create_app(settings, directory=directory)
    async with running(app) as http:
        http.app = app
        yield http


async def deliver(app, data: EventData, *, event: CloudEvent | None = None) -> CloudEvent:
    """Hand an event to the service's own consumer code (inbox, handler, commit), as a record from the topic."""
    runtime = app.state.runtime
    settings = runtime.settings
    consumer = runtime.consumer(
        group=settings.consumer_group,
        topics=[settings.topics.referrals],
        handlers=referral_handlers(routing=app.state.routing, topics=settings.topics),
    )
    event = event or data.envelope(source="/kent-together/referrals")
    record = record_of(settings.topics.referrals, event)
    await consumer.process(record)
    assert consumer.processed_total == 1, "the event was dead-lettered"
    return event


def headers(settings, role: str, hub: str | None = None) -> dict[str, str]:
    return token(settings, role, hub=hub, subject=f"{role}-{hub}" if hub else role)


def referral_received(
    *,
    postcode: str = THANET_POSTCODE,
    types=("food", "prescription"),
    urgency: str = "today",
    consent: bool = True,
) -> ReferralReceivedV1:
    """The referral as the referrals service publishes it."""
    return ReferralReceivedV1(
        referral_id=uuid.uuid4(),
        reference="KT-7F3K-9QX2",
        channel="phone",
        received_at=datetime.now(UTC),
        consent_to_share=consent,
        resident={
            "name": "Margaret Jones",
            "date_of_birth": "1941-03-02",
            "phone": "+441843577000",
            "address": {"line1": "12 Northdown Road", "town": "Margate", "postcode": postcode},
            "contact_preference": "phone",
            "vulnerabilities": ["shielding", "lives-alone"],
        },
        requests=[
            {"request_id": uuid.uuid4(), "type": kind, "details": f"{kind}: please call first", "urgency": urgency}
            for kind in types
        ],
    )


async def produce(bootstrap: str, topic: str, *events: CloudEvent) -> None:
    """Write events to the topic as the referrals service's relay does: keyed by referral."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, value=event.to_bytes(), key=event.subject.encode())
    finally:
        await producer.stop()


async def send_referral(settings, referral: ReferralReceivedV1) -> CloudEvent:
    event = referral.envelope(source="/kent-together/referrals")
    await produce(settings.kafka_bootstrap_servers, settings.topics.referrals, event)
    return event


async def hub_assignments(client, settings, hub: str, *, expect: int, **params) -> list[dict]:
    """The hub's assignments, once there are `expect` of them."""

    async def check():
        response = await client.get(f"/v1/hubs/{hub}/assignments", params=params, headers=headers(settings, "hub", hub))
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        return items if len(items) >= expect else None

    return await eventually(check)


async def queue(client, settings, name: str, *, expect: int) -> list[dict]:
    async def check():
        response = await client.get(f"/v1/queues/{name}", headers=headers(settings, "admin"))
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        return items if len(items) >= expect else None

    return await eventually(check)
