"""Routing's status and routed events are written without their Pydantic contracts (`Plain`): each is byte for byte
what its contract makes, on the topic and with the trace it should have."""

from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from sqlalchemy import MetaData, Table

from services.fulfilment.announcements import Outgoing, announce
from services.fulfilment.domain import SYSTEM, Assignment, Placement, Series, Status
from shared import tracing
from shared.events import REGISTRY, CloudEvent
from shared.settings import Topics
from shared.uow import UnitOfWork

T0 = datetime(2020, 4, 6, 9, 0, 0, 123456, tzinfo=UTC)
CALLER = ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "kt=1")
AMBIENT = "00-11111111111111111111111111111111-2222222222222222-01"

REFERRAL_ROW = {
    "reference": "KT-2020-000123",
    "channel": "phone",
    "resident": {
        "name": "Margaret Jones",
        "date_of_birth": "1941-03-02",
        "phone": "01843 577000",
        "email": None,
        "address": {"line1": "12 Northdown Road", "line2": None, "town": "Margate", "postcode": "CT9 2RN"},
        "contact_preference": "phone",
        "vulnerabilities": ["shielding"],
        "language": None,
    },
    "referrer": {"name": "Dr Patel", "organisation": "Surgery", "relationship": None, "phone": None, "email": None},
    "consent_to_share": True,
}
REQUEST_ROW = {"details": "Weekly shop", "needed_by": date(2020, 4, 8), "duplicate_of": None}


def at_hub(slug: str) -> Placement:
    return Placement(
        Status.ROUTED,
        reason=f"postcode in {slug}",
        hub=slug,
        district_code="E07000114",
        sla={"accept_within_hours": 4, "fulfil_within_hours": 48},
    )


def opened(placement: Placement, *, series: Series | None = None, occurrence: int | None = None):
    return Assignment.open(
        id="7c1e4a10-59a4-4e34-9d43-6b5b1c3c7f00",
        request_id="5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f00",
        referral_id="9d2b0c1e-59a4-4e34-9d43-6b5b1c3c7f00",
        request_type="food",
        urgency="today",
        received_at=T0,
        placement=placement,
        at=T0 + timedelta(seconds=1),
        series_id=series.id if series else None,
        occurrence=occurrence,
    )


def weekly() -> Series:
    return Series(
        id="5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f00",
        referral_id="9d2b0c1e-59a4-4e34-9d43-6b5b1c3c7f00",
        frequency="weekly",
        starts_at=T0,
        occurrences=4,
        ends_on=date(2020, 5, 1),
    )


def a_new_request_at_its_hub():
    a, change = opened(at_hub("thanet"))
    return a, [change], None


def a_new_request_in_triage():
    a, change = opened(Placement(Status.TRIAGE, reason="postcode not found", pick_up_within=timedelta(hours=4)))
    return a, [change], None


def a_series_occurrence_at_its_hub():
    series = weekly()
    a, change = opened(at_hub("thanet"), series=series, occurrence=1)
    return a, [change], series


def a_rejection_sent_on_to_the_right_hub():
    a, _ = opened(at_hub("thanet"))
    changes = a.reject(
        reason="wrong-district",
        by="hub-worker",
        at=T0 + timedelta(hours=1),
        named=at_hub("dover"),
        triage_within=timedelta(hours=4),
    )
    return a, changes, None


def a_later_occurrence_fulfilled():
    series = weekly()
    a, _ = opened(at_hub("thanet"), series=series, occurrence=2)
    changes = a.move(Status.ACCEPTED, by="hub-worker", at=T0 + timedelta(hours=2))
    changes += a.move(Status.IN_PROGRESS, by="hub-worker", at=T0 + timedelta(hours=3))
    changes += a.move(Status.FULFILLED, by="hub-worker", at=T0 + timedelta(hours=4), outcome="delivered")
    return a, changes, series


def a_cancellation_at_the_hub():
    a, _ = opened(at_hub("thanet"))
    return a, a.cancel(reason="no-longer-needed", by=SYSTEM, at=T0 + timedelta(hours=5)), None


CASES = [
    a_new_request_at_its_hub,
    a_new_request_in_triage,
    a_series_occurrence_at_its_hub,
    a_rejection_sent_on_to_the_right_hub,
    a_later_occurrence_fulfilled,
    a_cancellation_at_the_hub,
]


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


def announced(case, *, trace):
    a, changes, series = case()
    uow = UnitOfWork(None, source="/kent-together/fulfilment", outbox=Table("outbox", MetaData()), topics=Topics())
    out = Outgoing(Topics())
    with tracing.continued(AMBIENT):
        announce(
            uow,
            out,
            a=a,
            changes=changes,
            request_row=REQUEST_ROW,
            referral_row=REFERRAL_ROW,
            series=series,
            trace=trace,
        )
    return uow._events, out.feed


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_each_event_is_byte_for_byte_what_its_contract_makes(case):
    events, _ = announced(case, trace=CALLER)

    assert events
    for _, _, event in events:
        envelope = orjson.loads(event.to_bytes())
        contract = REGISTRY[envelope["type"]]
        model = contract.model_validate(envelope["data"])
        made_by_the_contract = CloudEvent(
            id=envelope["id"],
            source="/kent-together/fulfilment",
            type=contract.type,
            time=envelope["time"],
            subject=model.subject(),
            traceparent=envelope["traceparent"],
            tracestate=envelope.get("tracestate"),
            data=model.model_dump(mode="json"),
        )
        assert event.to_bytes() == made_by_the_contract.to_bytes()
        assert (str(event.id), event.type, event.subject) == (envelope["id"], contract.type, model.subject())
        assert trace_id(envelope["traceparent"]) == trace_id(CALLER[0])


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_each_event_goes_on_the_topic_its_contract_declares_keyed_by_the_referral(case):
    a, changes, _ = case()
    topics = Topics()

    events, feed = announced(case, trace=CALLER)

    for topic, key, event in events:
        contract = REGISTRY[event.type]
        if contract.topics == ("hubs",):
            assert topic in {topics.hub(c.to_hub) for c in changes} | {topics.hub(c.from_hub) for c in changes}
        else:
            assert [topic] == [getattr(topics, name) for name in contract.topics]
        assert key == a.referral_id
    assert [event for _, _, event in feed] == [event for topic, _, event in events if topic != topics.assignment_status]


def test_without_a_callers_trace_the_events_carry_the_current_one():
    events, _ = announced(a_rejection_sent_on_to_the_right_hub, trace=None)

    assert {trace_id(orjson.loads(event.to_bytes())["traceparent"]) for _, _, event in events} == {trace_id(AMBIENT)}


def test_a_rejection_sent_on_tells_the_first_hub_it_is_withdrawn_and_the_second_it_is_theirs():
    events, feed = announced(a_rejection_sent_on_to_the_right_hub, trace=CALLER)

    told = [(hub, orjson.loads(event.to_bytes())) for hub, _, event in feed]
    assert [(hub, e["type"].rsplit(".", 2)[-2]) for hub, e in told] == [("thanet", "withdrawn"), ("dover", "routed")]
    routed = told[1][1]["data"]
    assert routed["previous_hub"] == "thanet"
    assert routed["request"]["needed_by"] == "2020-04-08"
    assert routed["resident"] == REFERRAL_ROW["resident"]
    statuses = [orjson.loads(e.to_bytes())["data"] for _, _, e in events if e.type.endswith("status-changed.v1")]
    assert [(s["previous_status"], s["status"]) for s in statuses] == [("routed", "rejected"), ("rejected", "routed")]
