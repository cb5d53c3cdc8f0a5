"""Tracking an action to delivery: the rules of each field, its history, due dates, links and who may."""

from datetime import date, timedelta

from tests.integration.actions.conftest import PLAN, find_action, kent_today
from tests.support.apps import token

SERVICE = "actions"


async def patch(client, settings, action, body, *, role="recovery-lead", subject=None):
    return await client.patch(f"/v1/actions/{action['id']}", json=body, headers=token(settings, role, subject=subject))


async def test_a_rag_rating_without_a_narrative_is_refused_naming_the_field(client, settings, seeded):
    action = await find_action(client, settings, "health-and-social-care", 2)
    response = await patch(client, settings, action, {"rag": "red"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"field": "rag_narrative", "reason": "is required with a RAG rating: say why it is red"},
    ]
    assert (await find_action(client, settings, "health-and-social-care", 2))["rag"] is None

    rated = await patch(client, settings, action, {"rag": "red", "rag_narrative": "No provider for the bereaved yet"})
    assert rated.status_code == 200
    assert (rated.json()["rag"], rated.json()["rag_narrative"]) == ("red", "No provider for the bereaved yet")


async def test_every_invalid_field_is_named_with_its_reason(client, settings, seeded):
    action = await find_action(client, settings, "economy", 3)
    response = await patch(
        client,
        settings,
        action,
        {
            "status": "done",
            "progress": 101,
            "rag": "purple",
            "colour": "red",
            "agreed_due_date": "31/03/2021",
        },
    )
    assert response.status_code == 422
    errors = {e["field"]: e["reason"] for e in response.json()["errors"]}
    assert set(errors) == {"status", "progress", "rag", "colour", "agreed_due_date"}
    assert errors["progress"] == "Input should be less than or equal to 100"
    assert errors["colour"] == "unknown field"
    assert errors["status"].startswith("Input should be 'not-started', 'on-track'")

    early = await patch(client, settings, action, {"agreed_due_date": "2020-01-31"})
    assert early.json()["errors"] == [{"field": "agreed_due_date", "reason": "is before the plan starts (2020-07-01)"}]


async def test_blocking_needs_a_reason_and_unblocking_clears_it(client, settings, seeded):
    action = await find_action(client, settings, "infrastructure", 37)
    refused = await patch(client, settings, action, {"status": "blocked"})
    assert refused.status_code == 422
    assert refused.json()["errors"] == [{"field": "blocked_reason", "reason": "is required when the status is blocked"}]

    blocked = await patch(
        client, settings, action, {"status": "blocked", "blocked_reason": "Awaiting DfT tranche 2 award"}
    )
    assert (blocked.json()["status"], blocked.json()["blocked_reason"]) == ("blocked", "Awaiting DfT tranche 2 award")
    moving = await patch(client, settings, action, {"status": "on-track"})
    assert (moving.json()["status"], moving.json()["blocked_reason"]) == ("on-track", None)
    history = (await client.get(f"/v1/actions/{action['id']}", headers=token(settings, "analyst"))).json()["history"]
    blocked_entry = next(h for h in history if h["field"] == "status" and h["new"] == "blocked")
    assert blocked_entry["narrative"] == "Awaiting DfT tranche 2 award"


async def test_each_change_is_kept_with_who_when_old_and_new(client, settings, seeded):
    action = await find_action(client, settings, "finance", 7)
    await patch(
        client, settings, action, {"status": "on-track", "progress": 20, "note": "Costing started"}, subject="cfo-lead"
    )
    await patch(client, settings, action, {"progress": 45}, subject="cfo-deputy")

    detail = (await client.get(f"/v1/actions/{action['id']}", headers=token(settings, "analyst"))).json()
    changes = [(h["by"], h["field"], h["old"], h["new"]) for h in detail["history"] if h["kind"] == "changed"]
    assert changes == [
        ("cfo-lead", "status", "not-started", "on-track"),
        ("cfo-lead", "progress", 0, 20),
        ("cfo-deputy", "progress", 20, 45),
    ]
    first = next(h for h in detail["history"] if h["kind"] == "changed")
    assert first["narrative"] == "Costing started" and first["by_role"] == "recovery-lead"
    assert detail["history"][0]["kind"] == "created"
    assert detail["version"] == 3


async def test_a_change_made_on_a_stale_version_is_409_and_changes_nothing(client, settings, seeded):
    action = await find_action(client, settings, "economy", 7)
    first = await patch(client, settings, action, {"progress": 10, "version": 1})
    assert first.status_code == 200 and first.json()["version"] == 2
    stale = await patch(client, settings, action, {"progress": 50, "version": 1})
    assert stale.status_code == 409
    assert "version 2, not 1" in stale.json()["detail"]
    assert (await find_action(client, settings, "economy", 7))["progress"] == 10


