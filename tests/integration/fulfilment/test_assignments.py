"""Hub staff work their assignments through the API: every step allowed, refused, re-routed or kept as it should."""

import uuid
from datetime import UTC, datetime

from shared.events import (
    AssignmentAmendedV1,
    AssignmentRoutedV1,
    AssignmentWithdrawnV1,
    ReferralAmendedV1,
    RequestCancelledV1,
)
from tests.integration.fulfilment.conftest import (
    CANTERBURY_POSTCODE,
    deliver,
    headers,
    hub_assignments,
    queue,
    referral_received,
)
from tests.support.kafka import read_topic

SERVICE = "fulfilment"


async def one_thanet_assignment(client, settings, **kwargs) -> tuple[dict, object]:
    referral = referral_received(types=("food",), **kwargs)
    await deliver(client.app, referral)
    [item] = await hub_assignments(client, settings, "thanet", expect=1)
    return item, referral


async def move(client, settings, assignment_id, body, *, role="hub", hub="thanet"):
    return await client.post(
        f"/v1/assignments/{assignment_id}/transitions",
        json=body,
        headers=headers(settings, role, hub if role == "hub" else None),
    )


async def feed(client, settings, hub) -> list[dict]:
    response = await client.get(f"/v1/hubs/{hub}/feed", headers=headers(settings, "hub", hub))
    return [item["event"] for item in response.json()["items"]]


async def test_hub_staff_take_a_request_to_fulfilled_and_every_step_is_kept_with_who_and_when(client, settings):
    item, _ = await one_thanet_assignment(client, settings)

    for body in (
        {"to": "accepted"},
        {"to": "in_progress", "note": "shopping booked for 2pm"},
        {"to": "fulfilled", "outcome": "delivered"},
    ):
        response = await move(client, settings, item["id"], body)
        assert response.status_code == 200, response.text

    detail = (await client.get(f"/v1/assignments/{item['id']}", headers=headers(settings, "hub", "thanet"))).json()
    assert detail["status"] == "fulfilled" and detail["outcome"] == "delivered"
    assert detail["accepted_at"] and detail["closed_at"] and detail["allowed"] == []
    steps = [(h["from_status"], h["to_status"], h["by"]) for h in detail["history"]]
    assert steps == [
        (None, "routed", "fulfilment"),
        ("routed", "accepted", "hub-thanet"),
        ("accepted", "in_progress", "hub-thanet"),
        ("in_progress", "fulfilled", "hub-thanet"),
    ]
    assert detail["history"][2]["note"] == "shopping booked for 2pm"
    assert all(h["at"] for h in detail["history"])
    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.assignment_status, expect=4)
    assert [e.data["status"] for _, e in events] == ["routed", "accepted", "in_progress", "fulfilled"]
    assert events[-1][1].data["outcome"] == "delivered" and events[-1][1].data["closed_at"]


async def test_a_transition_not_allowed_from_the_current_status_is_a_409_naming_what_is(client, settings):
    item, _ = await one_thanet_assignment(client, settings)

    response = await move(client, settings, item["id"], {"to": "fulfilled"})

    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["from"], problem["to"]) == ("routed", "fulfilled")
    assert problem["allowed"] == ["accepted", "cancelled", "rejected"]
    assert "routed cannot become fulfilled" in problem["detail"]


async def test_unable_to_fulfil_without_an_outcome_code_is_refused_naming_the_field(client, settings):
    item, _ = await one_thanet_assignment(client, settings)
    await move(client, settings, item["id"], {"to": "accepted"})
    await move(client, settings, item["id"], {"to": "in_progress"})

    refused = await move(client, settings, item["id"], {"to": "unable_to_fulfil"})
    done = await move(client, settings, item["id"], {"to": "unable_to_fulfil", "outcome": "resident-unreachable"})

    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "outcome"
    assert done.status_code == 200 and done.json()["status"] == "unable_to_fulfil"


