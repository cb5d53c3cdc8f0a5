"""A hub worker's list, as a day's work needs it: the true total, what is still to do, and where rejected cases went."""

from datetime import UTC, datetime

from shared.events import ResidentErasedV1
from tests.integration.fulfilment.conftest import deliver, headers, hub_assignments, referral_received

SERVICE = "fulfilment"


async def thanet_list(client, settings, **params) -> dict:
    response = await client.get(
        "/v1/hubs/thanet/assignments", params=params, headers=headers(settings, "hub", "thanet")
    )
    assert response.status_code == 200, response.text
    return response.json()


async def move(client, settings, assignment_id, *steps):
    for body in steps:
        response = await client.post(
            f"/v1/assignments/{assignment_id}/transitions", json=body, headers=headers(settings, "hub", "thanet")
        )
        assert response.status_code == 200, response.text


async def test_the_count_is_how_many_match_not_how_many_are_on_the_page(client, settings):
    for _ in range(3):
        await deliver(client.app, referral_received())  # food and prescription each
    await hub_assignments(client, settings, "thanet", expect=6)
    page = await thanet_list(client, settings, limit=2)
    assert (len(page["items"]), page["count"]) == (2, 6)
    last = await thanet_list(client, settings, limit=4, offset=4)
    assert (len(last["items"]), last["count"]) == (2, 6)


async def test_closed_and_erased_cases_are_left_out_unless_asked_for(client, settings):
    done, erased, open_one = (referral_received(types=("food",)) for _ in range(3))
    for referral in (done, erased, open_one):
        await deliver(client.app, referral)
    items = await hub_assignments(client, settings, "thanet", expect=3)
    by_referral = {item["referral_id"]: item for item in items}
    await move(
        client,
        settings,
        by_referral[str(done.referral_id)]["id"],
        {"to": "accepted"},
        {"to": "in_progress"},
        {"to": "fulfilled", "outcome": "delivered"},
    )
    await deliver(
        client.app, ResidentErasedV1(referral_id=erased.referral_id, erased_at=datetime.now(UTC), reason="request")
    )

    default = await thanet_list(client, settings)
    assert [i["referral_id"] for i in default["items"]] == [str(open_one.referral_id)] and default["count"] == 1
    everything = await thanet_list(client, settings, closed="true", erased="true")
    assert everything["count"] == 3
    asked = await thanet_list(client, settings, status="fulfilled")  # a status asked for is shown
    assert [i["referral_id"] for i in asked["items"]] == [str(done.referral_id)]


async def test_a_hub_sees_where_each_case_it_rejected_went_without_the_residents_details(client, settings):
    await deliver(client.app, referral_received(types=("food",)))
    [item] = await hub_assignments(client, settings, "thanet", expect=1)
    await move(client, settings, item["id"], {"to": "rejected", "reason": "not-eligible"})

    response = await client.get("/v1/hubs/thanet/rejected", headers=headers(settings, "hub", "thanet"))
    assert response.status_code == 200, response.text
    [rejected] = response.json()["items"]
    assert (rejected["id"], rejected["reason"], rejected["reference"]) == (
        item["id"],
        "not-eligible",
        item["reference"],
    )
    assert rejected["now"]["status"] == "triage"  # its own district's hub rejected it: a person places it
    assert "resident_name" not in rejected and "phone" not in rejected
    other = await client.get("/v1/hubs/dover/rejected", headers=headers(settings, "hub", "dover"))
    assert other.json() == {"items": [], "count": 0}