async def test_a_started_action_cannot_be_not_started_again(client, settings, seeded):
    action = await find_action(client, settings, "economy", 8)
    await patch(client, settings, action, {"status": "on-track"})
    response = await patch(client, settings, action, {"status": "not-started"})
    assert response.status_code == 409
    assert response.json()["type"].endswith("/invalid-transition")


async def test_completing_an_action_completes_its_progress_and_it_is_no_longer_overdue(client, settings, seeded):
    action = await find_action(client, settings, "economy", 2)
    assert action["overdue"] is True
    done = (await patch(client, settings, action, {"status": "complete"})).json()
    assert (done["status"], done["progress"], done["overdue"], done["days_overdue"]) == ("complete", 100, False, 0)
    assert done["completed_at"] is not None
    half = await patch(
        client, settings, await find_action(client, settings, "economy", 3), {"status": "complete", "progress": 50}
    )
    assert half.json()["errors"] == [{"field": "progress", "reason": "must be 100 when the action is complete"}]


async def test_due_dates_come_from_the_band_and_an_agreed_date_overrides_them(client, settings, seeded):
    short, medium = (
        await find_action(client, settings, "economy", 1),
        await find_action(client, settings, "economy", 11),
    )
    longer = await find_action(client, settings, "economy", 16)
    assert [(a["timescale"], a["baseline_due_date"]) for a in (short, medium, longer)] == [
        ("short", "2021-01-01"),
        ("medium", "2021-07-01"),
        ("longer", "2022-07-01"),
    ]
    assert (short["due_date"], short["slippage_days"], short["overdue"]) == ("2021-01-01", 0, True)

    later = (kent_today() + timedelta(days=90)).isoformat()
    agreed = (await patch(client, settings, short, {"agreed_due_date": later})).json()
    assert (agreed["baseline_due_date"], agreed["due_date"]) == ("2021-01-01", later)
    assert agreed["slippage_days"] == (date.fromisoformat(later) - date(2021, 1, 1)).days
    assert (agreed["overdue"], agreed["days_overdue"]) == (False, 0)
    back = (await patch(client, settings, short, {"agreed_due_date": None})).json()
    assert (back["due_date"], back["slippage_days"], back["overdue"]) == ("2021-01-01", 0, True)


async def test_actions_are_filtered_by_cell_theme_priority_status_rag_lead_and_overdue(client, settings, seeded):
    reader = token(settings, "analyst")

    async def numbers(**params):
        response = await client.get("/v1/actions", params={"plan": PLAN, **params}, headers=reader)
        assert response.status_code == 200, response.text
        return [(a["cell"], a["number"]) for a in response.json()["actions"]]

    assert len(await numbers(cell="economy")) == 16
    assert len(await numbers(cell=["economy", "finance"])) == 33
    assert len(await numbers(theme="Transport")) == len(await numbers(theme="transport")) == 8
    assert len(await numbers(theme="digital-and-ict-infrastructure")) == 13
    assert len(await numbers(priority="Desirable")) == 21
    assert len(await numbers(cell="economy", priority="essential", timescale="short")) == len(
        [
            a
            for a in (await client.get("/v1/actions", params={"cell": "economy"}, headers=reader)).json()["actions"]
            if a["priority"] == "essential" and a["timescale"] == "short"
        ]
    )
    assert await numbers(lead="deirdre") == [("economy", 1)]
    assert ("voluntary-sector", 1) in await numbers(lead="Kent Community Foundation")

    lead = token(settings, "recovery-lead")
    a, b = await find_action(client, settings, "economy", 11), await find_action(client, settings, "finance", 2)
    await client.patch(
        f"/v1/actions/{a['id']}",
        headers=lead,
        json={"status": "at-risk", "rag": "amber", "rag_narrative": "Funding gap"},
    )
    await client.patch(f"/v1/actions/{b['id']}", headers=lead, json={"status": "complete"})
    assert await numbers(status="at-risk") == [("economy", 11)]
    assert await numbers(rag="amber") == [("economy", 11)]
    assert await numbers(overdue="false") == [("finance", 2)]
    assert len(await numbers(overdue="true")) == 154

    bad = await client.get("/v1/actions", params={"status": "late", "priority": "urgent"}, headers=reader)
    assert bad.status_code == 422
    assert {(e["field"], e["in"]) for e in bad.json()["errors"]} == {("status[0]", "query"), ("priority[0]", "query")}