async def test_a_wrong_district_rejection_re_routes_to_the_hub_named_and_thanet_loses_sight_of_it(client, settings):
    item, referral = await one_thanet_assignment(client, settings)

    response = await move(
        client,
        settings,
        item["id"],
        {"to": "rejected", "reason": "wrong-district", "hub": "canterbury", "note": "lives in Herne Bay"},
    )

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["hub"]) == ("routed", "canterbury")
    assert [c["to_status"] for c in response.json()["changes"]] == ["rejected", "routed"]
    thanet = await client.get(f"/v1/assignments/{item['id']}", headers=headers(settings, "hub", "thanet"))
    assert thanet.status_code == 404
    [moved] = await hub_assignments(client, settings, "canterbury", expect=1)
    assert moved["id"] == item["id"] and moved["status"] == "routed"

    thanet_feed = await feed(client, settings, "thanet")
    assert [e["type"].rsplit(".", 2)[-2] for e in thanet_feed] == ["routed", "withdrawn"]
    withdrawn = AssignmentWithdrawnV1.model_validate(thanet_feed[-1]["data"])
    assert (withdrawn.why, withdrawn.reason) == ("rejected", "wrong-district")
    [arrived] = await feed(client, settings, "canterbury")
    routed = AssignmentRoutedV1.model_validate(arrived["data"])
    assert routed.previous_hub == "thanet" and routed.resident.name == "Margaret Jones"
    statuses = await read_topic(settings.kafka_bootstrap_servers, settings.topics.assignment_status, expect=3)
    assert [(e.data["status"], e.data["hub"]) for _, e in statuses] == [
        ("routed", "thanet"),
        ("rejected", "thanet"),
        ("routed", "canterbury"),
    ]
    assert "lives in Herne Bay" not in statuses[1][1].to_bytes().decode()  # notes stay out of reporting


async def test_a_not_eligible_rejection_goes_to_triage_and_an_administrator_places_it(client, settings):
    item, _ = await one_thanet_assignment(client, settings)
    await move(client, settings, item["id"], {"to": "rejected", "reason": "not-eligible"})

    [triaged] = await queue(client, settings, "triage", expect=1)
    assert triaged["id"] == item["id"] and triaged["reason"] == "rejected by thanet: not-eligible"

    placed = await move(
        client, settings, item["id"], {"to": "routed", "hub": "dover", "note": "Dover can help"}, role="admin"
    )
    assert placed.status_code == 200, placed.text
    [at_dover] = await hub_assignments(client, settings, "dover", expect=1)
    assert at_dover["id"] == item["id"]
    assert (await client.get("/v1/queues/triage", headers=headers(settings, "admin"))).json()["items"] == []


async def test_hub_staff_cannot_cancel_or_place_requests(client, settings):
    item, _ = await one_thanet_assignment(client, settings)

    cancel = await move(client, settings, item["id"], {"to": "cancelled", "reason": "other"})
    place = await move(client, settings, item["id"], {"to": "routed", "hub": "dover"})

    assert cancel.status_code == place.status_code == 403


async def test_cancelling_the_request_closes_the_assignment_and_tells_the_hub(client, settings):
    item, referral = await one_thanet_assignment(client, settings)

    await deliver(
        client.app,
        RequestCancelledV1(
            referral_id=referral.referral_id,
            request_id=referral.requests[0].request_id,
            request_type="food",
            reason="no-longer-needed",
            cancelled_at=datetime.now(UTC),
        ),
    )

    detail = (await client.get(f"/v1/assignments/{item['id']}", headers=headers(settings, "hub", "thanet"))).json()
    assert detail["status"] == "cancelled" and detail["closed_at"]
    assert detail["history"][-1]["reason"] == "no-longer-needed"
    withdrawn = (await feed(client, settings, "thanet"))[-1]
    assert withdrawn["type"] == AssignmentWithdrawnV1.type and withdrawn["data"]["why"] == "cancelled"
    open_items = await client.get(
        "/v1/hubs/thanet/assignments",
        params={"status": "routed,accepted,in_progress"},
        headers=headers(settings, "hub", "thanet"),
    )
    assert open_items.json()["items"] == []


def amendment(referral, *, postcode: str, address_changed: bool = True) -> ReferralAmendedV1:
    resident = referral.resident.model_copy(
        update={"address": referral.resident.address.model_copy(update={"postcode": postcode, "line1": "3 High St"})}
    )
    return ReferralAmendedV1(
        referral_id=referral.referral_id,
        reference=referral.reference,
        amended_at=datetime.now(UTC),
        changed=["address.line1", "address.postcode"],
        address_changed=address_changed,
        resident=resident,
        consent_to_share=True,
    )


