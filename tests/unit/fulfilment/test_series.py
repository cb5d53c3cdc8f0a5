"""Recurring requests: a series' schedule, when the next occurrence opens, and when the series ends."""

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from services.fulfilment.domain import (
    DEFAULT_SLA,
    Assignment,
    Placement,
    Series,
    Status,
    add_months,
    occurrence_request_id,
)

T0 = datetime(2020, 4, 6, 9, 0, tzinfo=UTC)
SERIES_ID = str(uuid.UUID("5b0e2b55-0a47-4d55-9a3e-1d1f3b7d2c10"))
THANET = Placement(Status.ROUTED, reason="in Thanet (E07000114)", hub="thanet", district_code="E07000114")


def series(**overrides) -> Series:
    values = dict(id=SERIES_ID, referral_id="ref1", frequency="weekly", starts_at=T0)
    values.update(overrides)
    return Series(**values)


def first(recurs: Series, urgency: str = "this-week") -> Assignment:
    a, _ = Assignment.open(
        id="a1",
        request_id=recurs.id,
        referral_id="ref1",
        request_type="food",
        urgency=urgency,
        received_at=T0,
        placement=THANET,
        at=T0,
        series_id=recurs.id,
        occurrence=1,
    )
    return a


def closed(a: Assignment, status: Status = Status.FULFILLED, *, at: datetime, outcome: str | None = None) -> None:
    a.move(Status.ACCEPTED, by="ann", at=at)
    a.move(Status.IN_PROGRESS, by="ann", at=at)
    a.move(status, by="ann", at=at, outcome=outcome)


def test_weekly_fortnightly_and_monthly_occurrences_fall_on_the_schedule_from_the_first():
    assert series().scheduled_at(3) == T0 + timedelta(weeks=2)
    assert series(frequency="fortnightly").scheduled_at(3) == T0 + timedelta(weeks=4)
    end_of_january = datetime(2027, 1, 31, 10, 0, tzinfo=UTC)
    monthly = series(frequency="monthly", starts_at=end_of_january)
    assert [monthly.scheduled_at(n).date() for n in (1, 2, 3)] == [
        date(2027, 1, 31),
        date(2027, 2, 28),
        date(2027, 3, 31),  # counted from the first, so February's short month does not drag March back
    ]
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)


def test_fulfilling_an_occurrence_opens_the_next_for_the_same_hub_due_by_the_schedule():
    recurs = series(occurrences=6)
    a = first(recurs)
    fulfilled_at = T0 + timedelta(days=2)
    closed(a, at=fulfilled_at)
    assert recurs.after_closed(a, at=fulfilled_at) == 2
    assert recurs.made == 2
    sla = DEFAULT_SLA["this-week"]
    following, change = recurs.open_occurrence(2, after=a, placement=THANET, id="a2", at=fulfilled_at)
    assert (following.status, following.hub, following.occurrence, following.series_id) == (
        Status.ROUTED,
        "thanet",
        2,
        SERIES_ID,
    )
    assert following.request_id == occurrence_request_id(SERIES_ID, 2) != SERIES_ID
    assert following.routed_at == fulfilled_at  # it reached the hub when the first was done…
    assert following.accept_due_at == T0 + timedelta(weeks=1) + sla.accept  # …but is due a week after the first
    assert following.fulfil_due_at == T0 + timedelta(weeks=1) + sla.fulfil
    assert change.to_status is Status.ROUTED and change.to_hub == "thanet"
    assert recurs.label(2) == "weekly, 2 of 6"


def test_an_occurrence_fulfilled_late_does_not_push_the_next_ones_deadline_back():
    recurs = series()
    a = first(recurs)
    late = T0 + timedelta(days=12)  # the first week's shop done in week two
    closed(a, at=late)
    number = recurs.after_closed(a, at=late)
    following, _ = recurs.open_occurrence(number, after=a, placement=THANET, id="a2", at=late)
    assert following.fulfil_due_at == T0 + timedelta(weeks=1) + DEFAULT_SLA["this-week"].fulfil
    assert following.is_overdue(late + timedelta(days=3))


def test_the_series_ends_at_its_count():
    recurs = series(occurrences=2)
    a = first(recurs)
    closed(a, at=T0)
    assert recurs.after_closed(a, at=T0) == 2
    second, _ = recurs.open_occurrence(2, after=a, placement=THANET, id="a2", at=T0)
    closed(second, at=T0 + timedelta(days=7))
    assert recurs.after_closed(second, at=T0 + timedelta(days=7)) is None
    assert (recurs.is_open, recurs.ended_reason) == (False, "completed")
    assert not recurs.continues_after(2)


def test_the_series_ends_at_its_end_date():
    recurs = series(ends_on=(T0 + timedelta(days=10)).date())  # room for the second (day 7), not the third (day 14)
    assert recurs.includes(2) and not recurs.includes(3)
    assert recurs.label(2) == "weekly, 2 (until 2020-04-16)"
    assert recurs.next_due_at(2, DEFAULT_SLA["routine"]) is None
    assert recurs.next_due_at(1, DEFAULT_SLA["routine"]) == T0 + timedelta(weeks=1) + DEFAULT_SLA["routine"].fulfil


def test_an_open_ended_series_goes_on_until_it_is_cancelled():
    recurs = series()
    assert recurs.includes(500) and recurs.label(4) == "weekly, 4"
    a = first(recurs)
    a.move(Status.CANCELLED, by="admin", at=T0, reason="no-longer-needed")
    assert recurs.after_closed(a, at=T0) is None
    assert (recurs.is_open, recurs.ended_reason) == (False, "cancelled")


@pytest.mark.parametrize(
    ("outcome", "opens_next"),
    [("resident-unreachable", True), ("no-capacity", True), ("moved-away", False), ("need-met-elsewhere", False)],
)
def test_unable_to_fulfil_one_week_opens_the_next_unless_the_need_has_gone(outcome, opens_next):
    recurs = series()
    a = first(recurs)
    closed(a, Status.UNABLE_TO_FULFIL, at=T0, outcome=outcome)
    assert (recurs.after_closed(a, at=T0) is not None) is opens_next
    assert recurs.is_open is opens_next
    if not opens_next:
        assert recurs.ended_reason == f"unable_to_fulfil: {outcome}"


def test_an_older_occurrence_or_an_ended_series_opens_nothing():
    recurs = series()
    a = first(recurs)
    closed(a, at=T0)
    assert recurs.after_closed(a, at=T0) == 2
    assert recurs.after_closed(a, at=T0) is None  # the same close told twice: occurrence 2 is open already
    assert recurs.made == 2
    recurs.end(reason="erased", at=T0)
    assert recurs.next_occurrence() is None and not recurs.end(reason="erased", at=T0)


def test_an_occurrences_request_id_is_the_same_every_time_it_is_worked_out():
    assert occurrence_request_id(SERIES_ID, 1) == SERIES_ID
    assert occurrence_request_id(SERIES_ID, 3) == occurrence_request_id(SERIES_ID, 3)
    assert occurrence_request_id(SERIES_ID, 3) != occurrence_request_id(SERIES_ID, 4)


def test_a_series_has_a_known_frequency():
    with pytest.raises(ValueError):
        series(frequency="daily")
