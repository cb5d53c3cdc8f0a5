"""A hub token never sees another hub's assignments, residents, feed or webhook set-up, on any endpoint.

The endpoints are found from the OpenAPI document, so one added later is walked too:
- `{assignment_id}` endpoints answer 404 for another hub's assignment, as if it did not exist;
- `{hub}` endpoints answer 403 for another hub's slug (hub slugs are public, so
  saying "not your hub" leaks nothing), and an administrator-only one 403 anyway;
  only the hub's card (`GET /v1/hubs/{hub}`) answers, without its webhook set-up;
- no answer to the other hub carries the resident's name, phone or address.
"""

import uuid

from tests.integration.fulfilment.conftest import deliver, headers, hub_assignments, referral_received
from tests.support.services import operations

SERVICE = "fulfilment"

BODIES = {
    "transitions": {"to": "accepted"},
    "notes": {"text": "hello"},
    "contact-attempts": {"outcome": "no-answer", "note": "rang twice"},
    "take": {},
    "release": {},
    "hand-over": {"to": "dev:maidstone-worker"},
    "next-contact": {"at": None},
}


def body_for(path: str, method: str):
    if method not in ("POST", "PATCH", "PUT"):
        return None
    return BODIES.get(path.rsplit("/", 1)[-1], {"follow_up": True})


def resident_details_in(text: str) -> list[str]:
    return [s for s in ("Margaret Jones", "+441843577000", "Northdown Road", "1941-03-02") if s in text]


async def test_another_hub_gets_404_for_every_assignment_endpoint_and_403_for_every_hub_endpoint(client, settings):
    await deliver(client.app, referral_received())  # Thanet
    thanet_items = await hub_assignments(client, settings, "thanet", expect=2)
    own_feed = await client.get(
        "/v1/hubs/thanet/feed", params={"cursor": 0}, headers=headers(settings, "hub", "thanet")
    )
    assert resident_details_in(own_feed.text), "the hub's own feed carries its residents"
    maidstone = headers(settings, "hub", "maidstone")

    walked, wrong = 0, []
    for op in operations(client.app):
        params = {p.name for p in op.dependant.path_params}
        if "assignment_id" in params:
            expected = {404}
            path = op.path.format(assignment_id=thanet_items[0]["id"])
        elif str(op) == "GET /v1/hubs/{hub}":
            expected = {200}  # the hub's card (name, contacts): hubs pass requests to each other; webhook hidden below
            path = op.path.format(hub="thanet")
        elif "hub" in params:
            expected = {403}
            path = op.path.format(hub="thanet")
        else:
            continue
        walked += 1
        response = await client.request(
            op.method,
            path,
            headers=maidstone,
            json=body_for(op.path, op.method),
            params={"cursor": 0} if op.path.endswith("/feed") else None,
        )
        if response.status_code not in expected:
            wrong.append(f"{op}: {response.status_code}, expected {expected}")
        if resident_details_in(response.text):
            wrong.append(f"{op}: the answer carries {resident_details_in(response.text)}")
    assert walked >= 9, "every hub-facing endpoint was walked"
    assert not wrong, "\n".join(wrong)

    # Nothing was changed by the attempts: Thanet's assignments are still as routed, with no notes.
    again = await client.get(f"/v1/assignments/{thanet_items[0]['id']}", headers=headers(settings, "hub", "thanet"))
    assert again.json()["status"] == "routed" and again.json()["notes"] == []


async def test_a_hub_sees_only_its_own_webhook_set_up(client, settings):
    admin = headers(settings, "admin")
    for slug in ("thanet", "dover"):
        changed = await client.patch(
            f"/v1/hubs/{slug}",
            headers=admin,
            json={"webhook_url": f"https://{slug}.example/hook-{uuid.uuid4().hex[:6]}", "webhook_secret": "s" * 32},
        )
        assert changed.status_code == 200, changed.text
    thanet = headers(settings, "hub", "thanet")

    listed = {hub["slug"]: hub for hub in (await client.get("/v1/hubs", headers=thanet)).json()}
    assert listed["thanet"]["webhook_url"].startswith("https://thanet.example/")
    assert listed["dover"]["webhook_url"] is None and listed["dover"]["has_webhook_secret"] is False
    dover = (await client.get("/v1/hubs/dover", headers=thanet)).json()
    assert dover["webhook_url"] is None and dover["has_webhook_secret"] is False
    assert dover["slug"] == "dover" and dover["name"], "the hub itself is no secret: hubs pass requests on"
    # An administrator sees every hub's set-up.
    assert (
        (await client.get("/v1/hubs/dover", headers=admin)).json()["webhook_url"].startswith("https://dover.example/")
    )


async def test_a_hub_feed_read_from_the_start_holds_only_its_own_residents(client, settings):
    await deliver(client.app, referral_received())  # Thanet
    await hub_assignments(client, settings, "thanet", expect=2)
    page = await client.get(
        "/v1/hubs/maidstone/feed", params={"cursor": 0}, headers=headers(settings, "hub", "maidstone")
    )
    assert page.status_code == 200
    assert page.json()["items"] == [] and not resident_details_in(page.text)
