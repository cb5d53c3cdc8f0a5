"""SLA: a request not accepted or fulfilled in time is escalated, once, whatever restarts or runs beside."""

import asyncio

from sqlalchemy import func, select

from services.fulfilment.app import create_app
from services.fulfilment.models import escalations
from shared.events import AssignmentEscalatedV1
from tests.integration.fulfilment.conftest import deliver, eventually, headers, hub_assignments, referral_received
from tests.support.apps import running
from tests.support.kafka import read_topic

SERVICE = "fulfilment"

# About a second to accept and two to fulfil: deadlines that pass while the test watches.
FAST_SLA = {"sla": {"today": {"accept_hours": 0.0003, "fulfil_hours": 0.0006}}}


async def count_escalations(app) -> int:
    async with app.state.runtime.db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(escalations))


async def test_an_overdue_assignment_is_escalated_once_per_deadline_with_two_schedulers_running(
    client,
    settings,
    directory,
):
    # A second instance on the same database, its scheduler racing the first. (Its relay
    # is off: SQLite runs one relay per database, and the topic is checked below.)
    settings = settings.model_copy(update={"run_consumers": False, "run_relay": False, "sla_poll_seconds": 0.02})
    second = create_app(settings, directory=directory)
    async with running(second):
        patched = await client.patch("/v1/hubs/thanet", json=FAST_SLA, headers=headers(settings, "admin"))
        assert patched.status_code == 200, patched.text
        await deliver(client.app, referral_received(types=("food", "prescription"), urgency="today"))

        async def four_escalations():
            return await count_escalations(client.app) >= 4

        await eventually(four_escalations, timeout=15)
        await asyncio.sleep(0.5)  # many more rounds of both schedulers
        schedulers = [client.app.state.scheduler, second.state.scheduler]
        assert sum(s.escalated_total for s in schedulers) == 4

    assert await count_escalations(client.app) == 4
    events = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.topics.assignment_status,
        event_type=AssignmentEscalatedV1.type,
        expect=4,
    )
    assert sorted(e.data["deadline"] for _, e in events) == ["accept", "accept", "fulfil", "fulfil"]
    assert len({(e.data["assignment_id"], e.data["deadline"]) for _, e in events}) == 4
    assert all(e.data["hub"] == "thanet" and "Margaret" not in e.to_bytes().decode() for _, e in events)
    feed = (await client.get("/v1/hubs/thanet/feed", headers=headers(settings, "hub", "thanet"))).json()
    assert sum(1 for item in feed["items"] if item["event"]["type"] == AssignmentEscalatedV1.type) == 4


async def test_overdue_requests_show_as_overdue_and_the_filter_finds_them(client, settings):
    await client.patch("/v1/hubs/thanet", json=FAST_SLA, headers=headers(settings, "admin"))
    await deliver(client.app, referral_received(types=("food",), urgency="today"))
    await deliver(client.app, referral_received(types=("befriending",), urgency="routine"))
    thanet = headers(settings, "hub", "thanet")

    async def one_overdue():
        response = await client.get("/v1/hubs/thanet/assignments", params={"overdue": "true"}, headers=thanet)
        return response.json()["items"] or None

    [late] = await eventually(one_overdue, timeout=10)

    assert late["type"] == "food" and late["overdue"] is True and "accept" in late["overdue_deadlines"]
    on_time = await client.get("/v1/hubs/thanet/assignments", params={"overdue": "false"}, headers=thanet)
    assert [i["type"] for i in on_time.json()["items"]] == ["befriending"]
    assert on_time.json()["items"][0]["overdue"] is False


async def test_a_deadline_missed_while_no_scheduler_ran_is_escalated_after_a_restart_and_only_once(
    client,
    settings,
    directory,
):
    fast_accept = {"sla": {"today": {"accept_hours": 0.0003}}}
    await client.patch("/v1/hubs/thanet", json=fast_accept, headers=headers(settings, "admin"))
    # Stop the fixture app's scheduler: the deadline passes with none running.
    runtime = client.app.state.runtime
    for task in [t for t in runtime.tasks if t.get_name() == "sla-scheduler"]:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await deliver(client.app, referral_received(types=("food",), urgency="today"))
    await hub_assignments(client, settings, "thanet", expect=1)
    await asyncio.sleep(1.3)
    assert await count_escalations(client.app) == 0

    live = settings.model_copy(update={"run_consumers": False})
    for _ in range(2):  # started, stopped, started again
        restarted = create_app(live, directory=directory)
        async with running(restarted):

            async def escalated():
                return await count_escalations(client.app) >= 1

            await eventually(escalated, timeout=10)
            await asyncio.sleep(0.5)
    assert await count_escalations(client.app) == 1
