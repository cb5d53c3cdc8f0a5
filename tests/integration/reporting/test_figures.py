"""Figures from the projected events: exact counts by every grouping, as JSON and CSV, cached cheaply."""

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from shared.events import ActionCreatedV1, ActionRagChangedV1
from tests.integration.reporting.conftest import APRIL, CANTERBURY, Story, analyst, by, deliver, figure
from tests.support.apps import token

SERVICE = "reporting"
H = timedelta(hours=1)


def april_stories():
    """Six requests: three in Thanet, two in Canterbury (one on 2 April), one from Medway (out of area)."""
    fulfilled, overdue, cancelled = Story(), Story(), Story(channel="online")
    cant1 = Story(request_type="prescription", channel="online", district_code=CANTERBURY, hub="canterbury")
    cant2 = Story(
        request_type="prescription",
        channel="online",
        district_code=CANTERBURY,
        hub="canterbury",
        received_at=APRIL + timedelta(days=1),
    )
    medway = Story(request_type="befriending", channel="partner", district_code="E06000035", hub=None)
    events = [
        fulfilled.received(),
        fulfilled.status_changed("routed", after=0.1 * H),
        fulfilled.status_changed("accepted", after=2 * H),
        fulfilled.status_changed("in_progress", after=3 * H),
        fulfilled.status_changed("fulfilled", after=26 * H, outcome="delivered"),
        overdue.received(),
        overdue.status_changed("routed", after=0.1 * H),
        overdue.escalated("accept", after=4 * H),
        cancelled.received(),
        cancelled.status_changed("routed", after=0.1 * H),
        cancelled.cancelled(after=1 * H),
        cant1.received(),
        cant1.status_changed("routed", after=0.1 * H),
        cant1.status_changed("accepted", after=6 * H),
        cant2.received(),
        cant2.status_changed("routed", after=0.1 * H),
        medway.received(),
        medway.status_changed("out_of_area", after=0.1 * H),
    ]
    return events


async def test_every_request_counts_once_by_type_district_channel_status_and_day(client, settings):
    await deliver(client.app, *april_stories())

    types = await figure(client, settings, "requests", group_by="type")
    assert by(types["rows"], "type") == {"food": 3, "prescription": 2, "befriending": 1}
    assert {r["type"]: r["share"] for r in types["rows"]} == {
        "food": 0.5,
        "prescription": 0.3333,
        "befriending": 0.1667,
    }
    assert types["as_at"] is not None and types["columns"] == ["type", "count", "share"]
    districts = await figure(client, settings, "requests", group_by="district")
    assert by(districts["rows"], "district") == {"thanet": 3, "canterbury": 2, "out-of-area": 1}
    channels = await figure(client, settings, "requests", group_by="channel")
    assert by(channels["rows"], "channel") == {"phone": 2, "online": 3, "partner": 1}
    statuses = await figure(client, settings, "requests", group_by="status")
    assert by(statuses["rows"], "status") == {
        "fulfilled": 1,
        "routed": 2,
        "accepted": 1,
        "cancelled": 1,
        "out_of_area": 1,
    }
    days = await figure(client, settings, "requests", group_by="day")
    assert by(days["rows"], "day") == {"2020-04-01": 5, "2020-04-02": 1}
    referrals = await figure(client, settings, "referrals", group_by="channel")
    assert by(referrals["rows"], "channel") == {"phone": 2, "online": 3, "partner": 1}


async def test_events_arriving_out_of_order_between_topics_give_the_same_figures(client, settings):
    await deliver(client.app, *reversed(april_stories()))

    statuses = await figure(client, settings, "requests", group_by="status")
    assert by(statuses["rows"], "status") == {
        "fulfilled": 1,
        "routed": 2,
        "accepted": 1,
        "cancelled": 1,
        "out_of_area": 1,
    }
    assert by((await figure(client, settings, "requests", group_by="channel"))["rows"], "channel") == {
        "phone": 2,
        "online": 3,
        "partner": 1,
    }
    assert by((await figure(client, settings, "requests", group_by="district"))["rows"], "district") == {
        "thanet": 3,
        "canterbury": 2,
        "out-of-area": 1,
    }


async def test_an_event_delivered_twice_is_counted_once(client, settings):
    story = Story()
    [received] = await deliver(client.app, story.received())
    await deliver(client.app, received, received)

    assert by((await figure(client, settings, "requests", group_by="type"))["rows"], "type") == {"food": 1}


async def test_filters_by_date_range_and_district_read_the_same_counts(client, settings):
    await deliver(client.app, *april_stories())

    first_day = await figure(
        client, settings, "requests", group_by="type", **{"from": "2020-04-01", "to": "2020-04-02"}
    )
    assert by(first_day["rows"], "type") == {"food": 3, "prescription": 1, "befriending": 1}
    canterbury = await figure(
        client,
        settings,
        "requests",
        group_by="day",
        district="canterbury",
        **{"from": "2020-04-01", "to": "2020-04-04"},
    )
    assert by(canterbury["rows"], "day") == {"2020-04-01": 1, "2020-04-02": 1, "2020-04-03": 0}
    weeks = await figure(client, settings, "requests", group_by="week")
    assert by(weeks["rows"], "week") == {"2020-03-30": 6}


