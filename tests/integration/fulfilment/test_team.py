"""A hub is a team: two workers share out four cases; the queue by holder, its sorts, totals and contact counts."""

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import select

from services.fulfilment.models import tables
from shared.db import Database
from shared.events import AssignmentHolderChangedV1, ReferralReceivedV1
from tests.integration.fulfilment.conftest import THANET_POSTCODE, deliver, headers
from tests.support.apps import token

SERVICE = "fulfilment"
# Routed in this order: the least urgent first, so routing order and urgency order are opposites.
CASES = [("befriending", "routine"), ("shopping", "this-week"), ("prescription", "within-48-hours"), ("food", "today")]


def referral(kind: str, urgency: str) -> ReferralReceivedV1:
    return ReferralReceivedV1(
        referral_id=uuid.uuid4(),
        reference="KT-7F3K-9QX2",
        channel="phone",
        received_at=datetime.now(UTC),
        consent_to_share=True,
        resident={
            "name": f"Resident {kind}",
            "phone": "+441843577000",
            "contact_preference": "phone",
            "address": {"line1": "12 Northdown Road", "town": "Margate", "postcode": THANET_POSTCODE},
        },
        requests=[{"request_id": uuid.uuid4(), "type": kind, "urgency": urgency}],
    )


NAMES = {"ann": "Ann Hub", "bob": "Bob Hub"}


def worker(settings, name: str) -> dict:
    """A Thanet hub worker's token: `name` is their user id; the token's `name` claim is how colleagues know them."""
    return token(settings, "hub", hub="thanet", subject=name, name=NAMES.get(name))


async def shared_out(client, settings) -> dict[str, str]:
    """Four cases routed to Thanet; their assignment ids by request type."""
    for kind, urgency in CASES:
        await deliver(client.app, referral(kind, urgency))
    listed = await client.get("/v1/hubs/thanet/queue", params={"sort": "routed"}, headers=worker(settings, "ann"))
    assert listed.status_code == 200, listed.text
    return {item["type"]: item["id"] for item in listed.json()["items"]}


async def queue(client, settings, who: str, **params) -> dict:
    response = await client.get("/v1/hubs/thanet/queue", params=params, headers=worker(settings, who))
    assert response.status_code == 200, response.text
    return response.json()


async def test_two_workers_share_out_four_cases_and_the_queue_filters_by_holder(client, settings):
    ids = await shared_out(client, settings)
    ann, bob = worker(settings, "ann"), worker(settings, "bob")
    await queue(client, settings, "bob")  # Bob has signed in: he is in Thanet's staff directory

    took = await client.post(f"/v1/assignments/{ids['food']}/take", json={"by_name": "Ann Hub"}, headers=ann)
    assert took.status_code == 200, took.text
    assert (took.json()["holder"], took.json()["holder_name"]) == ("ann", "Ann Hub")
    await client.post(f"/v1/assignments/{ids['shopping']}/take", json={"by_name": "Ann Hub"}, headers=ann)
    shared = await client.post(
        f"/v1/assignments/{ids['prescription']}/hand-over",
        headers=ann,
        json={"to": "bob", "to_name": "Bob Hub", "by_name": "Ann Hub"},
    )
    assert shared.status_code == 200 and shared.json()["holder"] == "bob"
    refused = await client.post(f"/v1/assignments/{ids['food']}/take", json={"by_name": "Bob Hub"}, headers=bob)
    assert refused.status_code == 409 and "ask them to hand it over" in refused.json()["detail"]
    await client.post(f"/v1/assignments/{ids['befriending']}/take", json={"by_name": "Bob Hub"}, headers=bob)
    released = await client.post(f"/v1/assignments/{ids['shopping']}/release", json={}, headers=ann)
    assert released.status_code == 200 and released.json()["holder"] is None
    again = await client.post(f"/v1/assignments/{ids['shopping']}/release", json={}, headers=ann)
    assert again.status_code == 409

    mine = await queue(client, settings, "ann", holder="mine")
    assert [i["type"] for i in mine["items"]] == ["food"] and mine["total"] == 1
    assert mine["items"][0]["holder_name"] == "Ann Hub"
    assert [i["type"] for i in (await queue(client, settings, "ann", holder="unassigned"))["items"]] == ["shopping"]
    bobs = await queue(client, settings, "ann", holder="bob")
    assert [i["type"] for i in bobs["items"]] == ["prescription", "befriending"]  # most urgent first
    assert (await queue(client, settings, "bob", holder="mine"))["total"] == 2

    history = (await client.get(f"/v1/assignments/{ids['shopping']}/holder", headers=bob)).json()["history"]
    assert [(h["change"], h["by"], h["to_holder"]) for h in history] == [
        ("taken", "ann", "ann"),
        ("released", "ann", None),
    ]
    colleagues = (await client.get("/v1/hubs/thanet/colleagues", headers=bob)).json()
    assert colleagues == [{"id": "ann", "name": "Ann Hub"}, {"id": "bob", "name": "Bob Hub"}]


