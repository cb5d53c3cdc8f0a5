"""What reporting gets: exports, a plan's snapshot as at a date, and events on the actions topic."""

import asyncio
import csv
import io
from collections import Counter
from datetime import UTC, date, datetime, timedelta

from openpyxl import load_workbook

from shared.events import (
    ActionCreatedV1,
    ActionProgressUpdatedV1,
    ActionRagChangedV1,
    ActionStatusChangedV1,
    ActionUpdateRecordedV1,
)
from tests.integration.actions.conftest import PLAN, find_action, kent_today
from tests.support.apps import token
from tests.support.kafka import read_topic

SERVICE = "actions"


async def test_the_csv_export_applies_the_filters_and_opens_in_excel(client, settings, seeded):
    response = await client.get(
        "/v1/actions/export.csv",
        params={"plan": PLAN, "cell": "economy", "priority": "essential"},
        headers=token(settings, "analyst"),
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith(f'attachment; filename="actions-{PLAN}-')
    assert response.content.startswith("\ufeff".encode())  # Excel reads the '£' right only with it
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert {row["Cell"] for row in rows} == {"Economy"} and {row["Priority"] for row in rows} == {"Essential"}
    assert [int(row["Action No."]) for row in rows] == [2, 4, 6, 7, 8]
    helpline = rows[0]
    assert helpline["Resources / capacity required"].startswith("c. £200k")
    assert (helpline["Status"], helpline["Baseline due date"], helpline["Overdue"]) == (
        "not-started",
        "2021-01-01",
        "Yes",
    )


async def test_the_excel_export_holds_the_actions_and_says_what_it_is(client, settings, seeded):
    response = await client.get(
        "/v1/actions/export.xlsx", params={"theme": "Waste"}, headers=token(settings, "analyst")
    )
    assert response.status_code == 200
    workbook = load_workbook(io.BytesIO(response.content))
    assert workbook.sheetnames == ["Actions", "About"]
    rows = list(workbook["Actions"].iter_rows(values_only=True))
    assert rows[0][:3] == ("Cell", "Theme", "Action No.")
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [("Infrastructure", "Waste", n) for n in (56, 57, 58)]
    about = dict(workbook["About"].iter_rows(values_only=True))
    assert about["Filters"] == "theme=Waste" and about["Actions"] == 3


async def test_a_snapshot_shows_every_action_as_it_stood_at_the_time_asked_for(client, settings, seeded):
    lead = token(settings, "recovery-lead")
    action = await find_action(client, settings, "children-and-young-people", 2)
    url = f"/v1/actions/{action['id']}"
    await client.patch(
        url, headers=lead, json={"status": "on-track", "rag": "green", "rag_narrative": "Schools reopened"}
    )
    await client.post(f"{url}/updates", headers=lead, json={"narrative": "Attendance at 88%"})
    await asyncio.sleep(0.05)
    quarter_end = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await client.patch(
        url,
        headers=lead,
        json={
            "status": "at-risk",
            "rag": "amber",
            "rag_narrative": "Second wave closures",
            "progress": 30,
            "agreed_due_date": "2021-09-30",
        },
    )
    await client.post(f"{url}/updates", headers=lead, json={"narrative": "Bubbles closing"})

    then = await client.get(f"/v1/plans/{PLAN}/snapshot", params={"as_at": quarter_end.isoformat()}, headers=lead)
    assert then.status_code == 200, then.text
    snapshot = then.json()
    assert snapshot["count"] == 155
    was = next(a for a in snapshot["actions"] if a["id"] == action["id"])
    assert (was["status"], was["rag"], was["rag_narrative"], was["progress"]) == (
        "on-track",
        "green",
        "Schools reopened",
        0,
    )
    assert (was["agreed_due_date"], was["due_date"]) == (None, "2021-01-01")
    assert was["latest_update"]["narrative"] == "Attendance at 88%"
    assert snapshot["by_status"]["on-track"] == 1 and snapshot["by_status"]["not-started"] == 154
    assert snapshot["by_rag"] == {"red": 0, "amber": 0, "green": 1, "none": 154}

    now = (
        await client.get(f"/v1/plans/{PLAN}/snapshot", params={"as_at": kent_today().isoformat()}, headers=lead)
    ).json()
    is_now = next(a for a in now["actions"] if a["id"] == action["id"])
    assert (is_now["status"], is_now["rag"], is_now["progress"], is_now["due_date"]) == (
        "at-risk",
        "amber",
        30,
        "2021-09-30",
    )
    assert is_now["latest_update"]["narrative"] == "Bubbles closing"

    before = await client.get(f"/v1/plans/{PLAN}/snapshot", params={"as_at": "2020-06-30"}, headers=lead)
    assert before.json()["count"] == 0 and before.json()["actions"] == []


async def test_a_snapshot_as_at_a_date_to_come_or_not_a_date_is_refused(client, settings, seeded):
    reader = token(settings, "analyst")
    for as_at, reason in [
        ((kent_today() + timedelta(days=2)).isoformat(), "is in the future"),
        ("31/12/2020", "is not a date (YYYY-MM-DD) or a time with a zone"),
        ("2020-12-31T17:00:00", "a time needs a zone, e.g. 2020-12-31T17:00:00Z"),
    ]:
        response = await client.get(f"/v1/plans/{PLAN}/snapshot", params={"as_at": as_at}, headers=reader)
        assert response.status_code == 422
        assert response.json()["errors"] == [{"field": "as_at", "in": "query", "reason": reason}]


async def test_a_snapshot_as_csv_is_in_the_exports_layout(client, settings, seeded):
    response = await client.get(
        f"/v1/plans/{PLAN}/snapshot", params={"format": "csv"}, headers=token(settings, "analyst")
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert len(rows) == 155 and Counter(r["Cell"] for r in rows)["Infrastructure"] == 58


async def test_events_report_creation_and_tracking_keyed_by_action_without_names_or_narratives(
    client, settings, seeded
):
    action = await find_action(client, settings, "economy", 1)
    lead = token(settings, "recovery-lead")
    await client.patch(
        f"/v1/actions/{action['id']}",
        headers=lead,
        json={
            "status": "on-track",
            "rag": "green",
            "rag_narrative": "Campaign reached 2 million people",
            "progress": 60,
        },
    )
    await client.post(f"/v1/actions/{action['id']}/updates", headers=lead, json={"narrative": "Bookings up 12%"})

    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.actions, expect=159)

    assert Counter(event.type for _, event in events) == {
        ActionCreatedV1.type: 155,
        ActionStatusChangedV1.type: 1,
        ActionRagChangedV1.type: 1,
        ActionProgressUpdatedV1.type: 1,
        ActionUpdateRecordedV1.type: 1,
    }
    assert all(key == event.subject.encode() for key, event in events)
    created = [ActionCreatedV1.model_validate(e.data) for _, e in events if e.type == ActionCreatedV1.type]
    assert Counter(c.cell for c in created)["infrastructure"] == 58
    assert Counter(c.theme for c in created if c.cell == "infrastructure")["Transport"] == 8
    status = ActionStatusChangedV1.model_validate(
        next(e.data for _, e in events if e.type == ActionStatusChangedV1.type)
    )
    assert (str(status.action_id), status.previous_status, status.status) == (action["id"], "not-started", "on-track")
    assert (status.rag, status.progress, status.priority, status.timescale) == ("green", 60, "important", "short")
    assert status.due_date == date(2021, 1, 1) and status.lead_organisations == ["Visit Kent"]
    for _, event in events:
        raw = event.to_bytes().decode()
        for private in ("Deirdre Wells", "2 million people", "Bookings up", "dev-recovery-lead"):
            assert private not in raw
