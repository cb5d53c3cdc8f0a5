"""Recurring requests through fulfilment's API: fulfilling an occurrence opens the next for the same hub."""

from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import func, select

from services.fulfilment.models import assignments, series, tables
from shared.db import Database
from shared.events import (
    AssignmentHolderChangedV1,
    AssignmentRoutedV1,
    AssignmentStatusChangedV1,
    RecurrenceV1,
    ReferralReceivedV1,
    RequestCancelledV1,
    ResidentErasedV1,
)
from tests.integration.fulfilment.conftest import THANET_POSTCODE, deliver, referral_received
from tests.support.apps import token

SERVICE = "fulfilment"


def weekly(*, occurrences: int | None = 6, ends_on=None, one_offs=()) -> ReferralReceivedV1:
    """A referral whose first request, a food shop, recurs weekly; `one_offs` are requests made once."""
    received = referral_received(types=("food", *one_offs), urgency="this-week")
    received.requests[0].recurrence = RecurrenceV1(frequency="weekly", occurrences=occurrences, ends_on=ends_on)
    return received


def ann(settings) -> dict:
    return token(settings, "hub", hub="thanet", subject="ann")


async def queue(client, settings) -> dict:
    response = await client.get("/v1/hubs/thanet/queue", headers=ann(settings))
    assert response.status_code == 200, response.text
    return response.json()


async def fulfil(client, settings, assignment_id: str) -> dict:
    for to in ("accepted", "in_progress", "fulfilled"):
        response = await client.post(
            f"/v1/assignments/{assignment_id}/transitions", json={"to": to}, headers=ann(settings)
        )
        assert response.status_code == 200, response.text
    return response.json()


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


async def outbox(settings, event_type: str) -> list[tuple[str, dict]]:
    db = Database(settings.database_url)
    try:
        async with db.sessions() as session:
            rows = (
                await session.execute(
                    select(tables.outbox.c.topic, tables.outbox.c.payload)
                    .where(tables.outbox.c.type == event_type)
                    .order_by(tables.outbox.c.id)
                )
            ).all()
    finally:
        await db.dispose()
    return [(row.topic, orjson.loads(row.payload)) for row in rows]


async def occurrences_of(settings, series_id: str) -> int:
    db = Database(settings.database_url)
    try:
        async with db.sessions() as session:
            return await session.scalar(
                select(func.count()).select_from(assignments).where(assignments.c.series_id == series_id)
            )
    finally:
        await db.dispose()


async def test_fulfilling_a_weekly_occurrence_opens_next_weeks_for_the_same_hub_and_the_queue_totals_stay_right(
    client, settings
):
    received = weekly(one_offs=("prescription", "befriending"))
    series_id = str(received.requests[0].request_id)
    await deliver(client.app, received)
    before = await queue(client, settings)
    assert before["total"] == 3
    first = next(i for i in before["items"] if i["type"] == "food")
    assert first["series"]["label"] == "weekly, 1 of 6" and first["series"]["id"] == series_id
    assert parse(first["series"]["next_due_at"]) == parse(first["fulfil_due_at"]) + timedelta(weeks=1)
    assert all(i["series"] is None for i in before["items"] if i["type"] != "food")

    done = await fulfil(client, settings, first["id"])
    assert done["status"] == "fulfilled" and done["next_occurrence"]["occurrence"] == 2

    after = await queue(client, settings)
    assert after["total"] == 3  # one closed, one opened: the two one-offs and next week's shop
    second = next(i for i in after["items"] if i["type"] == "food")
    assert second["id"] == done["next_occurrence"]["id"] != first["id"]
    assert (second["hub"], second["status"], second["series"]["label"]) == ("thanet", "routed", "weekly, 2 of 6")
    assert parse(second["fulfil_due_at"]) == parse(first["fulfil_due_at"]) + timedelta(weeks=1)
    assert parse(second["accept_due_at"]) == parse(first["accept_due_at"]) + timedelta(weeks=1)

    case = (await client.get(f"/v1/assignments/{second['id']}", headers=ann(settings))).json()
    assert [(h["from_status"], h["to_status"], h["to_hub"]) for h in case["history"]] == [(None, "routed", "thanet")]
    assert "weekly, 2 of 6" in case["reason"]

    statuses = [e["data"] for _, e in await outbox(settings, AssignmentStatusChangedV1.type)]
    closing = next(e for e in statuses if e["assignment_id"] == first["id"] and e["status"] == "fulfilled")
    assert (closing["series_id"], closing["occurrence"], closing["series_continues"]) == (series_id, 1, True)
    opening = next(e for e in statuses if e["assignment_id"] == second["id"])
    assert (opening["series_id"], opening["occurrence"], opening["frequency"], opening["status"]) == (
        series_id,
        2,
        "weekly",
        "routed",
    )
    assert opening["request_id"] != series_id and opening["channel"] == "phone"
    status_bytes = orjson.dumps(statuses)
    for personal in (b"Margaret", b"577000", b"Northdown", b"please call first", THANET_POSTCODE.encode()):
        assert personal not in status_bytes  # the reporting events name nobody
    feed = (await client.get("/v1/hubs/thanet/feed", params={"cursor": 0}, headers=ann(settings))).json()
    routed = [i["event"]["data"] for i in feed["items"] if i["event"]["type"] == AssignmentRoutedV1.type]
    told = next(e for e in routed if e["assignment_id"] == second["id"])  # the hub's topic, feed and webhook
    assert told["hub"] == "thanet" and told["series"] == {
        "series_id": series_id,
        "occurrence": 2,
        "frequency": "weekly",
        "occurrences": 6,
        "ends_on": None,
    }


