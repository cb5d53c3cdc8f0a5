"""A rejected request never stops: it goes to the right hub, or to triage for a person to place."""

from datetime import UTC, datetime, timedelta

import pytest

from services.fulfilment.domain import SYSTEM, Assignment, Placement, Status, placement_for
from services.fulfilment.hubs import KENT_HUBS, route
from shared.errors import InvalidTransition, ValidationFailed

T0 = datetime(2020, 4, 6, 9, 0, tzinfo=UTC)
TRIAGE_WITHIN = timedelta(hours=4)


def hub(slug: str, district: str = "E07000000") -> Placement:
    return Placement(Status.ROUTED, reason=f"in {slug}", hub=slug, district_code=district)


def routed_to(slug: str) -> Assignment:
    assignment, _ = Assignment.open(
        id="a1",
        request_id="r1",
        referral_id="ref1",
        request_type="food",
        urgency="within-48-hours",
        received_at=T0,
        placement=hub(slug, "E07000114"),
        at=T0,
    )
    return assignment


def test_wrong_district_with_the_right_hub_named_goes_straight_there():
    assignment = routed_to("thanet")

    changes = assignment.reject(
        reason="wrong-district",
        by="jo@thanet",
        at=T0,
        named=hub("canterbury"),
        triage_within=TRIAGE_WITHIN,
    )

    assert [(c.from_status, c.to_status, c.from_hub, c.to_hub, c.by) for c in changes] == [
        (Status.ROUTED, Status.REJECTED, "thanet", "thanet", "jo@thanet"),
        (Status.REJECTED, Status.ROUTED, "thanet", "canterbury", SYSTEM),
    ]
    assert assignment.status is Status.ROUTED and assignment.hub == "canterbury"
    assert assignment.rejected_by == ["thanet"]
    assert "sent on by thanet" in assignment.reason


def test_wrong_district_with_no_hub_named_goes_where_the_postcode_now_says_if_that_is_another_hub():
    assignment = routed_to("thanet")

    assignment.reject(reason="wrong-district", by="jo", at=T0, by_postcode=hub("dover"), triage_within=TRIAGE_WITHIN)

    assert assignment.hub == "dover"


def test_wrong_district_when_the_postcode_names_the_same_hub_goes_to_triage():
    assignment = routed_to("thanet")

    assignment.reject(reason="wrong-district", by="jo", at=T0, by_postcode=hub("thanet"), triage_within=TRIAGE_WITHIN)

    assert assignment.status is Status.TRIAGE and assignment.hub is None
    assert assignment.reason == "rejected by thanet: wrong-district"
    assert assignment.accept_due_at == T0 + TRIAGE_WITHIN  # a person must place it in time too


@pytest.mark.parametrize("reason", ["not-eligible", "duplicate"])
def test_other_rejections_go_to_triage_with_the_reason(reason):
    assignment = routed_to("thanet")

    assignment.reject(reason=reason, by="jo", at=T0, by_postcode=hub("dover"), triage_within=TRIAGE_WITHIN)

    assert assignment.status is Status.TRIAGE
    assert assignment.reason == f"rejected by thanet: {reason}"
    assert assignment.district_code == "E07000114"  # kept for reporting and for the person placing it


def test_a_request_never_goes_back_automatically_to_a_hub_that_rejected_it():
    assignment = routed_to("thanet")
    assignment.reject(reason="wrong-district", by="jo", at=T0, named=hub("canterbury"), triage_within=TRIAGE_WITHIN)

    assignment.reject(reason="wrong-district", by="al", at=T0, named=hub("thanet"), triage_within=TRIAGE_WITHIN)

    assert assignment.status is Status.TRIAGE
    assert assignment.rejected_by == ["thanet", "canterbury"]


def test_an_accepted_request_can_still_be_rejected_and_is_re_routed():
    assignment = routed_to("thanet")
    assignment.move(Status.ACCEPTED, by="jo", at=T0)

    assignment.reject(reason="wrong-district", by="jo", at=T0, named=hub("swale"), triage_within=TRIAGE_WITHIN)

    assert assignment.hub == "swale" and assignment.status is Status.ROUTED
    assert assignment.accepted_at is None  # the new hub has not accepted it