async def test_timings_sla_breaches_queues_and_backlog(client, settings):
    await deliver(client.app, *april_stories())

    timings = {r["measure"]: r for r in (await figure(client, settings, "timings"))["rows"]}
    assert timings["accept"]["count"] == 2 and timings["accept"]["median_hours"] == 2.0
    assert timings["accept"]["p90_hours"] == 6.0
    assert timings["fulfil"] == {"measure": "fulfil", "count": 1, "median_hours": 26.0, "p90_hours": 26.0}
    assert by((await figure(client, settings, "sla"))["rows"], "deadline") == {"accept": 1, "fulfil": 0}
    assert by((await figure(client, settings, "queues"))["rows"], "queue") == {"out_of_area": 1, "triage": 0}
    backlog = (await figure(client, settings, "backlog"))["rows"]
    assert sum(r["count"] for r in backlog) == 4  # routed ×2, accepted, out of area: all from 2020
    assert by(backlog, "age")["7 days or more"] == 4


async def test_csv_has_the_json_rows_and_keeps_its_header_when_empty(client, settings):
    await deliver(client.app, *april_stories())

    response = await client.get(
        "/v1/figures/requests", params={"group_by": "district"}, headers=analyst(settings) | {"Accept": "text/csv"}
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["district"]: int(r["count"]) for r in rows} == {"thanet": 3, "canterbury": 2, "out-of-area": 1}
    empty = await client.get(
        "/v1/figures/requests",
        params={"group_by": "type", "format": "csv", "from": "2021-01-01", "to": "2021-02-01"},
        headers=analyst(settings),
    )
    assert empty.text == "type,count,share\n"
    as_json = await figure(client, settings, "requests", group_by="type", **{"from": "2021-01-01", "to": "2021-02-01"})
    assert as_json["rows"] == [] and as_json["columns"] == ["type", "count", "share"]


