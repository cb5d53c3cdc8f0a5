"""Intake builds its events and its 201 body straight from the aggregate (no Pydantic on the hot path): each is
what its contract or model makes, and each event goes where its contract says."""

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from sqlalchemy import MetaData, Table

from services.referrals import intake, repository
from services.referrals.schemas import ReferralIn, ReferralOut
from shared import tracing
from shared.auth import ROLE_SCOPES, Principal
from shared.events import REGISTRY, CloudEvent
from shared.settings import Topics
from shared.uow import UnitOfWork

BY = Principal(subject="adviser-1", role="admin", scopes=ROLE_SCOPES["admin"])

BODIES = {
    "everything given": {
        "channel": "partner",
        "received_at": (datetime.now(timezone(timedelta(hours=1))) - timedelta(days=3)).isoformat(),
        "resident": {
            "name": "Margaret Jones",
            "date_of_birth": "1941-03-02",
            "phone": "01843 577000",
            "email": "mj@example.org",
            "address": {"line1": "12 Northdown Road", "line2": "Flat 2", "town": "Margate", "postcode": "ct9 2rn"},
            "contact_preference": "phone",
            "vulnerabilities": ["shielding", "lives-alone"],
            "language": "Polish",
        },
        "referrer": {
            "name": "Dr Patel",
            "organisation": "Northdown Surgery",
            "relationship": "GP",
            "phone": "01843 000000",
            "email": "gp@example.org",
        },
        "consent": {"to_share": False, "given_by": "referrer-on-behalf"},
        "requests": [
            {"type": "food", "details": "Weekly shop", "needed_by": str(datetime.now().date())},
            {"type": "prescription", "urgency": "routine"},
        ],
    },
    "the least": {
        "channel": "phone",
        "resident": {"name": "Jo Smith", "address": {"line1": "1 High St", "postcode": "ME14 1XX"}},
        "consent": {"to_share": True},
        "requests": [{"type": "food"}],
    },
}


def unit_of_work() -> UnitOfWork:
    return UnitOfWork(None, source="/kent-together/referrals", outbox=Table("outbox", MetaData()), topics=Topics())


def taken(body, *, backfilled=False):
    referral = ReferralIn.model_validate(body, context={"request_types": {"food", "prescription"}})
    by = BY if backfilled else Principal(subject="adviser-1", role="call-centre", scopes=frozenset())
    return referral, intake._new_referral(
        intake.Intake(referral, by),
        fingerprint="h",
        now=datetime.now(UTC),
        earlier={"food": "5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f00"},
        resident_id=None,
    )


def published(referral, *, backfilled) -> list[tuple[str, str, dict]]:
    uow = unit_of_work()
    with tracing.continued("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        intake._publish_received(uow, referral, backfilled=backfilled)
    events = []
    for topic, key, event in uow._events:
        envelope = orjson.loads(event.to_bytes())
        assert envelope.pop("id") and envelope.pop("time")
        assert envelope["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
        envelope.pop("traceparent")
        events.append((topic, key, envelope))
    return events


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
@pytest.mark.parametrize("backfilled", [False, True])
def test_events_built_from_the_referral_are_the_ones_the_contracts_make_on_their_declared_topics(body, backfilled):
    _, referral = taken(body)
    topics = Topics()

    events = published(referral, backfilled=backfilled)

    assert len(events) == 1 + len(referral.requests)
    for topic, key, envelope in events:
        event = CloudEvent.model_validate(
            {**envelope, "id": "5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f01", "time": "2020-04-01T00:00:00Z"}
        )
        contract = REGISTRY[event.type]
        assert contract.model_validate(event.data).model_dump(mode="json") == event.data
        assert [topic] == [getattr(topics, name) for name in contract.topics]
        assert key == referral.id
    received = events[0][2]["data"]
    assert received["backfilled"] is backfilled
    assert received["resident"]["name"] == body["resident"]["name"]
    assert [r["duplicate_of"] for r in received["requests"]][0] == "5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f00"
    assert {e[2]["data"].get("postcode_district") for e in events[1:]} == {
        body["resident"]["address"]["postcode"].upper().split()[0]
    }


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_the_201_body_written_without_the_model_is_the_models_json(body):
    _, referral = taken(body)

    body_bytes = repository.to_json(referral)

    model = ReferralOut.model_validate(repository.out(referral))
    assert body_bytes == model.model_dump_json().encode()
    assert intake.Taken.of(referral).out() == model
    assert model.resident.name == body["resident"]["name"]