def test_a_request_in_progress_cannot_be_rejected():
    assignment = routed_to("thanet")
    assignment.move(Status.ACCEPTED, by="jo", at=T0)
    assignment.move(Status.IN_PROGRESS, by="jo", at=T0)

    with pytest.raises(InvalidTransition):
        assignment.reject(reason="not-eligible", by="jo", at=T0, triage_within=TRIAGE_WITHIN)


def test_rejecting_needs_a_known_reason_and_a_note_for_other():
    assignment = routed_to("thanet")

    with pytest.raises(ValidationFailed) as unknown:
        assignment.reject(reason="busy", by="jo", at=T0, triage_within=TRIAGE_WITHIN)
    with pytest.raises(ValidationFailed) as bare_other:
        assignment.reject(reason="other", by="jo", at=T0, triage_within=TRIAGE_WITHIN)
    with pytest.raises(ValidationFailed) as named_not_wrong_district:
        assignment.reject(reason="duplicate", by="jo", at=T0, named=hub("dover"), triage_within=TRIAGE_WITHIN)

    assert "wrong-district" in unknown.value.extensions["errors"][0]["reason"]
    assert bare_other.value.extensions["errors"] == [
        {"field": "note", "reason": "is required when the reason is 'other'"}
    ]
    assert named_not_wrong_district.value.extensions["errors"][0]["field"] == "hub"
    assert assignment.status is Status.ROUTED and assignment.hub == "thanet"


def test_a_hub_cannot_name_itself_as_the_right_hub():
    with pytest.raises(ValidationFailed):
        routed_to("thanet").reject(
            reason="wrong-district", by="jo", at=T0, named=hub("thanet"), triage_within=TRIAGE_WITHIN
        )


def test_an_amended_address_moves_a_request_no_hub_has_accepted():
    assignment = routed_to("thanet")

    [change] = assignment.reroute(hub("dover"), at=T0 + timedelta(hours=1), reason="address amended: in Dover")

    assert (change.from_hub, change.to_hub, change.by) == ("thanet", "dover", SYSTEM)
    assert assignment.hub == "dover" and assignment.routed_at == T0 + timedelta(hours=1)


def test_an_amended_address_leaves_an_accepted_request_with_its_hub():
    assignment = routed_to("thanet")
    assignment.move(Status.ACCEPTED, by="jo", at=T0)

    assert assignment.reroute(hub("dover"), at=T0, reason="address amended") == []
    assert assignment.hub == "thanet"


def test_an_amended_address_in_the_same_district_changes_nothing():
    assert routed_to("thanet").reroute(hub("thanet"), at=T0, reason="address amended") == []


def test_a_corrected_postcode_takes_a_triaged_request_to_its_hub():
    assignment, _ = Assignment.open(
        id="a1",
        request_id="r1",
        referral_id="ref1",
        request_type="food",
        urgency="routine",
        received_at=T0,
        placement=Placement(Status.TRIAGE, reason="not a valid UK postcode", pick_up_within=TRIAGE_WITHIN),
        at=T0,
    )

    assignment.reroute(hub("thanet"), at=T0, reason="address amended")

    assert assignment.status is Status.ROUTED and assignment.hub == "thanet"


def test_no_consent_to_share_goes_to_triage_whatever_the_postcode(directory):
    decision = route(directory.lookup("CT9 1XZ"), KENT_HUBS)

    placement = placement_for(
        decision,
        hub_sla={},
        triage_within=TRIAGE_WITHIN,
        out_of_area_within=timedelta(hours=24),
        consent_to_share=False,
    )

    assert placement.status is Status.TRIAGE and placement.hub is None
    assert "no consent" in placement.reason
    assert placement.district_code == "E07000114"


def test_a_medway_postcode_is_placed_out_of_area_naming_medway(directory):
    decision = route(directory.lookup("ME4 4TR"), KENT_HUBS)

    placement = placement_for(decision, hub_sla={}, triage_within=TRIAGE_WITHIN, out_of_area_within=timedelta(hours=24))

    assert placement.status is Status.OUT_OF_AREA
    assert (placement.council_code, placement.council_name) == ("E06000035", "Medway")
    assert placement.pick_up_within == timedelta(hours=24)
