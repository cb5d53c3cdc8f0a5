"""An assignment's lifecycle: what may follow what, what each step needs, and what is recorded."""

from datetime import UTC, datetime, timedelta

import pytest

from services.fulfilment.domain import (
    ALLOWED,
    CLOSED,
    SYSTEM,
    Assignment,
    Placement,
    Status,
    check_actor_may,
)
from shared.errors import Forbidden, InvalidTransition, ValidationFailed

T0 = datetime(2020, 4, 6, 9, 0, tzinfo=UTC)
TRIAGE_WITHIN = timedelta(hours=4)


def thanet(**overrides) -> Placement:
    return Placement(
        Status.ROUTED, reason="in Thanet (E07000114)", hub="thanet", district_code="E07000114", **overrides
    )


def routed(urgency="today", placement=None) -> Assignment:
    assignment, _ = Assignment.open(
        id="a1",
        request_id="r1",
        referral_id="ref1",
        request_type="food",
        urgency=urgency,
        received_at=T0,
        placement=placement or thanet(),
        at=T0,
    )
    return assignment


def in_progress() -> Assignment:
    assignment = routed()
    assignment.move(Status.ACCEPTED, by="hub-staff", at=T0)
    assignment.move(Status.IN_PROGRESS, by="hub-staff", at=T0)
    return assignment


def test_a_new_assignment_records_where_routing_placed_it_and_why():
    assignment, change = Assignment.open(
        id="a1",
        request_id="r1",
        referral_id="ref1",
        request_type="food",
        urgency="today",
        received_at=T0,
        placement=thanet(),
        at=T0,
    )

    assert assignment.status is Status.ROUTED and assignment.hub == "thanet"
    assert change.from_status is None and change.to_status is Status.ROUTED
    assert change.by == SYSTEM and change.to_hub == "thanet"
    assert change.reason == "in Thanet (E07000114)"


def test_the_happy_path_routed_accepted_in_progress_fulfilled_records_who_and_when():
    assignment = routed()
    history = []
    history += assignment.move(Status.ACCEPTED, by="jo@thanet", at=T0 + timedelta(hours=1))
    history += assignment.move(Status.IN_PROGRESS, by="jo@thanet", at=T0 + timedelta(hours=2))
    history += assignment.move(Status.FULFILLED, by="sam@thanet", at=T0 + timedelta(hours=5), outcome="delivered")

    assert [(c.from_status, c.to_status, c.by) for c in history] == [
        (Status.ROUTED, Status.ACCEPTED, "jo@thanet"),
        (Status.ACCEPTED, Status.IN_PROGRESS, "jo@thanet"),
        (Status.IN_PROGRESS, Status.FULFILLED, "sam@thanet"),
    ]
    assert assignment.accepted_at == T0 + timedelta(hours=1)
    assert assignment.closed_at == T0 + timedelta(hours=5)
    assert assignment.outcome == "delivered"
    assert not assignment.is_open


def test_a_disallowed_transition_names_from_to_and_what_is_allowed():
    assignment = routed()

    with pytest.raises(InvalidTransition) as raised:
        assignment.move(Status.FULFILLED, by="jo@thanet", at=T0)

    error = raised.value
    assert error.extensions == {"from": "routed", "to": "fulfilled", "allowed": ["accepted", "cancelled", "rejected"]}
    assert "routed cannot become fulfilled" in error.detail
    assert assignment.status is Status.ROUTED  # unchanged


def test_a_closed_assignment_cannot_move_at_all():
    assignment = in_progress()
    assignment.move(Status.FULFILLED, by="jo", at=T0)

    with pytest.raises(InvalidTransition) as raised:
        assignment.move(Status.CANCELLED, by="admin", at=T0, reason="other")
    assert raised.value.extensions["allowed"] == []
    assert "it is closed" in raised.value.detail


