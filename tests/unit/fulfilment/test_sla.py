"""SLA: due times by urgency, per-hub hours, and what counts as overdue."""

from datetime import UTC, datetime, timedelta

import pytest

from services.fulfilment.domain import (
    Assignment,
    Placement,
    Status,
    sla_for,
    validate_sla_overrides,
)

T0 = datetime(2020, 4, 6, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


def routed(urgency: str, sla=None) -> Assignment:
    assignment, _ = Assignment.open(
        id="a1",
        request_id="r1",
        referral_id="ref1",
        request_type="food",
        urgency=urgency,
        received_at=T0,
        placement=Placement(Status.ROUTED, reason="in Thanet", hub="thanet", sla=sla or {}),
        at=T0,
    )
    return assignment


@pytest.mark.parametrize(
    ("urgency", "accept", "fulfil"),
    [
        ("today", 4 * H, 24 * H),
        ("within-48-hours", 24 * H, 48 * H),
        ("this-week", 72 * H, 7 * 24 * H),
        ("routine", 5 * 24 * H, 14 * 24 * H),
    ],
)
def test_due_times_follow_the_county_defaults_by_urgency(urgency, accept, fulfil):
    assignment = routed(urgency)

    assert assignment.accept_due_at == T0 + accept
    assert assignment.fulfil_due_at == T0 + fulfil


def test_a_hubs_own_hours_replace_the_default_only_where_set():
    assignment = routed("today", sla={"today": {"accept_hours": 2}})

    assert assignment.accept_due_at == T0 + 2 * H
    assert assignment.fulfil_due_at == T0 + 24 * H


def test_an_unknown_urgency_is_treated_as_routine_not_never_due():
    assert sla_for("whenever") == sla_for("routine")


def test_not_accepted_in_time_is_overdue_to_accept():
    assignment = routed("today")

    assert assignment.overdue_deadlines(T0 + 4 * H - timedelta(seconds=1)) == []
    assert assignment.overdue_deadlines(T0 + 4 * H) == ["accept"]
    assert assignment.is_overdue(T0 + 5 * H)


def test_accepting_stops_the_accept_clock_but_not_the_fulfil_clock():
    assignment = routed("today")
    assignment.move(Status.ACCEPTED, by="jo", at=T0 + H)

    assert assignment.overdue_deadlines(T0 + 5 * H) == []
    assert assignment.overdue_deadlines(T0 + 25 * H) == ["fulfil"]


def test_never_accepted_and_past_both_deadlines_is_overdue_for_both():
    assert routed("today").overdue_deadlines(T0 + 25 * H) == ["accept", "fulfil"]


def test_a_closed_assignment_is_never_overdue():
    assignment = routed("today")
    assignment.cancel(reason="no-longer-needed", by="referrals", at=T0)

    assert assignment.overdue_deadlines(T0 + 1000 * H) == []


def test_a_triaged_request_is_overdue_if_nobody_places_it_in_time():
    assignment, _ = Assignment.open(
        id="a1",
        request_id="r1",
        referral_id="ref1",
        request_type="food",
        urgency="today",
        received_at=T0,
        placement=Placement(Status.TRIAGE, reason="unknown", pick_up_within=4 * H),
        at=T0,
    )

    assert assignment.fulfil_due_at is None
    assert assignment.overdue_deadlines(T0 + 4 * H) == ["accept"]


def test_re_routing_restarts_the_clocks_and_clears_escalations():
    assignment = routed("today")
    assignment.accept_escalated_at = T0 + 5 * H

    assignment.reroute(Placement(Status.ROUTED, reason="moved", hub="dover"), at=T0 + 6 * H, reason="moved")

    assert assignment.accept_due_at == T0 + 10 * H
    assert assignment.accept_escalated_at is None


def test_sla_settings_are_checked_field_by_field():
    errors = validate_sla_overrides(
        {
            "today": {"accept_hours": 0, "fulfil_minutes": 3},
            "someday": {"accept_hours": 1},
            "routine": {"accept_hours": 48, "fulfil_hours": 24},
        }
    )

    assert {e["field"] for e in errors} == {
        "sla.today.accept_hours",
        "sla.today.fulfil_minutes",
        "sla.someday",
        "sla.routine",
    }
    assert validate_sla_overrides({"today": {"accept_hours": 2, "fulfil_hours": 12}}) == []