async def test_head_and_if_none_match_answer_cheaply_until_the_figures_change(client, settings):
    story = Story()
    await deliver(client.app, story.received())
    first = await client.get("/v1/figures/requests", headers=analyst(settings))
    etag = first.headers["etag"]
    assert first.headers["last-modified"] and "max-age" in first.headers["cache-control"]

    head = await client.head("/v1/figures/requests", headers=analyst(settings))
    assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
    unchanged = await client.get("/v1/figures/requests", headers=analyst(settings) | {"If-None-Match": etag})
    assert unchanged.status_code == 304

    await deliver(client.app, Story().received())
    changed = await client.get("/v1/figures/requests", headers=analyst(settings) | {"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert by(changed.json()["rows"], "type") == {"food": 2}


async def test_small_numbers_are_shown_as_under_five_when_suppression_is_asked_for(client, settings):
    await deliver(client.app, *[Story().received() for _ in range(5)], Story(request_type="financial").received())

    rows = (await figure(client, settings, "requests", group_by="type", suppress="true"))["rows"]
    assert {r["type"]: (r["count"], r["share"]) for r in rows} == {"food": (5, 0.8333), "financial": ("<5", None)}


async def test_a_wrong_parameter_is_a_problem_naming_the_field(client, settings):
    for params, field in (
        ({"group_by": "colour"}, "group_by"),
        ({"district": "medway"}, "district"),
        ({"from": "2020-04-05", "to": "2020-04-01"}, "to"),
        ({"from": "1 April"}, "from"),
    ):
        response = await client.get("/v1/figures/requests", params=params, headers=analyst(settings))
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_analysts_and_administrators_read_figures_and_hub_staff_do_not(client, settings):
    for role, status in (("analyst", 200), ("admin", 200), ("call-centre", 403)):
        response = await client.get("/v1/figures/requests", headers=token(settings, role))
        assert response.status_code == status, role
    assert (await client.get("/v1/figures/requests")).status_code == 401


def action(number: int, *, cell: str, rag: str | None, status: str, due: str, created=APRIL):
    import uuid
    from datetime import date

    return ActionCreatedV1(
        action_id=uuid.UUID(int=number + (1000 if cell == "economy" else 0)),
        plan="krf",
        cell=cell,
        number=number,
        kind="mitigate",
        priority="essential",
        timescale="short",
        status=status,
        rag=rag,
        progress=number * 10,
        baseline_due_date=date.fromisoformat(due),
        due_date=date.fromisoformat(due),
        created_at=created,
    )


async def test_actions_by_rag_and_cell_take_each_action_as_it_last_stood(client, settings):
    first = action(1, cell="economy", rag=None, status="not-started", due="2020-10-01")
    rated = ActionRagChangedV1(
        **{**first.model_dump(exclude={"created_at"}), "rag": "red", "status": "off-track"},
        previous_rag=None,
        changed_at=APRIL + 2 * H,
    )
    await deliver(
        client.app,
        rated,
        first,  # the later state first: the earlier one must not win
        action(2, cell="economy", rag="green", status="complete", due="2020-10-01"),
        action(3, cell="health", rag="amber", status="on-track", due="2099-01-01"),
    )

    rag = await figure(client, settings, "actions", group_by="rag")
    assert by(rag["rows"], "rag") == {"red": 1, "green": 1, "amber": 1}
    cells = {r["cell"]: r for r in (await figure(client, settings, "actions", group_by="cell"))["rows"]}
    assert (cells["economy"]["count"], cells["economy"]["overdue"], cells["economy"]["progress"]) == (2, 1, 15.0)
    assert (cells["health"]["count"], cells["health"]["overdue"]) == (1, 0)


async def test_the_read_only_views_add_up_to_the_figures(client, settings):
    await deliver(client.app, *april_stories())

    engine = client.app.state.runtime.db.engine
    async with engine.connect() as connection:
        daily = dict(
            (
                await connection.execute(
                    text(
                        "SELECT value, SUM(count) FROM reporting_requests_daily WHERE dimension = 'type' GROUP BY value"
                    )
                )
            ).all()
        )
        facts = (await connection.execute(text("SELECT COUNT(*) FROM reporting_requests"))).scalar()
        if engine.dialect.name == "postgresql":
            grants = set(
                (
                    await connection.execute(
                        text(
                            "SELECT table_name FROM information_schema.role_table_grants "
                            "WHERE grantee = 'kt_reporting_reader' AND privilege_type = 'SELECT'"
                        )
                    )
                ).scalars()
            )
            assert {"reporting_requests", "reporting_requests_daily", "reporting_actions"} <= grants
    assert {k: int(v) for k, v in daily.items()} == {"food": 3, "prescription": 2, "befriending": 1}
    assert facts == 6


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_projections_of_the_same_request_at_once_keep_both_changes(client, settings):
    from services.reporting import service

    story = Story()
    await deliver(client.app, story.received(), story.status_changed("routed", after=0.1 * H))
    runtime = client.app.state.runtime
    accepted = story.status_changed("accepted", after=1 * H).envelope(source="/test")
    breached = story.escalated("fulfil", after=30 * H).envelope(source="/test")

    async def project_and_commit(event):
        async with runtime.uow() as uow:
            await service.project(uow, [event])
            await uow.commit()

    async with runtime.uow() as first:
        await service.project(first, [accepted])
        second = asyncio.create_task(project_and_commit(breached))
        await asyncio.sleep(0.3)  # let the second read now, if nothing makes it wait
        await first.commit()
    await second

    assert by((await figure(client, settings, "requests", group_by="status"))["rows"], "status") == {"accepted": 1}
    assert by((await figure(client, settings, "sla"))["rows"], "deadline") == {"accept": 0, "fulfil": 1}
    facts = await client.get(
        "/odata/RequestFacts", params={"$select": "status,fulfil_breached,accepted_at"}, headers=analyst(settings)
    )
    [fact] = facts.json()["value"]
    assert (fact["status"], fact["fulfil_breached"]) == ("accepted", True) and fact["accepted_at"]


async def test_each_backlog_row_gives_the_age_of_its_own_oldest_request(client, settings):
    now = datetime.now(UTC)
    await deliver(
        client.app,
        *(
            Story(received_at=now - age).received()
            for age in (timedelta(hours=2), timedelta(hours=5), timedelta(days=2), timedelta(days=400))
        ),
    )
    rows = {r["age"]: r for r in (await figure(client, settings, "backlog"))["rows"]}
    assert (rows["under 1 day"]["count"], round(rows["under 1 day"]["oldest_hours"])) == (2, 5)
    assert round(rows["1-3 days"]["oldest_hours"]) == 48
    assert round(rows["7 days or more"]["oldest_hours"]) == 400 * 24


async def test_requests_past_a_deadline_that_was_never_escalated_show_as_overdue_now(client, settings):
    # Backfilled: deadlines that passed before the case was recorded are never escalated.
    waiting, working, done = Story(urgency="today"), Story(urgency="today"), Story(urgency="today")
    events = [s.received() for s in (waiting, working, done)]
    for story in (waiting, working, done):
        routed = story.status_changed("routed", after=timedelta(minutes=5))
        events.append(
            routed.model_copy(
                update={"accept_due_at": APRIL + timedelta(hours=4), "fulfil_due_at": APRIL + timedelta(days=1)}
            )
        )
    events += [
        working.status_changed("accepted", after=timedelta(hours=1)),
        done.status_changed("accepted", after=timedelta(hours=1)),
        done.status_changed("fulfilled", after=timedelta(hours=3), outcome="delivered"),
    ]
    await deliver(client.app, *events)

    rows = {r["deadline"]: r for r in (await figure(client, settings, "sla"))["rows"]}
    assert (rows["accept"]["count"], rows["accept"]["overdue_now"]) == (0, 1)  # waiting: never accepted
    assert (rows["fulfil"]["count"], rows["fulfil"]["overdue_now"]) == (0, 1)  # working: accepted, not fulfilled