async def test_the_independent_rating_is_given_by_an_administrator_beside_the_leads_own(client, settings, seeded):
    action = await find_action(client, settings, "voluntary-sector", 1)
    own = await patch(client, settings, action, {"self_rating": "green", "self_rating_commentary": "Funds secured"})
    assert own.status_code == 200
    refused = await patch(client, settings, action, {"independent_rating": "amber"})
    assert refused.status_code == 403
    assessed = await patch(
        client,
        settings,
        action,
        {
            "independent_rating": "amber-red",
            "independent_rating_commentary": "Only half the funds are committed",
        },
        role="admin",
    )
    assert assessed.status_code == 200
    body = assessed.json()
    assert (body["self_rating"], body["independent_rating"]) == ("green", "amber-red")


async def test_a_dated_update_is_kept_and_shown_as_the_latest(client, settings, seeded):
    action = await find_action(client, settings, "district-and-communities", 1)
    lead = token(settings, "recovery-lead", subject="dcrc-lead")
    first = await client.post(
        f"/v1/actions/{action['id']}/updates",
        headers=lead,
        json={"narrative": "Town centre plans agreed in 9 of 12 districts", "on": "2020-09-30"},
    )
    assert first.status_code == 201, first.text
    await client.post(f"/v1/actions/{action['id']}/updates", headers=lead, json={"narrative": "All 12 agreed"})
    detail = (await client.get(f"/v1/actions/{action['id']}", headers=lead)).json()
    assert detail["latest_update"]["narrative"] == "All 12 agreed"
    assert detail["latest_update"]["on"] == kent_today().isoformat()
    updates = [(h["update_on"], h["narrative"], h["by"]) for h in detail["history"] if h["kind"] == "update"]
    assert updates[0] == ("2020-09-30", "Town centre plans agreed in 9 of 12 districts", "dcrc-lead")
    empty = await client.post(f"/v1/actions/{action['id']}/updates", headers=lead, json={"narrative": "  "})
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "narrative"


async def test_dependencies_added_by_hand_show_both_ways_and_are_not_duplicated(client, settings, seeded):
    lead = token(settings, "recovery-lead")
    economy_6 = await find_action(client, settings, "economy", 6)
    opening = await find_action(client, settings, "district-and-communities", 1)

    linked = await client.post(
        f"/v1/actions/{economy_6['id']}/links",
        headers=lead,
        json={"cell": "district-and-communities", "number": 1, "note": "Same town centres"},
    )
    assert linked.status_code == 201, linked.text
    assert (linked.json()["action_id"], linked.json()["source"]) == (opening["id"], "manual")
    assert [
        link["action_id"]
        for link in (await find_action(client, settings, "district-and-communities", 1))["linked_from"]
    ] == [economy_6["id"]]

    again = await client.post(f"/v1/actions/{opening['id']}/links", headers=lead, json={"to": economy_6["id"]})
    assert again.status_code == 409 and "the other way" in again.json()["detail"]
    itself = await client.post(f"/v1/actions/{economy_6['id']}/links", headers=lead, json={"to": economy_6["id"]})
    assert itself.status_code == 422 and itself.json()["errors"][0]["field"] == "to"
    nowhere = await client.post(
        f"/v1/actions/{economy_6['id']}/links", headers=lead, json={"cell": "economy", "number": 99}
    )
    assert nowhere.status_code == 422 and nowhere.json()["errors"][0]["field"] == "number"

    economy_1 = await find_action(client, settings, "economy", 1)
    plan_link = economy_1["links_to"][0]
    kept = await client.delete(f"/v1/actions/{economy_1['id']}/links/{plan_link['id']}", headers=lead)
    assert kept.status_code == 409
    removed = await client.delete(f"/v1/actions/{economy_6['id']}/links/{linked.json()['id']}", headers=lead)
    assert removed.status_code == 204
    assert (await find_action(client, settings, "economy", 6))["links_to"] == []


async def test_readers_read_and_only_recovery_leads_and_administrators_change(client, settings, seeded):
    action = await find_action(client, settings, "economy", 12)
    assert (await client.get(f"/v1/actions/{action['id']}", headers=token(settings, "analyst"))).status_code == 200
    assert (await patch(client, settings, action, {"progress": 5}, role="analyst")).status_code == 403
    assert (await client.get("/v1/actions", headers=token(settings, "call-centre"))).status_code == 403
    assert (await client.get("/v1/actions")).status_code == 401
    assert (await patch(client, settings, action, {"progress": 5}, role="admin")).status_code == 200


async def test_an_unknown_action_or_plan_is_404(client, settings, seeded):
    reader = token(settings, "analyst")
    assert (await client.get("/v1/actions/00000000-0000-0000-0000-000000000000", headers=reader)).status_code == 404
    assert (await client.get("/v1/plans/no-such-plan", headers=reader)).status_code == 404
    assert (await client.get("/v1/plans/no-such-plan/snapshot", headers=reader)).status_code == 404