async def test_a_new_address_in_another_district_moves_a_request_no_hub_has_accepted(client, settings):
    item, referral = await one_thanet_assignment(client, settings)

    await deliver(client.app, amendment(referral, postcode=CANTERBURY_POSTCODE))

    [moved] = await hub_assignments(client, settings, "canterbury", expect=1)
    assert moved["id"] == item["id"] and moved["postcode"] == CANTERBURY_POSTCODE
    assert moved["reason"].startswith("address amended")
    assert (await feed(client, settings, "thanet"))[-1]["data"]["why"] == "re-routed"


async def test_a_new_address_leaves_an_accepted_request_with_its_hub_told_and_flagged(client, settings):
    item, referral = await one_thanet_assignment(client, settings)
    await move(client, settings, item["id"], {"to": "accepted"})

    await deliver(client.app, amendment(referral, postcode=CANTERBURY_POSTCODE))

    detail = (await client.get(f"/v1/assignments/{item['id']}", headers=headers(settings, "hub", "thanet"))).json()
    assert detail["hub"] == "thanet" and detail["status"] == "accepted"
    assert detail["resident"]["address"]["postcode"] == CANTERBURY_POSTCODE
    assert detail["follow_up"] is True
    assert "canterbury" in detail["notes"][-1]["text"]
    amended = (await feed(client, settings, "thanet"))[-1]
    assert amended["type"] == AssignmentAmendedV1.type
    assert amended["data"]["resident"]["address"]["postcode"] == CANTERBURY_POSTCODE
    # Rejecting it as wrong district now sends it where the new address is.
    rejected = await move(client, settings, item["id"], {"to": "rejected", "reason": "wrong-district"})
    assert rejected.json()["hub"] == "canterbury"


async def test_hub_staff_record_contact_attempts_case_notes_and_a_follow_up_flag(client, settings):
    item, _ = await one_thanet_assignment(client, settings)
    thanet = headers(settings, "hub", "thanet")

    tried = await client.post(
        f"/v1/assignments/{item['id']}/contact-attempts", json={"outcome": "no-answer"}, headers=thanet
    )
    reached = await client.post(
        f"/v1/assignments/{item['id']}/contact-attempts",
        json={"outcome": "reached", "note": "needs gluten-free"},
        headers=thanet,
    )
    noted = await client.post(
        f"/v1/assignments/{item['id']}/notes", json={"text": "Neighbour has a key"}, headers=thanet
    )
    flagged = await client.patch(
        f"/v1/assignments/{item['id']}", json={"follow_up": True, "follow_up_on": "2020-04-10"}, headers=thanet
    )
    wrong = await client.post(
        f"/v1/assignments/{item['id']}/contact-attempts", json={"outcome": "busy"}, headers=thanet
    )

    assert [r.status_code for r in (tried, reached, noted)] == [201, 201, 201]
    assert wrong.status_code == 422
    detail = flagged.json()
    assert [(c["contact_outcome"], c["by"]) for c in detail["contact_attempts"]] == [
        ("no-answer", "hub-thanet"),
        ("reached", "hub-thanet"),
    ]
    assert detail["notes"][0]["text"] == "Neighbour has a key"
    assert detail["follow_up"] is True and detail["follow_up_on"] == "2020-04-10"
    listed = await client.get("/v1/hubs/thanet/assignments", params={"follow_up": "true"}, headers=thanet)
    assert [i["id"] for i in listed.json()["items"]] == [item["id"]]


async def test_a_hub_lists_its_assignments_by_status_and_type(client, settings):
    await deliver(client.app, referral_received(types=("food", "prescription", "befriending")))
    items = await hub_assignments(client, settings, "thanet", expect=3)
    food = next(i for i in items if i["type"] == "food")
    await move(client, settings, food["id"], {"to": "accepted"})
    thanet = headers(settings, "hub", "thanet")

    accepted = await client.get("/v1/hubs/thanet/assignments", params={"status": "accepted"}, headers=thanet)
    prescriptions = await client.get("/v1/hubs/thanet/assignments", params={"type": "prescription"}, headers=thanet)
    unknown_hub = await client.get("/v1/hubs/atlantis/assignments", headers=headers(settings, "admin"))

    assert [i["type"] for i in accepted.json()["items"]] == ["food"]
    assert [i["type"] for i in prescriptions.json()["items"]] == ["prescription"]
    assert unknown_hub.status_code == 404


async def test_an_unknown_assignment_is_404(client, settings):
    response = await client.get(f"/v1/assignments/{uuid.uuid4()}", headers=headers(settings, "admin"))
    assert response.status_code == 404
