"""A request that repeats, as referrals takes it: its recurrence checked field by field, open while the series goes on."""

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from services.referrals import domain
from services.referrals.domain import CLOSED, OPEN, Referral, Request
from services.referrals.schemas import RequestIn
from shared.errors import field_errors

TODAY = date(2026, 12, 1)


def errors_of(body: dict) -> list[dict]:
    with pytest.raises(ValidationError) as raised:
        RequestIn.model_validate(body)
    return field_errors(raised.value.errors())


def test_a_request_may_repeat_weekly_fortnightly_or_monthly_until_a_date_a_count_or_cancelled():
    for recurrence in ({"frequency": "weekly", "occurrences": 6}, {"frequency": "monthly", "ends_on": "2027-06-01"}):
        assert RequestIn.model_validate({"type": "food", "recurrence": recurrence}).recurrence is not None
    open_ended = RequestIn.model_validate({"type": "food", "recurrence": {"frequency": "fortnightly"}})
    assert (open_ended.recurrence.ends_on, open_ended.recurrence.occurrences) == (None, None)


@pytest.mark.parametrize(
    ("recurrence", "field", "reason"),
    [
        ({"frequency": "weekly", "occurrences": 0}, "recurrence.occurrences", "at least 1"),
        ({"frequency": "weekly", "occurrences": 500}, "recurrence.occurrences", "over 104"),
        ({"frequency": "weekly", "occurrences": 3, "ends_on": "2027-01-01"}, "recurrence.occurrences", "not both"),
        ({"frequency": "daily"}, "recurrence.frequency", "weekly"),
    ],
)
def test_a_recurrence_that_cannot_be_met_names_its_field_and_why(recurrence, field, reason):
    errors = errors_of({"type": "food", "recurrence": recurrence})
    assert [e["field"] for e in errors] == [field]
    assert reason in errors[0]["reason"]


def test_an_end_date_before_the_first_occurrence_is_refused_naming_the_request_and_the_date():
    requests = [
        RequestIn.model_validate({"type": "food"}),
        RequestIn.model_validate(
            {
                "type": "prescription",
                "needed_by": "2026-12-08",
                "recurrence": {"frequency": "weekly", "ends_on": "2026-12-07"},
            }
        ),
        RequestIn.model_validate(
            {"type": "befriending", "recurrence": {"frequency": "weekly", "ends_on": "2026-11-30"}}
        ),
    ]
    errors = domain.recurrence_errors(requests, received=TODAY)
    assert [e["field"] for e in errors] == ["requests[1].recurrence.ends_on", "requests[2].recurrence.ends_on"]
    assert "2026-12-08, the date it is needed by" in errors[0]["reason"]
    assert "2026-12-01, the day the referral is received" in errors[1]["reason"]
    same_day = RequestIn.model_validate(
        {"type": "food", "recurrence": {"frequency": "weekly", "ends_on": "2026-12-01"}}
    )
    assert domain.recurrence_errors([same_day], received=TODAY) == []


def weekly_referral() -> Referral:
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    return Referral(
        id="ref1",
        reference="KT-7F3K-9QX2",
        channel="phone",
        received_at=at,
        created_at=at,
        updated_at=at,
        created_by="adviser",
        created_by_role="call-centre",
        personal={"postcode": "CT9 2RN"},
        consent={"to_share": True},
        requests=[Request(id="r1", type="food", position=0, urgency="this-week", recurrence={"frequency": "weekly"})],
    )


def test_a_recurring_request_stays_open_while_its_series_goes_on_and_closes_with_its_last_occurrence():
    referral = weekly_referral()
    at = datetime(2026, 12, 3, 9, tzinfo=UTC)
    referral.record_progress(
        "r1", progress="fulfilled", hub="thanet", at=at, outcome=None, closed_at=at, occurrence=1, series_continues=True
    )
    assert (referral.requests[0].status, referral.status, referral.requests[0].occurrence) == (OPEN, OPEN, 1)
    later = datetime(2026, 12, 10, 9, tzinfo=UTC)
    referral.record_progress(
        "r1", progress="routed", hub="thanet", at=later, outcome=None, closed_at=None, occurrence=2
    )
    assert referral.requests[0].occurrence == 2
    last = datetime(2026, 12, 11, 9, tzinfo=UTC)
    referral.record_progress(
        "r1",
        progress="fulfilled",
        hub="thanet",
        at=last,
        outcome=None,
        closed_at=last,
        occurrence=2,
        series_continues=False,
    )
    assert (referral.requests[0].status, referral.status) == (CLOSED, CLOSED)
