"""Intake builds its events straight from the rows (no Pydantic on the hot path): the same events as the contracts make."""

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from sqlalchemy import MetaData, Table

from services.referrals import service
from services.referrals.schemas import ReferralIn
from shared import tracing
from shared.auth import ROLE_SCOPES, Principal
from shared.events import REGISTRY, CloudEvent
from shared.settings import Topics
from shared.uow import UnitOfWork

BY = Principal(subject="adviser-1", role="admin", scopes=ROLE_SCOPES["admin"])

BODIES = {
    "everything given": {
        "channel": "partner", "received_at": (datetime.now(timezone(timedelta(hours=1))) - timedelta(days=3)).isoformat(),
        "resident": {
            "name": "Margaret Jones", "date_of_birth": "1941-03-02", "phone": "01843 577000",
            "email": "mj@example.org", "address": {"line1": "12 Northdown Road", "line2": "Flat 2", "town": "Margate",
                                                   "postcode": "ct9 2rn"},
            "contact_preference": "phone", "vulnerabilities": ["shielding", "lives-alone"], "language": "Polish",
        },
        "referrer": {"name": "Dr Patel", "organisation": "Northdown Surgery", "relationship": "GP",
                     "phone": "01843 000000", "email": "gp@example.org"},
        "consent": {"to_share": False, "given_by": "referrer-on-behalf"},
        "requests": [{"type": "food", "details": "Weekly shop", "needed_by": str(datetime.now().date())},
                     {"type": "prescription", "urgency": "routine"}],
    },
    "the least": {
        "channel": "phone", "resident": {"name": "Jo Smith", "address": {"line1": "1 High St", "postcode": "ME14 1XX"}},
        "consent": {"to_share": True}, "requests": [{"type": "food"}],
    },
}


def unit_of_work() -> UnitOfWork:
    return UnitOfWork(None, source="/kent-together/referrals", outbox=Table("outbox", MetaData()))


def published(publish, row, rows, *, backfilled) -> list[tuple[str, str, dict]]:
    uow = unit_of_work()
    with tracing.continued("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        publish(uow, row, rows, backfilled=backfilled)
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
def test_events_built_from_rows_are_the_ones_the_contracts_make(body, backfilled):
    referral = ReferralIn.model_validate(body, context={"request_types": {"food", "prescription"}})
    intake = service.Intake(referral, BY)
    row, rows = service._new_referral_rows(intake, fingerprint="h", now=datetime.now(timezone.utc),
                                           earlier={"food": "5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f00"})
    topics = Topics()

    fast = published(lambda u, r, q, backfilled: service._publish_received_rows(u, r, q, topics=topics,
                                                                                backfilled=backfilled),
                     row, rows, backfilled=backfilled)
    reference = published(lambda u, r, q, backfilled: service._publish_received(u, service._referral_out(r, q),
                                                                                topics=topics, backfilled=backfilled),
                          row, rows, backfilled=backfilled)

    assert fast == reference
    assert len(fast) == 1 + len(rows)
    for _, _, envelope in fast:
        event = CloudEvent.model_validate({**envelope, "id": "5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f01",
                                           "time": "2020-04-01T00:00:00Z"})
        contract = REGISTRY[event.type]
        assert contract.model_validate(event.data).model_dump(mode="json") == event.data


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_the_201_body_written_without_the_model_is_the_models_json(body):
    referral = ReferralIn.model_validate(body, context={"request_types": {"food", "prescription"}})
    row, rows = service._new_referral_rows(service.Intake(referral, BY), fingerprint="h",
                                           now=datetime.now(timezone.utc),
                                           earlier={"food": "5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f00"})

    taken = service._taken(referral, row, rows)

    assert taken.id == row["id"]
    assert taken.body == service._referral_out(row, rows).model_dump_json().encode()
    assert taken.out() == service._referral_out(row, rows)
