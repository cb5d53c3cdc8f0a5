import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.structs import ConsumerRecord

from services.reporting.app import ReportingSettings, consumed_topics, create_app
from services.reporting.handlers import projection_handlers
from shared.events import (
    AssignmentEscalatedV1,
    AssignmentStatusChangedV1,
    CloudEvent,
    EventData,
    RequestCancelledV1,
    RequestReceivedV1,
)
from tests.support.apps import running, test_topics, token

APRIL = datetime(2020, 4, 1, 9, 0, tzinfo=UTC)
THANET, CANTERBURY = "E07000114", "E07000106"


def make_settings(*, database_url, broker, signing_key, unique, var_dir, **overrides) -> ReportingSettings:
    values = dict(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        jwt_signing_key=signing_key,
        topics=test_topics(unique),
        var_dir=var_dir,
        log_json=False,
        consumer_group=f"reporting-{unique}",
        consumer_session_timeout_ms=6000,
    )
    values.update(overrides)
    return ReportingSettings(**values)


@pytest.fixture
def settings(database_url, broker, signing_key, unique, var_dir):
    return make_settings(
        database_url=database_url, broker=broker, signing_key=signing_key, unique=unique, var_dir=var_dir
    )


@pytest.fixture
async def client(settings):
    """The service without its Kafka consumer: events are handed to it with `deliver`."""
    app = create_app(settings.model_copy(update={"run_consumers": False}))
    async with running(app) as http:
        http.app = app
        yield http


def analyst(settings) -> dict[str, str]:
    return token(settings, "analyst", subject="analyst")


async def deliver(app, *items: EventData | CloudEvent) -> list[CloudEvent]:
    """Hand events to the service's own consumer code (inbox, handler, commit), as records from a topic."""
    runtime = app.state.runtime
    settings = runtime.settings
    consumer = runtime.consumer(
        group=settings.consumer_group, topics=consumed_topics(settings), handlers=projection_handlers()
    )
    sent = []
    for item in items:
        event = item if isinstance(item, CloudEvent) else item.envelope(source="/kent-together/test")
        value = event.to_bytes()
        record = ConsumerRecord(
            topic="test",
            partition=0,
            offset=0,
            timestamp=0,
            timestamp_type=0,
            key=event.subject.encode(),
            value=value,
            checksum=None,
            serialized_key_size=len(event.subject),
            serialized_value_size=len(value),
            headers=(),
        )
        await consumer.process(record)
        sent.append(event)
    assert consumer.dead_lettered_total == 0, "an event was dead-lettered"
    return sent


class Story:
    """One request's reporting-safe events, as referrals and fulfilment publish them."""

    def __init__(
        self,
        *,
        request_type="food",
        channel="phone",
        district_code=THANET,
        hub="thanet",
        received_at=APRIL,
        urgency="today",
    ):
        self.referral_id, self.request_id, self.assignment_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        self.request_type, self.channel, self.district_code, self.hub = request_type, channel, district_code, hub
        self.received_at, self.urgency = received_at, urgency
        self.status = None

    def received(self) -> RequestReceivedV1:
        return RequestReceivedV1(
            referral_id=self.referral_id,
            request_id=self.request_id,
            request_type=self.request_type,
            channel=self.channel,
            postcode_district="CT9",
            urgency=self.urgency,
            received_at=self.received_at,
        )

    def status_changed(self, status: str, *, after: timedelta, outcome: str | None = None) -> AssignmentStatusChangedV1:
        at = self.received_at + after
        event = AssignmentStatusChangedV1(
            assignment_id=self.assignment_id,
            request_id=self.request_id,
            referral_id=self.referral_id,
            request_type=self.request_type,
            urgency=self.urgency,
            status=status,
            previous_status=self.status,
            hub=None if status in ("out_of_area", "triage", "passed_on") else self.hub,
            district_code=self.district_code,
            received_at=self.received_at,
            changed_at=at,
            routed_at=at if status == "routed" else None,
            accepted_at=at if status == "accepted" else None,
            closed_at=at if status in ("fulfilled", "unable_to_fulfil", "cancelled", "passed_on") else None,
            outcome=outcome,
        )
        self.status = status
        return event

    def escalated(self, deadline: str, *, after: timedelta) -> AssignmentEscalatedV1:
        return AssignmentEscalatedV1(
            assignment_id=self.assignment_id,
            request_id=self.request_id,
            referral_id=self.referral_id,
            request_type=self.request_type,
            urgency=self.urgency,
            status=self.status or "routed",
            hub=self.hub,
            district_code=self.district_code,
            deadline=deadline,
            due_at=self.received_at + after,
            escalated_at=self.received_at + after,
        )

    def cancelled(self, *, after: timedelta) -> RequestCancelledV1:
        return RequestCancelledV1(
            referral_id=self.referral_id,
            request_id=self.request_id,
            request_type=self.request_type,
            reason="no-longer-needed",
            cancelled_at=self.received_at + after,
        )


async def figure(client, settings, path: str, **params) -> dict:
    response = await client.get(f"/v1/figures/{path}", params=params, headers=analyst(settings))
    assert response.status_code == 200, response.text
    return response.json()


def by(rows: list[dict], key: str) -> dict:
    return {row[key]: row["count"] for row in rows}
