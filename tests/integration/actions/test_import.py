"""Importing the recovery plan: faithfully, by (cell, number), all or nothing, and again without loss."""

from collections import Counter

from sqlalchemy import func, select

from services.actions.models import action_updates, actions
from tests.integration.actions.conftest import PLAN, find_action, import_file
from tests.support.apps import token

SERVICE = "actions"

PER_CELL = {
    "economy": 16,
    "infrastructure": 58,
    "children-and-young-people": 11,
    "health-and-social-care": 19,
    "district-and-communities": 11,
    "voluntary-sector": 23,
    "finance": 17,
}
PER_THEME = {
    "Whole cell": 4,
    "Housing and Commercial Delivery": 19,
    "Digital and ICT Infrastructure": 13,
    "Transport": 8,
    "Environment and Green Infrastructure": 11,
    "Waste": 3,
}


async def all_actions(client, settings, **params) -> list[dict]:
    response = await client.get("/v1/actions", params={"plan": PLAN, **params}, headers=token(settings, "analyst"))
    assert response.status_code == 200, response.text
    return response.json()["actions"]


async def count(client, table) -> int:
    async with client.app.state.runtime.db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(table))


async def outbox_rows(client) -> int:
    return await count(client, client.app.state.runtime.tables.outbox)


def with_line_changed(seed: bytes, starts_with: str, old: str, new: str) -> bytes:
    """The seed with one line edited, as a cell lead might edit the plan."""
    lines = seed.decode().split("\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(starts_with))
    assert old in lines[index]
    lines[index] = lines[index].replace(old, new, 1)
    return "\n".join(lines).encode()


async def test_importing_the_seed_gives_exactly_the_plans_actions_per_cell_and_theme(client, settings, seeded):
    assert seeded["counts"] == {"created": 155, "updated": 0, "unchanged": 0, "rejected": 0}
    assert seeded["applied"] is True and seeded["format"] == "plan-text"
    found = await all_actions(client, settings)
    assert len(found) == 155
    assert Counter(a["cell"] for a in found) == PER_CELL
    for cell, total in PER_CELL.items():
        assert [a["number"] for a in found if a["cell"] == cell] == list(range(1, total + 1))
    assert Counter(a["theme"] for a in found if a["cell"] == "infrastructure") == PER_THEME
    assert {a["theme"] for a in found if a["cell"] != "infrastructure"} == {None}
    assert Counter(a["priority"] for a in found) == {"important": 69, "essential": 65, "desirable": 21}
    assert Counter(a["timescale"] for a in found) == {"short": 74, "medium": 49, "longer": 32}
    assert Counter(a["kind"] for a in found) == {"opportunity": 83, "mitigate": 57, "both": 15}
    assert {a["status"] for a in found} == {"not-started"} and {a["progress"] for a in found} == {0}

    plan = (await client.get(f"/v1/plans/{PLAN}", headers=token(settings, "analyst"))).json()
    assert plan["starts_on"] == "2020-07-01" and plan["action_count"] == 155
    assert [(c["slug"], c["actions"]) for c in plan["cells"]] == list(PER_CELL.items())


async def test_each_action_keeps_the_plans_words_as_well_as_their_meaning(client, settings, seeded):
    economy_2 = await find_action(client, settings, "economy", 2)
    assert economy_2["lead_organisations"] == [
        "KCC",
        "Medway Council",
        "Kent Districts",
        "Kent Invicta Chamber of Commerce",
    ]
    assert economy_2["lead_organisation_text"] == "KCC/Medway Council /Kent Districts/ Kent Invicta Chamber of Commerce"
    assert economy_2["named_leads"] == ["Susan Berdo", "Jo James"]
    assert (economy_2["priority"], economy_2["timescale_text"], economy_2["kind_text"]) == (
        "essential",
        "Short Term",
        "Mitigate",
    )
    economy_10 = await find_action(client, settings, "economy", 10)
    assert economy_10["ongoing"] is True and not economy_10["description"].startswith("[Ongoing]")
    transport = await find_action(client, settings, "infrastructure", 40)
    assert transport["theme"] == "Transport"
    assert transport["description"].startswith("To lobby government as follows:\n- To continue to provide")
    both = await find_action(client, settings, "economy", 4)
    assert (both["kind"], both["kind_text"]) == ("both", "Mitigate and Opportunity")


async def test_cross_references_in_the_plan_become_links_shown_both_ways(client, settings, seeded):
    assert seeded["links"] == {"created": 4, "removed": 0, "unresolved": []}
    economy_1 = await find_action(client, settings, "economy", 1)
    assert [(link["cell"], link["number"], link["source"]) for link in economy_1["links_to"]] == [
        ("infrastructure", 27, "plan")
    ]
    infrastructure_27 = await find_action(client, settings, "infrastructure", 27)
    assert [(link["cell"], link["number"]) for link in infrastructure_27["linked_from"]] == [("economy", 1)]
    economy_15 = await find_action(client, settings, "economy", 15)
    assert sorted((link["cell"], link["number"]) for link in economy_15["links_to"]) == [("economy", 7), ("economy", 8)]


async def test_reimporting_the_seed_changes_nothing_and_publishes_nothing(client, settings, seeded, seed_bytes):
    events_before, history_before = await outbox_rows(client), await count(client, action_updates)
    again = await import_file(client, settings, seed_bytes)
    assert again.status_code == 200, again.text
    report = again.json()
    assert report["counts"] == {"created": 0, "updated": 0, "unchanged": 155, "rejected": 0}
    assert {row["outcome"] for row in report["rows"]} == {"unchanged"}
    assert report["links"] == {"created": 0, "removed": 0, "unresolved": []}
    assert await outbox_rows(client) == events_before == 155
    assert await count(client, action_updates) == history_before
    assert {a["version"] for a in await all_actions(client, settings)} == {1}


async def test_tracking_and_its_history_survive_a_reimport_of_the_plan(client, settings, seeded, seed_bytes):
    lead = token(settings, "recovery-lead", subject="lead-economy")
    action = await find_action(client, settings, "economy", 5)
    changed = await client.patch(
        f"/v1/actions/{action['id']}",
        headers=lead,
        json={
            "status": "at-risk",
            "rag": "amber",
            "rag_narrative": "Loan demand is below forecast",
            "progress": 40,
            "agreed_due_date": "2021-03-31",
            "self_rating": "amber-green",
        },
    )
    assert changed.status_code == 200, changed.text
    await client.post(f"/v1/actions/{action['id']}/updates", headers=lead, json={"narrative": "12 loans approved"})
    target = await find_action(client, settings, "finance", 3)
    linked = await client.post(f"/v1/actions/{action['id']}/links", headers=lead, json={"to": target["id"]})
    assert linked.status_code == 201, linked.text
    edited = with_line_changed(seed_bytes, "5\tRedeploy Kent and Medway Business Fund", "\tImportant", "\tEssential")

    report = (await import_file(client, settings, edited)).json()

    assert report["counts"] == {"created": 0, "updated": 1, "unchanged": 154, "rejected": 0}
    [row] = [r for r in report["rows"] if r["outcome"] == "updated"]
    assert (row["cell"], row["number"], row["changed"]) == ("economy", 5, ["priority"])
    after = (await client.get(f"/v1/actions/{action['id']}", headers=lead)).json()
    assert after["priority"] == "essential"
    assert (after["status"], after["rag"], after["rag_narrative"]) == (
        "at-risk",
        "amber",
        "Loan demand is below forecast",
    )
    assert (after["progress"], after["agreed_due_date"], after["self_rating"]) == (40, "2021-03-31", "amber-green")
    assert after["latest_update"]["narrative"] == "12 loans approved"
    assert [(link["cell"], link["number"], link["source"]) for link in after["links_to"]] == [("finance", 3, "manual")]
    history = [(h["kind"], h["field"], h["by"]) for h in after["history"]]
    assert ("changed", "status", "lead-economy") in history and ("changed", "rag", "lead-economy") in history
    assert ("update", None, "lead-economy") in history and ("linked", None, "lead-economy") in history
    revised = next(h for h in after["history"] if h["kind"] == "revised")
    assert (revised["field"], revised["old"], revised["new"]) == ("priority", "important", "essential")


async def test_a_file_with_bad_rows_changes_nothing_and_reports_every_row(client, settings, seeded, seed_bytes):
    edited = with_line_changed(
        seed_bytes, "5\tRedeploy Kent and Medway Business Fund", "\tOpportunity\t", "\tPerhaps\t"
    )
    edited = with_line_changed(edited, "2\tDelivery of a COVID-19 Support Helpline", "\tEssential", "\tUrgent")
    edited = with_line_changed(edited, "3\tCommission refresh", "\tImportant", "\tDesirable")  # a good change
    events_before = await outbox_rows(client)

    response = await import_file(client, settings, edited)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["detail"] == "2 rows rejected; nothing was changed"
    errors = {e["field"]: e["reason"] for e in problem["errors"]}
    assert "'Perhaps' is neither Mitigate nor Opportunity" in errors["row 25"]
    assert "priority 'Urgent' is not Essential, Important or Desirable" in errors["row 22"]
    report = problem["report"]
    assert report["applied"] is False
    assert report["counts"] == {"created": 0, "updated": 1, "unchanged": 152, "rejected": 2}
    assert [(r["row"], r["outcome"]) for r in report["rows"][:5]] == [
        (21, "unchanged"),
        (22, "rejected"),
        (23, "updated"),
        (24, "unchanged"),
        (25, "rejected"),
    ]
    assert (await find_action(client, settings, "economy", 3))["priority"] == "important"
    assert await outbox_rows(client) == events_before


async def test_a_bad_file_into_an_empty_plan_creates_nothing(client, settings, seed_bytes):
    edited = with_line_changed(seed_bytes, "5\tRedeploy Kent and Medway Business Fund", "\tShort Term\t", "\tSoon\t")
    response = await import_file(client, settings, edited)
    assert response.status_code == 422
    assert response.json()["report"]["counts"]["rejected"] == 1
    assert await count(client, actions) == 0
    assert (await client.get(f"/v1/plans/{PLAN}", headers=token(settings, "analyst"))).status_code == 404


async def test_a_dry_run_reports_what_would_change_and_changes_nothing(client, settings, seed_bytes):
    response = await import_file(client, settings, seed_bytes, params={"dry_run": "true"})
    assert response.status_code == 200
    report = response.json()
    assert (report["dry_run"], report["applied"], report["counts"]["created"]) == (True, False, 155)
    assert await count(client, actions) == 0 and await outbox_rows(client) == 0


async def test_a_file_that_is_not_a_plan_is_refused_naming_the_file(client, settings):
    for filename, content, reason in [
        ("plan.xls", b"\xd0\xcf\x11\xe0", "save it as .xlsx"),
        ("plan.xlsx", b"PK\x03\x04 not really a workbook", "not a readable .xlsx workbook"),
        ("plan.txt", "caf\xe9".encode("latin-1"), "not UTF-8 text"),
        ("plan.txt", b"Dear all,\nplease find the plan attached.", "no actions found"),
        ("plan.csv", b"Cell,Action No.,Priority\nEconomy,1,Essential\n", "missing the columns 'Action to be taken'"),
    ]:
        response = await import_file(client, settings, content, filename=filename)
        assert response.status_code == 422, filename
        [error] = response.json()["errors"]
        assert error["field"] == "file" and reason in error["reason"], (filename, error)


async def test_the_import_sets_the_plans_start_and_a_new_start_moves_only_baselines(client, settings, seed_bytes):
    first = await import_file(client, settings, seed_bytes, data={"starts_on": "2020-09-01", "title": "KRF recovery"})
    assert first.status_code == 200, first.text
    action = await find_action(client, settings, "economy", 1)  # Short Term
    assert action["baseline_due_date"] == "2021-03-01"
    lead = token(settings, "recovery-lead")
    await client.patch(f"/v1/actions/{action['id']}", headers=lead, json={"agreed_due_date": "2021-06-30"})

    moved = (await import_file(client, settings, seed_bytes, data={"starts_on": "2020-10-01"})).json()

    assert moved["counts"]["updated"] == 155
    assert {tuple(r["changed"]) for r in moved["rows"]} == {("baseline_due_date",)}
    after = await find_action(client, settings, "economy", 1)
    assert (after["baseline_due_date"], after["agreed_due_date"], after["due_date"]) == (
        "2021-04-01",
        "2021-06-30",
        "2021-06-30",
    )
    plan = (await client.get(f"/v1/plans/{PLAN}", headers=lead)).json()
    assert (plan["starts_on"], plan["title"]) == ("2020-10-01", "KRF recovery")


async def test_importing_needs_the_actions_write_scope(client, settings, seed_bytes):
    assert (await import_file(client, settings, seed_bytes, role="analyst")).status_code == 403
    assert (await client.post(f"/v1/plans/{PLAN}/import", files={"file": ("p.txt", seed_bytes)})).status_code == 401
    assert (await import_file(client, settings, seed_bytes, role="admin")).status_code == 200


async def test_the_export_round_trips_through_csv_and_excel_unchanged(client, settings, seeded):
    plan_columns = (
        "cell",
        "number",
        "theme",
        "title",
        "description",
        "ongoing",
        "kind",
        "kind_text",
        "priority",
        "timescale",
        "timescale_text",
        "lead_organisations",
        "lead_organisation_text",
        "named_leads",
        "named_lead_text",
        "resources",
        "baseline_due_date",
    )
    original = [{c: a[c] for c in plan_columns} for a in await all_actions(client, settings)]
    for extension in ("csv", "xlsx"):
        export = await client.get(
            f"/v1/actions/export.{extension}", params={"plan": PLAN}, headers=token(settings, "analyst")
        )
        assert export.status_code == 200
        back = await import_file(client, settings, export.content, filename=f"actions.{extension}")
        assert back.status_code == 200, back.text
        assert back.json()["format"] == extension
        assert back.json()["counts"] == {"created": 0, "updated": 0, "unchanged": 155, "rejected": 0}, extension

        copy = await import_file(
            client, settings, export.content, filename=f"actions.{extension}", plan=f"copy-{extension}"
        )
        assert copy.json()["counts"]["created"] == 155 and copy.json()["links"]["created"] == 4
        response = await client.get(
            "/v1/actions", params={"plan": f"copy-{extension}"}, headers=token(settings, "analyst")
        )
        assert [{c: a[c] for c in plan_columns} for a in response.json()["actions"]] == original, extension


async def test_a_file_with_one_cell_leaves_the_other_cells_as_they_are(client, settings, seeded):
    economy = await client.get(
        "/v1/actions/export.csv", params={"plan": PLAN, "cell": "economy"}, headers=token(settings, "analyst")
    )
    report = (await import_file(client, settings, economy.content, filename="economy.csv")).json()
    assert report["counts"] == {"created": 0, "updated": 0, "unchanged": 16, "rejected": 0}
    assert report["not_in_file"] == 139 and report["links"]["removed"] == 0
    assert len(await all_actions(client, settings)) == 155

    moved = (
        await import_file(client, settings, economy.content, filename="economy.csv", data={"starts_on": "2020-08-01"})
    ).json()
    assert moved["counts"]["updated"] == 16 and moved["rebaselined"] == 139  # the whole plan moves with its start
    assert (await find_action(client, settings, "finance", 1))["baseline_due_date"] == "2021-02-01"