async def test_the_queue_sorts_by_urgency_due_time_or_routing_and_its_total_is_every_match(client, settings):
    await shared_out(client, settings)
    by_urgency = await queue(client, settings, "ann", sort="urgency")
    assert [i["urgency"] for i in by_urgency["items"]] == ["today", "within-48-hours", "this-week", "routine"]
    by_routing = await queue(client, settings, "ann", sort="routed")
    assert [i["urgency"] for i in by_routing["items"]] == ["routine", "this-week", "within-48-hours", "today"]
    by_due = await queue(client, settings, "ann", sort="due")
    dues = [i["next_due_at"] for i in by_due["items"]]
    assert dues == sorted(dues) and by_due["items"][0]["urgency"] == "today"
    page = await queue(client, settings, "ann", sort="urgency", limit=1, offset=1)
    assert (page["count"], page["total"]) == (1, 4) and page["items"][0]["urgency"] == "within-48-hours"
    assert (await queue(client, settings, "ann", type="food"))["total"] == 1


async def test_the_queue_shows_contact_attempts_and_the_next_contact_time(client, settings):
    ids = await shared_out(client, settings)
    ann = worker(settings, "ann")
    for outcome in ("no-answer", "voicemail"):
        response = await client.post(
            f"/v1/assignments/{ids['food']}/contact-attempts", json={"outcome": outcome}, headers=ann
        )
        assert response.status_code == 201, response.text
    call_back = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    set_time = await client.put(
        f"/v1/assignments/{ids['food']}/next-contact",
        headers=ann,
        json={"at": call_back.isoformat(), "by_name": "Ann Hub"},
    )
    assert set_time.status_code == 200, set_time.text
    food = next(i for i in (await queue(client, settings, "ann"))["items"] if i["type"] == "food")
    assert food["contact_attempts"] == 2 and food["last_contact_at"] is not None
    assert datetime.fromisoformat(food["next_contact_at"].replace("Z", "+00:00")) == call_back
    others = [i for i in (await queue(client, settings, "ann"))["items"] if i["type"] != "food"]
    assert {i["contact_attempts"] for i in others} == {0}
    naive = await client.put(
        f"/v1/assignments/{ids['food']}/next-contact", headers=ann, json={"at": "2026-12-01T15:00:00"}
    )
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "at"


async def test_another_hubs_worker_can_neither_see_nor_take_the_case(client, settings):
    ids = await shared_out(client, settings)
    medway = headers(settings, "hub", "medway")
    taken = await client.post(f"/v1/assignments/{ids['food']}/take", json={}, headers=medway)
    assert taken.status_code == 404
    assert (await client.get("/v1/hubs/thanet/queue", headers=medway)).status_code == 403