def test_unable_to_fulfil_needs_an_outcome_code():
    assignment = in_progress()

    with pytest.raises(ValidationFailed) as missing:
        assignment.move(Status.UNABLE_TO_FULFIL, by="jo", at=T0)
    with pytest.raises(ValidationFailed) as unknown:
        assignment.move(Status.UNABLE_TO_FULFIL, by="jo", at=T0, outcome="too-busy")

    assert missing.value.extensions["errors"][0]["field"] == "outcome"
    assert "resident-unreachable" in missing.value.extensions["errors"][0]["reason"]
    assert "unknown outcome 'too-busy'" in unknown.value.extensions["errors"][0]["reason"]
    changes = assignment.move(Status.UNABLE_TO_FULFIL, by="jo", at=T0, outcome="resident-unreachable")
    assert changes[0].outcome == assignment.outcome == "resident-unreachable"


def test_every_open_state_can_be_cancelled_and_no_closed_one_can():
    for status, onward in ALLOWED.items():
        if status is Status.REJECTED:
            continue  # a passing step: re-routed in the same breath
        assert (Status.CANCELLED in onward) == (status not in CLOSED), status


def test_cancelling_an_open_assignment_closes_it_with_the_reason():
    assignment = routed()

    [change] = assignment.cancel(reason="no-longer-needed", by="referrals", at=T0 + timedelta(minutes=5))

    assert assignment.status is Status.CANCELLED and assignment.closed_at == T0 + timedelta(minutes=5)
    assert change.reason == "no-longer-needed" and change.from_hub == "thanet"


def test_cancelling_a_fulfilled_assignment_changes_nothing():
    assignment = in_progress()
    assignment.move(Status.FULFILLED, by="jo", at=T0)

    assert assignment.cancel(reason="no-longer-needed", by="referrals", at=T0) == []
    assert assignment.status is Status.FULFILLED


def test_an_administrator_places_a_triaged_request_in_a_hub():
    assignment = routed(
        placement=Placement(Status.TRIAGE, reason="not in the ONS postcode directory", pick_up_within=TRIAGE_WITHIN)
    )

    [change] = assignment.move(Status.ROUTED, by="admin", at=T0 + timedelta(hours=1), placement=thanet())

    assert assignment.status is Status.ROUTED and assignment.hub == "thanet"
    assert change.from_status is Status.TRIAGE and change.to_hub == "thanet"
    # The hub's SLA clock starts when it reaches the hub, not at triage.
    assert assignment.accept_due_at == T0 + timedelta(hours=5)


def test_placing_from_triage_needs_the_hub():
    assignment = routed(placement=Placement(Status.TRIAGE, reason="unknown", pick_up_within=TRIAGE_WITHIN))

    with pytest.raises(ValidationFailed) as raised:
        assignment.move(Status.ROUTED, by="admin", at=T0)
    assert raised.value.extensions["errors"] == [{"field": "hub", "reason": "is required to move it to routed"}]


def test_an_out_of_area_request_is_passed_on_to_its_council_and_closed():
    medway = Placement(
        Status.OUT_OF_AREA,
        reason="outside Kent: Medway (E06000035) is responsible",
        council_code="E06000035",
        council_name="Medway",
        pick_up_within=timedelta(hours=24),
    )
    assignment = routed(placement=medway)

    assignment.move(Status.PASSED_ON, by="admin", at=T0, note="emailed Medway's hub")

    assert assignment.status is Status.PASSED_ON and not assignment.is_open
    assert assignment.council_name == "Medway"


def test_hub_staff_work_their_requests_but_placing_and_cancelling_are_for_administrators():
    for status in (Status.ACCEPTED, Status.IN_PROGRESS, Status.FULFILLED, Status.UNABLE_TO_FULFIL, Status.REJECTED):
        check_actor_may(status, role_is_admin=False)
    for status in (Status.ROUTED, Status.OUT_OF_AREA, Status.PASSED_ON, Status.CANCELLED):
        with pytest.raises(Forbidden):
            check_actor_may(status, role_is_admin=False)
        check_actor_may(status, role_is_admin=True)


def test_a_reason_is_a_code_for_rejecting_or_cancelling_and_people_write_notes():
    assignment = routed()

    with pytest.raises(ValidationFailed) as raised:
        assignment.move(Status.ACCEPTED, by="jo", at=T0, reason="Mrs Jones rang back")
    [change] = assignment.move(Status.ACCEPTED, by="jo", at=T0, note="Mrs Jones rang back")

    assert raised.value.extensions["errors"][0]["field"] == "reason"
    assert change.note == "Mrs Jones rang back" and change.reason is None
