"""One referral followed across services: the caller's W3C trace id rides on every event it causes."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from aiokafka import AIOKafkaConsumer

from services.fulfilment.app import FulfilmentSettings
from services.fulfilment.app import create_app as create_fulfilment
from services.referrals.app import ReferralsSettings
from services.referrals.app import create_app as create_referrals
from services.referrals.schemas import ReferralIn
from services.referrals.service import Intake
from shared import tracing
from shared.auth import ROLE_SCOPES, Principal
from shared.bus import ensure_topics
from shared.events import AssignmentRoutedV1, ReferralReceivedV1
from tests.integration.fulfilment.conftest import directory  # noqa: F401 (the fixture)
from tests.support import apps
from tests.support.apps import running, token
from tests.support.databases import sqlite_template
from tests.support.kafka import read_topic

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

REFERRAL = {
    "channel": "phone",
    "resident": {
        "name": "Margaret Jones",
        "phone": "01843 577000",
        "address": {"line1": "12 Northdown Road", "postcode": "CT9 2RN"},
    },
    "consent": {"to_share": True},
    "requests": [{"type": "food"}, {"type": "prescription"}],
}


def database(service: str, tmp_path, tmp_path_factory) -> str:
    target = tmp_path / f"{service}.db"
    shutil.copy(sqlite_template(service, tmp_path_factory.getbasetemp()), target)
    return f"sqlite+aiosqlite:///{target}"


async def kafka_headers(bootstrap_servers: str, topic: str) -> list[dict[str, bytes]]:
    """The headers of every message on `topic`, as a tool that reads no bodies sees them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=2000)
        return [dict(m.headers) for messages in batches.values() for m in messages]
    finally:
        await consumer.stop()


@pytest.fixture
def referrals_db(tmp_path, tmp_path_factory) -> str:
    return database("referrals", tmp_path, tmp_path_factory)


@pytest.fixture
def fulfilment_db(tmp_path, tmp_path_factory) -> str:
    return database("fulfilment", tmp_path, tmp_path_factory)


@pytest.fixture
def common(broker, signing_key, unique, var_dir):
    return dict(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        jwt_signing_key=signing_key,
        topics=apps.test_topics(unique),
        var_dir=var_dir,
        log_json=False,
        outbox_poll_seconds=0.1,
    )


async def test_a_referral_posted_with_a_traceparent_carries_its_trace_id_to_fulfilments_assignment_events(
    common,
    unique,
    referrals_db,
    fulfilment_db,
    directory,  # noqa: F811 (the fixture imported above)
):
    topics = common["topics"]
    referrals_settings = ReferralsSettings(database_url=referrals_db, **common)
    fulfilment_settings = FulfilmentSettings(
        database_url=fulfilment_db,
        consumer_group=f"fulfilment-{unique}",
        create_hub_topics=False,
        run_scheduler=False,
        run_webhooks=False,
        consumer_session_timeout_ms=6000,
        **common,
    )
    await ensure_topics(common["kafka_bootstrap_servers"], {topics.referrals: 1})

    async with (
        running(create_referrals(referrals_settings)) as referrals,
        running(create_fulfilment(fulfilment_settings, directory=directory)),
    ):
        response = await referrals.post(
            "/v1/referrals", json=REFERRAL, headers={**token(referrals_settings, "call-centre"), "traceparent": CALLER}
        )
        assert response.status_code == 201, response.text
        assert tracing.parse(response.headers["traceparent"]).trace_id == TRACE_ID

        [(_, received)] = await read_topic(
            common["kafka_bootstrap_servers"], topics.referrals, expect=1, event_type=ReferralReceivedV1.type
        )
        routed = await read_topic(
            common["kafka_bootstrap_servers"],
            topics.hub("thanet"),
            expect=2,
            timeout=30,
            event_type=AssignmentRoutedV1.type,
        )
        status = await read_topic(common["kafka_bootstrap_servers"], topics.assignment_status, expect=2, timeout=30)
        headers = await kafka_headers(common["kafka_bootstrap_servers"], topics.referrals)

    assert tracing.parse(received.traceparent).trace_id == TRACE_ID
    assert [tracing.parse(h["traceparent"]).trace_id for h in headers] == [TRACE_ID]
    assert len(routed) == 2 and len(status) >= 2
    assert {tracing.parse(e.traceparent).trace_id for _, e in routed + status} == {TRACE_ID}


async def test_referrals_taken_in_one_batch_keep_each_callers_own_trace(common, referrals_db):
    """Group commit writes many callers' referrals in one task: each event keeps its own caller's trace."""
    settings = ReferralsSettings(database_url=referrals_db, **common)
    callers = [f"00-{i:032x}-00f067aa0ba902b7-01" for i in range(1, 9)]
    app = create_referrals(settings)
    principal = Principal(subject="adviser", role="call-centre", scopes=ROLE_SCOPES["call-centre"])

    async def take(caller: str, known_types) -> str:
        body = ReferralIn.model_validate(REFERRAL, context={"request_types": known_types})
        with tracing.continued(caller):
            referral, _ = await app.state.intake.take(Intake(referral=body, by=principal))
        return str(referral.id)

    async with running(app):
        known_types = await app.state.request_types.active(app.state.runtime.uow())
        taken = await asyncio.gather(*[take(c, known_types) for c in callers])
        events = await read_topic(
            common["kafka_bootstrap_servers"], common["topics"].referrals, expect=8, event_type=ReferralReceivedV1.type
        )
    trace_of_referral = {e.data["referral_id"]: tracing.parse(e.traceparent).trace_id for _, e in events}
    assert trace_of_referral == {referral_id: c.split("-")[1] for referral_id, c in zip(taken, callers)}


async def test_a_request_without_a_traceparent_starts_a_trace_its_events_carry(common, referrals_db):
    settings = ReferralsSettings(database_url=referrals_db, **common)
    async with running(create_referrals(settings)) as referrals:
        response = await referrals.post(
            "/v1/referrals", json=REFERRAL, headers={**token(settings, "call-centre"), "traceparent": "not-a-trace"}
        )
        [(_, received)] = await read_topic(common["kafka_bootstrap_servers"], common["topics"].referrals, expect=1)
    started = tracing.parse(response.headers["traceparent"])
    assert started is not None and started.trace_id != "not-a-trace"
    assert tracing.parse(received.traceparent).trace_id == started.trace_id