async def test_holder_changes_are_published_without_anyones_name(client, settings):
    ids = await shared_out(client, settings)
    await queue(client, settings, "bob")
    await client.post(
        f"/v1/assignments/{ids['food']}/take", json={"by_name": "Ann Hub"}, headers=worker(settings, "ann")
    )
    await client.post(
        f"/v1/assignments/{ids['food']}/hand-over",
        json={"to": "bob", "to_name": "Bob Hub"},
        headers=worker(settings, "ann"),
    )
    db = Database(settings.database_url)
    try:
        async with db.sessions() as session:
            rows = (
                await session.execute(
                    select(tables.outbox.c.topic, tables.outbox.c.payload)
                    .where(tables.outbox.c.type == AssignmentHolderChangedV1.type)
                    .order_by(tables.outbox.c.id)
                )
            ).all()
    finally:
        await db.dispose()
    assert {row.topic for row in rows} == {settings.topics.assignment_status}
    events = [orjson.loads(row.payload)["data"] for row in rows]
    assert [(e["change"], e["held"]) for e in events] == [("taken", True), ("handed-over", True)]
    text = b"".join(row.payload for row in rows)
    for name in (b"Ann", b"Bob", b"ann", b"bob", b"Resident"):
        assert name not in text


async def test_the_staff_directory_lists_each_hub_worker_seen_by_the_name_their_token_gives_for_their_hub_only(
    client, settings
):
    assert await staff(client, settings) == []  # read before Ann's first call was recorded (as it answered)
    first = await staff(client, settings)
    assert [(p["id"], p["name"]) for p in first] == [("ann", "Ann Hub")] and first[0]["last_seen_at"]
    await queue(client, settings, "bob")
    await client.get("/v1/hubs/dover/queue", headers=token(settings, "hub", hub="dover", subject="dee", name="Dee"))
    await client.get("/v1/hubs", headers=headers(settings, "admin"))  # an administrator is nobody's colleague
    thanet = await staff(client, settings)
    assert [(p["id"], p["name"]) for p in thanet] == [("ann", "Ann Hub"), ("bob", "Bob Hub")]
    renamed = token(settings, "hub", hub="thanet", subject="bob", name="Robert Hub")
    await client.get("/v1/hubs/thanet/queue", headers=renamed)  # a new name in the identity provider: seen at once
    assert [p["name"] for p in await staff(client, settings)] == ["Ann Hub", "Robert Hub"]
    dover = token(settings, "hub", hub="dover", subject="dee")
    assert (await client.get("/v1/hubs/thanet/staff", headers=dover)).status_code == 403
    assert [p["id"] for p in (await client.get("/v1/hubs/dover/staff", headers=dover)).json()] == ["dee"]
    assert (await client.get("/v1/hubs/thanet/colleagues", headers=dover)).status_code == 403
    colleagues = await client.get("/v1/hubs/thanet/colleagues", headers=worker(settings, "ann"))
    assert colleagues.json() == [{"id": "ann", "name": "Ann Hub"}, {"id": "bob", "name": "Robert Hub"}]


async def test_a_case_is_handed_over_only_to_a_worker_of_its_hub_else_a_field_error_names_to(client, settings):
    ids = await shared_out(client, settings)
    ann = worker(settings, "ann")
    await client.get("/v1/hubs/dover/queue", headers=token(settings, "hub", hub="dover", subject="dee", name="Dee"))
    for stranger in ("dee", "nobody-seen"):
        refused = await client.post(f"/v1/assignments/{ids['food']}/hand-over", headers=ann, json={"to": stranger})
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert error["field"] == "to" and "is not a worker of hub thanet" in error["reason"]
    assert (await client.get(f"/v1/assignments/{ids['food']}/holder", headers=ann)).json()["holder"] is None
    await queue(client, settings, "bob")
    handed = await client.post(f"/v1/assignments/{ids['food']}/hand-over", headers=ann, json={"to": "bob"})
    assert handed.status_code == 200, handed.text
    assert (handed.json()["holder"], handed.json()["holder_name"]) == ("bob", "Bob Hub")  # the name from the directory
    assert handed.json()["history"][0]["by_name"] == "Ann Hub"  # the caller's name from their token


async def staff(client, settings) -> list[dict]:
    response = await client.get("/v1/hubs/thanet/staff", headers=worker(settings, "ann"))
    assert response.status_code == 200, response.text
    return response.json()
