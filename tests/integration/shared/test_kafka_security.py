"""Kafka client security against the embedded broker.

The embedded broker (tansu) speaks PLAINTEXT only: it has no TLS and no SASL,
so a real SASL handshake or certificate check cannot be exercised here. What
is checked: the default path, built from settings, still produces and consumes;
and a client configured for SASL really attempts SASL: the broker answers the
handshake with UNSUPPORTED_SASL_MECHANISM and every client fails at once with
a connection error instead of hanging or silently falling back to plain text.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid

import pytest
from aiokafka.errors import KafkaConnectionError

from services.referrals.models import tables as referrals_tables
from services.reporting.models import tables as reporting_tables
from services.reporting.service import replay as replay_reporting
from shared.app import build_runtime
from shared.bus import OutgoingMessage, Producer, ensure_topics
from shared.consumer import EventConsumer
from shared.deadletters import replay_dead_letters
from shared.events import CloudEvent, RequestCancelledV1
from shared.kafka_security import KafkaSecurity
from shared.settings import ServiceSettings
from shared.uow import UnitOfWork
from tests.support.databases import sqlite_template

SASL = KafkaSecurity(
    security_protocol="SASL_PLAINTEXT",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="referrals",
    sasl_password="not-a-real-password",
)


def cancelled_event() -> CloudEvent:
    return RequestCancelledV1(
        referral_id=uuid.uuid4(),
        request_id=uuid.uuid4(),
        request_type="food",
        reason="no-longer-needed",
        cancelled_at="2020-04-02T10:00:00Z",
    ).envelope(source="/test")


def migrated(service: str, tmp_path, tmp_path_factory) -> str:
    target = tmp_path / f"{service}.db"
    shutil.copy(sqlite_template(service, tmp_path_factory.getbasetemp()), target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def broker(either_broker):
    """Apache Kafka, and the embedded broker `make run` starts (tests/conftest.py)."""
    return either_broker


@pytest.fixture
def referrals_db(tmp_path, tmp_path_factory) -> str:
    """A migrated SQLite database (sync: the migrations run their own event loop)."""
    return migrated("referrals", tmp_path, tmp_path_factory)


@pytest.fixture
def reporting_db(tmp_path, tmp_path_factory) -> str:
    return migrated("reporting", tmp_path, tmp_path_factory)


def refused_sasl(caplog) -> bool:
    """aiokafka logged that the broker refused the SASL handshake.

    tansu answers UNSUPPORTED_SASL_MECHANISM; Apache Kafka's PLAINTEXT listener
    answers ILLEGAL_SASL_STATE (it takes the handshake for an out-of-order request).
    """
    return any(
        name in record.getMessage()
        for record in caplog.records
        for name in ("UnsupportedSaslMechanism", "IllegalSaslStateError")
    )


async def test_the_default_plaintext_path_built_from_settings_produces_and_consumes(
    broker,
    unique,
    monkeypatch,
    referrals_db,
):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("REFERRALS_DATABASE_URL", referrals_db)
    from services.referrals.app import ReferralsSettings

    settings = ReferralsSettings(run_relay=False, run_consumers=False)
    assert settings.kafka.security_protocol == "PLAINTEXT"
    runtime = build_runtime(settings, referrals_tables)
    topic = f"test.security.{unique}"
    await ensure_topics(settings.kafka_bootstrap_servers, {topic: 1}, security=settings.kafka)
    seen: list[str] = []

    async def handle(uow, event):
        seen.append(str(event.id))

    consumer = runtime.consumer(
        group=f"test-security-{unique}", topics=[topic], handlers={RequestCancelledV1.type: handle}
    )
    assert consumer.security is settings.kafka and runtime.producer.security is settings.kafka
    event = cancelled_event()
    task = asyncio.create_task(consumer.run())
    try:
        await runtime.producer.send_many([OutgoingMessage(topic=topic, key=b"k", value=event.to_bytes())])
        async with asyncio.timeout(30):
            while not seen:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.producer.stop()
        await runtime.db.dispose()
    assert seen == [str(event.id)]


async def test_a_sasl_producer_against_a_plaintext_broker_fails_at_once(broker, unique, caplog):
    producer = Producer(broker.bootstrap_servers, security=SASL)
    try:
        async with asyncio.timeout(30):
            with pytest.raises(KafkaConnectionError):
                await producer.send_many([OutgoingMessage(topic=f"test.security.{unique}", key=None, value=b"x")])
    finally:
        await producer.stop()
    assert refused_sasl(caplog)
    # The same producer in plain text reaches the same broker: it was the SASL that failed.
    plain = Producer(broker.bootstrap_servers)
    try:
        await plain.send_many([OutgoingMessage(topic=f"test.security.{unique}", key=None, value=b"x")])
    finally:
        await plain.stop()


async def test_sasl_topic_creation_and_dead_letter_replay_fail_at_once(broker, unique, caplog):
    async with asyncio.timeout(30):
        with pytest.raises(KafkaConnectionError):
            await ensure_topics(broker.bootstrap_servers, {f"test.security.{unique}": 1}, security=SASL)
    assert refused_sasl(caplog)
    caplog.clear()
    producer = Producer(broker.bootstrap_servers)  # plain: only the reader is given SASL
    try:
        async with asyncio.timeout(30):
            with pytest.raises(KafkaConnectionError):
                await replay_dead_letters(
                    bootstrap_servers=broker.bootstrap_servers,
                    producer=producer,
                    dead_letter_topic=f"kt.dlq.test-{unique}",
                    security=SASL,
                )
    finally:
        await producer.stop()
    assert refused_sasl(caplog)


async def test_a_sasl_reporting_replay_fails_at_once(broker, unique, caplog, reporting_db):
    settings = ServiceSettings(service_name="reporting", database_url=reporting_db)
    runtime = build_runtime(settings, reporting_tables)
    try:
        async with asyncio.timeout(30):
            with pytest.raises(KafkaConnectionError):
                await replay_reporting(
                    runtime.uow,
                    inbox=reporting_tables.inbox,
                    consumer=f"test-{unique}",
                    bootstrap_servers=broker.bootstrap_servers,
                    topics=[f"test.{unique}"],
                    security=SASL,
                )
    finally:
        await runtime.db.dispose()
    assert refused_sasl(caplog)


async def test_a_sasl_consumer_against_a_plaintext_broker_reports_the_refusal_and_retries(
    broker,
    unique,
    caplog,
    referrals_db,
):
    from shared.db import Database

    db = Database(referrals_db)
    consumer = EventConsumer(
        group_id=f"test-security-{unique}",
        topics=[f"test.security.{unique}"],
        handlers={},
        uow_factory=lambda: UnitOfWork(db, source="/test", outbox=referrals_tables.outbox),
        inbox=referrals_tables.inbox,
        bootstrap_servers=broker.bootstrap_servers,
        producer=Producer(broker.bootstrap_servers),
        dead_letter_topic=f"test.security.{unique}.dlq",
        security=SASL,
    )
    task = asyncio.create_task(consumer.run())
    try:
        with caplog.at_level(logging.WARNING):
            async with asyncio.timeout(30):
                while not any(r.name == "shared.consumer" and "reconnecting" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await db.dispose()
    assert refused_sasl(caplog)
    assert task.cancelled()  # still retrying when stopped: it did not crash
