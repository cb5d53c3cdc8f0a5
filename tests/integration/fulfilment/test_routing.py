"""Every request of a referral reaches the right hub or queue, through the real broker, once."""

import asyncio

from sqlalchemy import func, select

from services.fulfilment.models import assignments
from shared.events import AssignmentRoutedV1, AssignmentStatusChangedV1
from tests.integration.fulfilment.conftest import (
    MEDWAY_POSTCODE,
    UNKNOWN_POSTCODE,
    deliver,
    eventually,
    headers,
    hub_assignments,
    produce,
    queue,
    referral_received,
    send_referral,
)
from tests.support.kafka import read_topic

SERVICE = "fulfilment"


async def count_assignments(app) -> int:
    async with app.state.runtime.db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(assignments))


async def test_thanet_referral_with_food_and_prescription_gives_thanet_two_assignments_on_its_api_topic_and_feed(
    live_client,
    settings,
):
    client = live_client
    referral = referral_received(types=("food", "prescription"))
    await send_referral(settings, referral)

    items = await hub_assignments(client, settings, "thanet", expect=2)
    assert sorted(i["type"] for i in items) == ["food", "prescription"]
    assert {i["request_id"] for i in items} == {str(r.request_id) for r in referral.requests}
    assert all(i["status"] == "routed" and i["hub"] == "thanet" for i in items)
    assert all(i["district_code"] == "E07000114" for i in items)

    one = await client.get(f"/v1/assignments/{items[0]['id']}", headers=headers(settings, "hub", "thanet"))
    assert one.status_code == 200
    detail = one.json()
    assert detail["resident"]["name"] == "Margaret Jones"
    assert detail["resident"]["phone"] == "+441843577000"
    assert detail["referral"]["reference"] == "KT-7F3K-9QX2"
    assert detail["allowed"] == ["accepted", "cancelled", "rejected"]

    on_topic = await read_topic(settings.kafka_bootstrap_servers, settings.topics.hub("thanet"), expect=2)
    routed = [AssignmentRoutedV1.model_validate(e.data) for _, e in on_topic]
    assert sorted(r.request.type for r in routed) == ["food", "prescription"]
    assert all(r.resident.phone == "+441843577000" and r.hub == "thanet" for r in routed)
    assert all(key == str(referral.referral_id).encode() for key, _ in on_topic)

    feed = (await client.get("/v1/hubs/thanet/feed", headers=headers(settings, "hub", "thanet"))).json()
    assert [item["seq"] for item in feed["items"]] == [1, 2]
    assert feed["next_cursor"] == 2
    assert {item["event"]["id"] for item in feed["items"]} == {str(e.id) for _, e in on_topic}


async def test_outside_kent_and_unknown_postcodes_land_in_their_queues_and_reporting_hears_no_personal_data(
    live_client,
    settings,
):
    await send_referral(settings, referral_received(postcode=MEDWAY_POSTCODE, types=("food",)))
    await send_referral(settings, referral_received(postcode=UNKNOWN_POSTCODE, types=("befriending",)))

    [out_of_area] = await queue(live_client, settings, "out-of-area", expect=1)
    assert (out_of_area["council_code"], out_of_area["council_name"]) == ("E06000035", "Medway")
    [triage] = await queue(live_client, settings, "triage", expect=1)
    assert "not in the ONS postcode directory" in triage["reason"]

    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.assignment_status, expect=2)
    assert sorted(e.data["status"] for _, e in events) == ["out_of_area", "triage"]
    for _, event in events:
        raw = event.to_bytes().decode()
        for personal in ("Margaret", "Jones", "577000", "Northdown", "CT9", "ME4", "1941-03-02", "Margate"):
            assert personal not in raw


async def test_the_same_referral_delivered_twice_still_gives_one_assignment_per_request(live_client, settings):
    referral = referral_received(types=("food", "prescription", "befriending"))
    event = referral.envelope(source="/kent-together/referrals")
    # The same event twice (a redelivery), then the same referral under a new event id (a republish).
    again = referral.envelope(source="/kent-together/referrals")
    await produce(settings.kafka_bootstrap_servers, settings.topics.referrals, event, event, again)

    await hub_assignments(live_client, settings, "thanet", expect=3)
    consumer = live_client.app.state.runtime.consumers[0]

    async def all_three_handled():
        return consumer.processed_total >= 3

    await eventually(all_three_handled)
    await asyncio.sleep(0.2)
    assert await count_assignments(live_client.app) == 3
    statuses = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.topics.assignment_status,
        expect=3,
        event_type=AssignmentStatusChangedV1.type,
    )
    assert len(statuses) == 3  # each request routed once


