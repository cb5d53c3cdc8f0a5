"""Fulfilment's status events: a fetch of them is applied in its order with one read and one write, not one per event."""

import uuid
from datetime import timedelta

from sqlalchemy import event as sqlalchemy_event

from shared.db import utcnow
from shared.events import CloudEvent
from tests.integration.fulfilment.test_batch_routing import records
from tests.integration.referrals.test_retention import post, status_changed
from tests.support.apps import token

SERVICE = "referrals"


def status(referral: dict, request: dict, progress: str, at, *, outcome=None) -> CloudEvent:
    return status_changed(referral, request, status=progress, at=at, outcome=outcome)


def status_consumer(app):
    [consumer] = app.state.consumer_factory(app.state.runtime)  # the service's own: handlers and batch handler
    return consumer


async def held(client, settings, referral: dict) -> dict:
    response = await client.get(f"/v1/referrals/{referral['id']}", headers=token(settings, "call-centre"))
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_fetch_of_status_events_is_applied_in_its_order_closing_what_the_hub_closed(client, settings):
    closing, staying = await post(client, settings, "Closing Case"), await post(client, settings, "Open Case")
    now = utcnow()
    (food, prescription), (other_food, _) = closing["requests"], staying["requests"]
    stranger = {**other_food, "id": str(uuid.uuid4())}  # a request referrals never took
    events = [
        status(closing, food, "accepted", now),
        status(staying, other_food, "accepted", now),
        status(closing, food, "fulfilled", now + timedelta(minutes=1), outcome="delivered"),
        status(staying, stranger, "accepted", now),
        status(closing, prescription, "unable_to_fulfil", now + timedelta(minutes=2), outcome="resident-unreachable"),
        status(staying, other_food, "routed", now - timedelta(minutes=1)),  # older than what is held: a republish
    ]
    consumer = status_consumer(client.app)

    await consumer.process_many(records(settings.topics.assignment_status, events))

    assert consumer.processed_total == len(events) and consumer.dead_lettered_total == 0
    closed, still_open = await held(client, settings, closing), await held(client, settings, staying)
    assert closed["status"] == "closed" and closed["closed_at"] is not None
    assert [(r["status"], r["progress"], r["outcome"]) for r in closed["requests"]] == [
        ("closed", "fulfilled", "delivered"),
        ("closed", "unable_to_fulfil", "resident-unreachable"),
    ]
    assert still_open["status"] == "open"
    assert [(r["status"], r["progress"], r["hub"]) for r in still_open["requests"]] == [
        ("open", "accepted", "thanet"),
        ("open", None, None),
    ]

    await consumer.process_many(records(settings.topics.assignment_status, events))  # redelivered: nothing changes
    assert await held(client, settings, closing) == closed and await held(client, settings, staying) == still_open


async def test_a_fetch_of_status_events_reads_and_writes_the_requests_once_however_many_events(client, settings):
    referrals = [await post(client, settings, f"Resident {n}") for n in range(6)]
    now = utcnow()
    events = [status(r, q, "accepted", now) for r in referrals for q in r["requests"]]
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE requests") or "referral_status" in statement:  # the status consumer's
            statements.append(statement.split()[0])

    engine = client.app.state.runtime.db.engine.sync_engine
    sqlalchemy_event.listen(engine, "before_cursor_execute", seen)
    try:
        await status_consumer(client.app).process_many(records(settings.topics.assignment_status, events))
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", seen)

    assert statements == ["SELECT", "UPDATE"]  # 12 events: one read, one UPDATE of 12 rows
    for referral in referrals:
        assert {r["progress"] for r in (await held(client, settings, referral))["requests"]} == {"accepted"}
