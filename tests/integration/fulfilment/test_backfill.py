"""Recording a hub's work in the past: a migrated (or demo) case keeps the times it really happened."""

from datetime import UTC, datetime, timedelta

from services.fulfilment.service import escalate_overdue
from tests.integration.fulfilment.conftest import deliver, headers, hub_assignments, referral_received
from tests.support.kafka import read_topic

SERVICE = "fulfilment"
RECEIVED = datetime(2020, 4, 3, 10, 15, tzinfo=UTC)


async def backfilled_assignment(client, settings) -> dict:
    referral = referral_received(types=("food",)).model_copy(update={"received_at": RECEIVED, "backfilled": True})
    await deliver(client.app, referral)
    [item] = await hub_assignments(client, settings, "thanet", expect=1)
    return item


async def move(client, settings, assignment_id, body, *, role="admin", hub=None):
    return await client.post(
        f"/v1/assignments/{assignment_id}/transitions", json=body, headers=headers(settings, role, hub)
    )


async def test_a_backfilled_referral_reached_its_hub_when_it_was_received(client, settings):
    item = await backfilled_assignment(client, settings)
    assert datetime.fromisoformat(item["routed_at"]) == RECEIVED
    assert datetime.fromisoformat(item["accept_due_at"]) == RECEIVED + timedelta(hours=4)  # urgency today


async def test_a_deadline_that_passed_before_the_case_was_recorded_shows_overdue_but_raises_no_escalation(
    client, settings
):
    item = await backfilled_assignment(client, settings)
    runtime = client.app.state.runtime

    assert await escalate_overdue(runtime.uow(), topics=settings.topics) == 0
    [listed] = await hub_assignments(client, settings, "thanet", expect=1, overdue="true")
    assert listed["id"] == item["id"] and listed["overdue_deadlines"] == ["accept", "fulfil"]
    assert listed["escalated_at"] is None


async def test_an_administrator_records_when_a_hub_accepted_and_fulfilled_and_the_events_carry_those_times(
    client, settings
):
    item = await backfilled_assignment(client, settings)
    accepted, fulfilled = RECEIVED + timedelta(hours=2), RECEIVED + timedelta(hours=20)
    for body in (
        {"to": "accepted", "at": accepted.isoformat()},
        {"to": "in_progress", "at": accepted.isoformat()},
        {"to": "fulfilled", "outcome": "delivered", "at": fulfilled.isoformat()},
    ):
        response = await move(client, settings, item["id"], body)
        assert response.status_code == 200, response.text

    detail = (await client.get(f"/v1/assignments/{item['id']}", headers=headers(settings, "admin"))).json()
    assert datetime.fromisoformat(detail["accepted_at"]) == accepted
    assert datetime.fromisoformat(detail["closed_at"]) == fulfilled
    assert [datetime.fromisoformat(h["at"]) for h in detail["history"]] == [RECEIVED, accepted, accepted, fulfilled]
    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.assignment_status, expect=4)
    last = events[-1][1].data
    assert last["status"] == "fulfilled"
    assert datetime.fromisoformat(last["changed_at"]) == fulfilled
    assert datetime.fromisoformat(last["accepted_at"]) == accepted


async def test_hub_staff_cannot_date_a_transition(client, settings):
    item = await backfilled_assignment(client, settings)
    response = await move(
        client,
        settings,
        item["id"],
        {"to": "accepted", "at": (RECEIVED + timedelta(hours=1)).isoformat()},
        role="hub",
        hub="thanet",
    )
    assert response.status_code == 403, response.text
    assert response.json()["field"] == "at" and "assignments:backfill" in response.json()["detail"]


async def test_a_transition_dated_in_the_future_is_refused_naming_at(client, settings):
    item = await backfilled_assignment(client, settings)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    response = await move(client, settings, item["id"], {"to": "accepted", "at": tomorrow.isoformat()})
    assert response.status_code == 422, response.text
    assert {e["field"]: e["reason"] for e in response.json()["errors"]}["at"] == "is in the future"


async def test_a_transition_dated_before_the_assignments_last_change_is_refused_naming_at(client, settings):
    item = await backfilled_assignment(client, settings)
    response = await move(
        client, settings, item["id"], {"to": "accepted", "at": (RECEIVED - timedelta(hours=1)).isoformat()}
    )
    assert response.status_code == 422, response.text
    assert "before the assignment's last change" in {e["field"]: e["reason"] for e in response.json()["errors"]}["at"]


async def test_a_transition_dated_without_a_time_zone_is_refused_naming_at(client, settings):
    item = await backfilled_assignment(client, settings)
    response = await move(client, settings, item["id"], {"to": "accepted", "at": "2020-04-03T12:00:00"})
    assert response.status_code == 422, response.text
    assert "at" in {e["field"] for e in response.json()["errors"]}