async def test_a_retried_fulfilment_opens_no_second_occurrence(client, settings):
    received = weekly()
    series_id = str(received.requests[0].request_id)
    await deliver(client.app, received)
    first = (await queue(client, settings))["items"][0]
    await fulfil(client, settings, first["id"])
    again = await client.post(
        f"/v1/assignments/{first['id']}/transitions", json={"to": "fulfilled"}, headers=ann(settings)
    )
    assert again.status_code == 409
    assert await occurrences_of(settings, series_id) == 2
    assert (await queue(client, settings))["total"] == 1


async def test_the_series_ends_at_its_count_and_the_last_occurrence_says_so(client, settings):
    received = weekly(occurrences=2)
    series_id = str(received.requests[0].request_id)
    await deliver(client.app, received)
    second = (await fulfil(client, settings, (await queue(client, settings))["items"][0]["id"]))["next_occurrence"]
    last = next(i for i in (await queue(client, settings))["items"] if i["id"] == second["id"])
    assert last["series"]["label"] == "weekly, 2 of 2" and last["series"]["next_due_at"] is None
    done = await fulfil(client, settings, second["id"])
    assert done.get("next_occurrence") is None
    assert (await queue(client, settings))["total"] == 0
    assert await occurrences_of(settings, series_id) == 2
    statuses = [e["data"] for _, e in await outbox(settings, AssignmentStatusChangedV1.type)]
    final = next(e for e in statuses if e["assignment_id"] == second["id"] and e["status"] == "fulfilled")
    assert final["series_continues"] is False


async def test_cancelling_the_recurring_request_closes_its_open_occurrence_and_stops_the_series(client, settings):
    received = weekly(occurrences=None)  # until cancelled
    series_id = str(received.requests[0].request_id)
    await deliver(client.app, received)
    second = (await fulfil(client, settings, (await queue(client, settings))["items"][0]["id"]))["next_occurrence"]
    await deliver(
        client.app,
        RequestCancelledV1(
            referral_id=received.referral_id,
            request_id=received.requests[0].request_id,  # the request as referrals knows it: the series
            request_type="food",
            reason="no-longer-needed",
            cancelled_at=datetime.now(UTC),
        ),
    )
    case = (await client.get(f"/v1/assignments/{second['id']}", headers=ann(settings))).json()
    assert case["status"] == "cancelled" and case["series"]["ended_reason"] == "cancelled"
    assert (await queue(client, settings))["total"] == 0
    assert await occurrences_of(settings, series_id) == 2


async def test_after_erasure_fulfilling_the_open_occurrence_opens_no_other(client, settings):
    received = weekly()
    series_id = str(received.requests[0].request_id)
    await deliver(client.app, received)
    first = (await queue(client, settings))["items"][0]
    await client.post(f"/v1/assignments/{first['id']}/transitions", json={"to": "accepted"}, headers=ann(settings))
    await deliver(
        client.app,
        ResidentErasedV1(referral_id=received.referral_id, erased_at=datetime.now(UTC), reason="request"),
    )
    for to in ("in_progress", "fulfilled"):
        response = await client.post(
            f"/v1/assignments/{first['id']}/transitions", json={"to": to}, headers=ann(settings)
        )
        assert response.status_code == 200, response.text
    assert response.json().get("next_occurrence") is None
    assert await occurrences_of(settings, series_id) == 1
    db = Database(settings.database_url)
    try:
        async with db.sessions() as session:
            ended = (await session.execute(select(series.c.ended_reason).where(series.c.id == series_id))).scalar()
    finally:
        await db.dispose()
    assert ended == "erased"


async def test_next_weeks_occurrence_is_held_by_the_worker_who_held_this_weeks(client, settings):
    await deliver(client.app, weekly())
    first = (await queue(client, settings))["items"][0]
    took = await client.post(f"/v1/assignments/{first['id']}/take", json={"by_name": "Ann Hub"}, headers=ann(settings))
    assert took.status_code == 200, took.text
    done = await fulfil(client, settings, first["id"])

    second_id = done["next_occurrence"]["id"]
    holder = (await client.get(f"/v1/assignments/{second_id}/holder", headers=ann(settings))).json()
    assert (holder["holder"], holder["holder_name"]) == ("ann", "Ann Hub")
    assert [(h["change"], h["by"], h["to_holder"]) for h in holder["history"]] == [("carried-over", "ann", "ann")]
    mine = (await client.get("/v1/hubs/thanet/queue", params={"holder": "mine"}, headers=ann(settings))).json()
    assert [i["id"] for i in mine["items"]] == [second_id]
    published = [e["data"] for _, e in await outbox(settings, AssignmentHolderChangedV1.type)]
    carried = [e for e in published if e["assignment_id"] == second_id]
    assert [(e["change"], e["held"]) for e in carried] == [("carried-over", True)]


async def test_an_occurrence_nobody_held_opens_the_next_unheld(client, settings):
    await deliver(client.app, weekly())
    first = (await queue(client, settings))["items"][0]
    done = await fulfil(client, settings, first["id"])
    holder = (await client.get(f"/v1/assignments/{done['next_occurrence']['id']}/holder", headers=ann(settings))).json()
    assert holder["holder"] is None and holder["history"] == []