async def test_medway_postcode_lands_in_the_out_of_area_queue_naming_medway(client, settings):
    await deliver(client.app, referral_received(postcode=MEDWAY_POSTCODE, types=("food",)))

    [item] = await queue(client, settings, "out-of-area", expect=1)
    assert item["status"] == "out_of_area" and item["hub"] is None
    assert (item["council_code"], item["council_name"]) == ("E06000035", "Medway")
    assert "Medway" in item["reason"]
    assert item["postcode"] == MEDWAY_POSTCODE
    assert item["accept_due_at"] is not None  # somebody must pass it on, in time


async def test_unknown_postcode_goes_to_triage_with_the_reason(client, settings):
    await deliver(client.app, referral_received(postcode=UNKNOWN_POSTCODE, types=("befriending",)))

    [item] = await queue(client, settings, "triage", expect=1)
    assert item["status"] == "triage" and item["hub"] is None
    assert "not in the ONS postcode directory" in item["reason"]
    out_of_area = await client.get("/v1/queues/out-of-area", headers=headers(settings, "admin"))
    assert out_of_area.json()["items"] == []


async def test_a_resident_who_did_not_consent_to_sharing_goes_to_triage_not_to_the_hub(client, settings):
    await deliver(client.app, referral_received(consent=False, types=("food",)))

    [item] = await queue(client, settings, "triage", expect=1)
    assert "no consent" in item["reason"]
    assert item["district_code"] == "E07000114"
    thanet = await client.get("/v1/hubs/thanet/feed", headers=headers(settings, "hub", "thanet"))
    assert thanet.json()["items"] == []


async def test_maidstone_hub_cannot_see_thanets_assignments_residents_or_feed(client, settings):
    await deliver(client.app, referral_received())
    items = await hub_assignments(client, settings, "thanet", expect=2)
    maidstone = headers(settings, "hub", "maidstone")

    for item in items:
        response = await client.get(f"/v1/assignments/{item['id']}", headers=maidstone)
        assert response.status_code == 404
        transition = await client.post(
            f"/v1/assignments/{item['id']}/transitions", json={"to": "accepted"}, headers=maidstone
        )
        assert transition.status_code == 404
        note = await client.post(f"/v1/assignments/{item['id']}/notes", json={"text": "hello"}, headers=maidstone)
        assert note.status_code == 404
    assert (await client.get("/v1/hubs/thanet/assignments", headers=maidstone)).status_code == 403
    assert (await client.get("/v1/hubs/thanet/feed", headers=maidstone)).status_code == 403
    own = await client.get("/v1/hubs/maidstone/assignments", headers=maidstone)
    assert own.status_code == 200 and own.json()["items"] == []
    # An administrator sees every hub.
    admin = await client.get(f"/v1/assignments/{items[0]['id']}", headers=headers(settings, "admin"))
    assert admin.status_code == 200


async def test_queues_are_for_administrators(client, settings):
    for queue_name in ("triage", "out-of-area"):
        response = await client.get(f"/v1/queues/{queue_name}", headers=headers(settings, "hub", "thanet"))
        assert response.status_code == 403


async def test_each_request_of_a_referral_gets_its_own_assignment_and_due_times_by_urgency(client, settings):
    await deliver(client.app, referral_received(types=("food",), urgency="today"))
    await deliver(client.app, referral_received(types=("befriending",), urgency="routine"))

    items = await hub_assignments(client, settings, "thanet", expect=2)
    by_type = {i["type"]: i for i in items}
    food, befriending = by_type["food"], by_type["befriending"]
    from datetime import datetime

    hours = lambda a, b: (datetime.fromisoformat(a) - datetime.fromisoformat(b)).total_seconds() / 3600  # noqa: E731
    assert round(hours(food["accept_due_at"], food["routed_at"])) == 4
    assert round(hours(food["fulfil_due_at"], food["routed_at"])) == 24
    assert round(hours(befriending["accept_due_at"], befriending["routed_at"])) == 5 * 24
