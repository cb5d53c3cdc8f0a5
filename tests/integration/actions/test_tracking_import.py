"""Tracking by spreadsheet: the export edited in Excel (openpyxl here) and read back; the public progress figures."""

import csv
import io
from datetime import date

from openpyxl import load_workbook

from tests.integration.actions.conftest import PLAN, find_action
from tests.support.apps import token

SERVICE = "actions"


async def export(client, settings, suffix: str, **params) -> bytes:
    response = await client.get(
        f"/v1/actions/export.{suffix}", params={"plan": PLAN, **params}, headers=token(settings, "recovery-lead")
    )
    assert response.status_code == 200, response.text
    return response.content


async def import_tracking(client, settings, name: str, content: bytes, *, dry_run=False, role="recovery-lead"):
    return await client.post(
        "/v1/actions/import",
        files={"file": (name, content)},
        params={"dry_run": "true"} if dry_run else {},
        headers=token(settings, role),
    )


def edit_workbook(content: bytes, edits: dict[tuple[str, int], dict[str, object]]) -> bytes:
    """Change cells of the export's 'Actions' sheet, found by (cell name, action number) and heading, as a person would."""
    workbook = load_workbook(io.BytesIO(content))
    sheet = workbook["Actions"]
    headings = [c.value for c in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        key = (row[headings.index("Cell")].value, int(row[headings.index("Action No.")].value))
        for heading, value in edits.get(key, {}).items():
            row[headings.index(heading)].value = value
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


async def history(client, settings, action_id: str) -> list[dict]:
    response = await client.get(f"/v1/actions/{action_id}", headers=token(settings, "analyst"))
    return response.json()["history"]


async def test_changed_rags_in_an_edited_workbook_enter_the_history_with_their_narratives(client, settings, seeded):
    original = await export(client, settings, "xlsx")
    edited = edit_workbook(
        original,
        {
            ("Health and Social Care", 2): {
                "RAG": "Red",
                "RAG narrative": "No provider for the bereaved yet",
                "Status": "at-risk",
                "Progress %": 20,
            },
            ("Economy", 3): {"RAG": "green", "RAG narrative": "Grants paid out", "Agreed due date": date(2021, 3, 31)},
        },
    )

    trial = await import_tracking(client, settings, "actions.xlsx", edited, dry_run=True)
    assert trial.status_code == 200, trial.text
    assert (trial.json()["dry_run"], trial.json()["applied"]) == (True, False)
    assert trial.json()["counts"] == {"changed": 2, "unchanged": 153, "rejected": 0, "cells_changed": 7}
    assert (await find_action(client, settings, "health-and-social-care", 2))["rag"] is None  # a dry run writes nothing

    applied = await import_tracking(client, settings, "actions.xlsx", edited)
    assert applied.status_code == 200, applied.text
    assert applied.json()["applied"] is True
    health = await find_action(client, settings, "health-and-social-care", 2)
    assert (health["rag"], health["rag_narrative"], health["status"], health["progress"]) == (
        "red",
        "No provider for the bereaved yet",
        "at-risk",
        20,
    )
    economy = await find_action(client, settings, "economy", 3)
    assert (economy["rag"], economy["agreed_due_date"]) == ("green", "2021-03-31")

    entries = {h["field"]: h for h in await history(client, settings, health["id"]) if h["kind"] == "changed"}
    assert entries["rag"]["new"] == "red" and entries["rag"]["narrative"] == "No provider for the bereaved yet"
    assert entries["rag"]["by_role"] == "recovery-lead" and entries["rag"]["at"]
    assert entries["progress"]["old"] == 0 and entries["progress"]["new"] == 20
    assert "row" in entries["status"]["narrative"] and "actions.xlsx" in entries["status"]["narrative"]
    economy_rag = next(h for h in await history(client, settings, economy["id"]) if h["field"] == "rag")
    assert economy_rag["narrative"] == "Grants paid out"

    again = await import_tracking(client, settings, "actions.xlsx", edited)
    assert again.status_code == 200, again.text
    assert again.json()["counts"] == {"changed": 0, "unchanged": 155, "rejected": 0, "cells_changed": 0}
    assert len(await history(client, settings, health["id"])) == len(entries) + 1  # created, then the four changes


async def test_a_freshly_exported_file_changes_nothing(client, settings, seeded):
    for suffix in ("csv", "xlsx"):
        response = await import_tracking(client, settings, f"actions.{suffix}", await export(client, settings, suffix))
        assert response.status_code == 200, response.text
        assert response.json()["counts"]["changed"] == 0 and response.json()["applied"] is False


async def test_invalid_rows_are_reported_by_row_and_column_and_change_nothing(client, settings, seeded):
    content = (await export(client, settings, "csv")).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(content)))
    header = rows[0]
    column = header.index
    rows[1][column("RAG")] = "amber"  # no narrative
    rows[2][column("Progress %")] = "110"
    rows[3][column("Status")] = "finished"
    rows[4][column("Status")] = "complete"  # at 0%
    rows[5][column("Agreed due date")] = "31/13/2021"
    rows[6][column("Action id")] = "not-an-action"
    rows[7][column("RAG")], rows[7][column("RAG narrative")] = "green", "Fine"  # a good row, not applied either
    out = io.StringIO()
    csv.writer(out).writerows(rows)

    refused = await import_tracking(client, settings, "actions.csv", out.getvalue().encode())
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    errors = {(e["row"], e["column"]): e["reason"] for e in problem["errors"]}
    assert errors == {
        (2, "RAG narrative"): "is required with a RAG rating: say why it is amber",
        (3, "Progress %"): "'110' is not a whole number from 0 to 100",
        (
            4,
            "Status",
        ): "'finished' is not one of not-started, on-track, at-risk, off-track, blocked, complete, cancelled",
        (5, "Progress %"): "must be 100 when the action is complete",
        (6, "Agreed due date"): "'31/13/2021' is not a date: give it as 2021-03-31 or 31/03/2021",
        (7, "Action id"): "there is no action not-an-action",
    }
    assert all(e["field"] == f"row {e['row']}, {e['column']}" for e in problem["errors"])
    assert problem["report"]["counts"] == {"changed": 1, "unchanged": 148, "rejected": 6, "cells_changed": 2}
    listed = (await client.get("/v1/actions", params={"plan": PLAN}, headers=token(settings, "analyst"))).json()
    assert {a["rag"] for a in listed["actions"]} == {None}


