"""Recurring requests in the figures: every occurrence is a request; a series counts once."""

import uuid
from datetime import UTC, datetime, timedelta

from services.reporting import domain
from shared.events import AssignmentStatusChangedV1

AT = datetime(2026, 12, 1, 9, tzinfo=UTC)
SERIES = uuid.uuid4()
REFERRAL = uuid.uuid4()


def occurrence(number: int, request_id: uuid.UUID, *, status="routed", channel=None) -> AssignmentStatusChangedV1:
    opened = AT + timedelta(weeks=number - 1)
    return AssignmentStatusChangedV1(
        assignment_id=uuid.uuid4(),
        request_id=request_id,
        referral_id=REFERRAL,
        request_type="food",
        urgency="this-week",
        status=status,
        hub="thanet",
        district_code="E07000114",
        received_at=opened,
        changed_at=opened,
        series_id=SERIES,
        occurrence=number,
        frequency="weekly",
        channel=channel,
    )


def fact_of(event: AssignmentStatusChangedV1) -> dict:
    fact = domain.new_request_fact(str(event.request_id), str(event.referral_id))
    domain.apply_status_changed(fact, event)
    return fact


def keys_by_dimension(fact: dict, dimension: str) -> list:
    return [key for key in domain.request_keys(fact) if key[1] == domain.ALL_DISTRICTS and key[2] == dimension]


def test_the_first_occurrence_counts_a_series_and_an_occurrence_and_a_request():
    fact = fact_of(occurrence(1, SERIES))
    assert keys_by_dimension(fact, "series") == [(AT.date(), "*", "series", "weekly")]
    assert keys_by_dimension(fact, "recurring") == [(AT.date(), "*", "recurring", "weekly")]
    assert keys_by_dimension(fact, "type") == [(AT.date(), "*", "type", "food")]


def test_a_later_occurrence_is_a_request_and_an_occurrence_but_not_another_series_on_its_own_day():
    fact = fact_of(occurrence(3, uuid.uuid4(), channel="phone"))
    week_three = (AT + timedelta(weeks=2)).date()
    assert keys_by_dimension(fact, "series") == []
    assert keys_by_dimension(fact, "recurring") == [(week_three, "*", "recurring", "weekly")]
    assert keys_by_dimension(fact, "channel") == [(week_three, "*", "channel", "phone")]
    assert (fact["series_id"], fact["occurrence"]) == (str(SERIES), 3)


def test_a_one_off_request_adds_nothing_to_the_series_figures():
    event = occurrence(1, uuid.uuid4()).model_copy(update={"series_id": None, "occurrence": None, "frequency": None})
    fact = fact_of(event)
    assert keys_by_dimension(fact, "series") == keys_by_dimension(fact, "recurring") == []