async def test_a_row_changed_by_someone_since_the_export_is_refused_not_undone(client, settings, seeded):
    stale = await export(client, settings, "xlsx")
    action = await find_action(client, settings, "economy", 3)
    changed = await client.patch(
        f"/v1/actions/{action['id']}",
        json={"rag": "red", "rag_narrative": "Bids late"},
        headers=token(settings, "recovery-lead"),
    )
    assert changed.status_code == 200
    edited = edit_workbook(stale, {("Economy", 3): {"Progress %": 50}})
    refused = await import_tracking(client, settings, "stale.xlsx", edited)
    assert refused.status_code == 422
    [error] = refused.json()["errors"]
    assert error["column"] == "Last updated" and "after this file was exported" in error["reason"]
    assert (await find_action(client, settings, "economy", 3))["rag"] == "red"


async def test_only_an_administrator_changes_the_independent_rating_by_spreadsheet(client, settings, seeded):
    edited = edit_workbook(
        await export(client, settings, "xlsx"), {("Economy", 3): {"Independent rating": "amber-green"}}
    )
    refused = await import_tracking(client, settings, "rated.xlsx", edited)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["column"] == "Independent rating"
    allowed = await import_tracking(client, settings, "rated.xlsx", edited, role="admin")
    assert allowed.status_code == 200, allowed.text
    assert (await find_action(client, settings, "economy", 3))["independent_rating"] == "amber-green"


async def test_the_public_progress_is_rolled_up_per_cell_and_theme_without_a_token(client, settings, seeded):
    edited = edit_workbook(
        await export(client, settings, "xlsx"),
        {
            ("Economy", 1): {"Status": "complete", "Progress %": 100},
            ("Economy", 2): {"Status": "on-track", "Progress %": 50, "RAG": "green", "RAG narrative": "Going well"},
        },
    )
    assert (await import_tracking(client, settings, "progress.xlsx", edited)).status_code == 200

    response = await client.get(f"/v1/public/plans/{PLAN}/progress")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=60"
    progress = response.json()
    assert progress["actions"] == 155 and progress["complete"] == 1
    economy = next(c for c in progress["cells"] if c["slug"] == "economy")
    assert economy["progress"] == round(150 / economy["actions"], 1)
    assert economy["by_rag"]["green"] == 1 and economy["by_status"]["complete"] == 1
    assert sum(c["actions"] for c in progress["cells"]) == 155
    infrastructure = next(c for c in progress["cells"] if c["slug"] == "infrastructure")
    assert infrastructure["themes"] and sum(t["actions"] for t in infrastructure["themes"]) == infrastructure["actions"]
    text = response.text
    for private in ("named_lead", "narrative", "Going well", "commentary"):
        assert private not in text
    missing = await client.get("/v1/public/plans/no-such-plan/progress")
    assert missing.status_code == 404
