"""Issue 17's "must show": two duplicate residents merged, then erased: nothing of either left in any database.

Referrals, fulfilment and reporting run as `make run` runs them, on their own databases,
over the real broker. Both residents are told their reference by text (and one that help
is arranged), so the referrals service's messages and their delivery log hold them too.
An administrator merges the two; fulfilment's case list follows; reporting's figures do
not move (it counts requests and referrals, never people). Then the merged resident is
erased: every value of every table of the three databases (sealed values opened), and
the local log that stands in for GOV.UK Notify, hold nothing of either resident, while
another resident and every figure are as they were.
"""

from __future__ import annotations

import json

import pytest

from shared.bus import ensure_topics
from tests.integration.trust.test_erasure import everything_held
from tests.support.apps import token
from tests.support.waiting import eventually

MARGARET = {
    "name": "Margaret Jones",
    "phone": "07911 123456",
    "email": "margaret.jones@example.org",
    "date_of_birth": "1941-03-02",
    "address": {"line1": "12 Northdown Road", "town": "Margate", "postcode": "CT9 2RN"},
    "contact_preference": "text",
}
MAGGIE = {
    "name": "Maggie Jones",
    "phone": "07911 123457",
    "email": "maggie.jones@example.org",
    "address": {"line1": "12 Northdown Rd", "town": "Margate", "postcode": "CT9 2RN"},
    "contact_preference": "text",
}
PETER = {
    "name": "Peter Smith",
    "phone": "01843 588000",
    "address": {"line1": "3 Harbour Street", "town": "Margate", "postcode": "CT9 2RN"},
}
SECRETS = (
    "Margaret",
    "Maggie",
    "Jones",
    "7911123456",
    "7911123457",
    "margaret.jones@example.org",
    "maggie.jones@example.org",
    "Northdown",
    "1941-03-02",
    "shop for Margaret",
    "call Maggie",
)


def referral(resident: dict, *requests: tuple[str, str]) -> dict:
    return {
        "channel": "phone",
        "resident": resident,
        "consent": {"to_share": True, "to_notify": resident is not PETER},
        "requests": [{"type": kind, "details": details} for kind, details in requests],
    }


@pytest.fixture(params=["sqlite", "postgres"])
def databases(request, sqlite_databases, postgres_templates) -> dict[str, str]:
    if request.param == "sqlite":
        return sqlite_databases
    return {name: postgres_templates.fresh_database(name) for name in ("referrals", "fulfilment", "reporting")}


async def test_two_duplicate_residents_merged_then_erased_leave_nothing_of_either_in_any_database(
    start_service, broker, unique, databases, tmp_path
):
    from tests.support.apps import test_topics  # here: a module-level name starting `test_` would be collected

    topics = test_topics(unique)
    await ensure_topics(
        broker.bootstrap_servers, {topics.referrals: 1, topics.request_stats: 1, topics.assignment_status: 1}
    )
    fast = {"run_relay": True, "run_consumers": True, "outbox_poll_seconds": 0.1}
    async with (
        start_service(
            "referrals",
            database_url=databases["referrals"],
            consumer_group=f"referrals-{unique}",
            run_notifications=True,
            notify_poll_seconds=0.05,
            **fast,
        ) as referrals_api,
        start_service(
            "fulfilment", database_url=databases["fulfilment"], consumer_group=f"fulfilment-{unique}", **fast
        ) as fulfilment_api,
        start_service(
            "reporting", database_url=databases["reporting"], consumer_group=f"reporting-{unique}", **fast
        ) as reporting_api,
    ):
        adviser = token(referrals_api.settings, "call-centre", subject="adviser-1")
        admin = token(referrals_api.settings, "admin", subject="admin-1")
        admin_f = token(fulfilment_api.settings, "admin", subject="admin-1")
        thanet = token(fulfilment_api.settings, "hub", hub="thanet", subject="thanet-1", name="Tom Hub")
        analyst = token(reporting_api.settings, "analyst", subject="analyst-1")
        log_file = referrals_api.settings.var_dir / "notifications.log"

        async def take(body: dict) -> dict:
            response = await referrals_api.post("/v1/referrals", headers=adviser, json=body)
            assert response.status_code == 201, response.text
            return response.json()

        margaret = await take(referral(MARGARET, ("food", "Weekly shop for Margaret"), ("prescription", "Boots")))
        maggie = await take(referral(MAGGIE, ("befriending", "Please call Maggie on Mondays")))
        await take(referral(PETER, ("food", "Weekly shop")))
        assert margaret["resident_id"] != maggie["resident_id"]  # recorded twice: two residents

        async def hub_cases():
            found = (await fulfilment_api.get("/v1/hubs/thanet/queue", headers=thanet)).json()
            return found["items"] if found["total"] == 4 else None

        cases = await eventually(hub_cases, timeout=30)
        befriending = next(c for c in cases if c["referral_id"] == maggie["id"])
        accepted = await fulfilment_api.post(
            f"/v1/assignments/{befriending['id']}/transitions", headers=thanet, json={"to": "accepted"}
        )
        assert accepted.status_code == 200, accepted.text

        async def told():  # both references, and Maggie's help arranged
            lines = log_file.read_text().splitlines() if log_file.exists() else []
            texts = [json.loads(line) for line in lines if line.strip()]
            return texts if len([t for t in texts if t["to"].startswith("+447911")]) == 3 else None

        await eventually(told, timeout=30)

        async def figures():
            answer = {}
            for group in ("type", "status", "channel"):
                response = await reporting_api.get("/v1/figures/requests", params={"group_by": group}, headers=analyst)
                assert response.status_code == 200, response.text
                answer[group] = sorted((r[group], r["count"]) for r in response.json()["rows"])
            return answer

        async def reporting_has_the_acceptance():
            now = await figures()
            return now if ("accepted", 1) in now["status"] else None

        before = await eventually(reporting_has_the_acceptance, timeout=30)
        assert sum(count for _, count in before["type"]) == 4

        merged = await referrals_api.post(
            f"/v1/residents/{margaret['resident_id']}/merge", headers=admin, json={"duplicate": maggie["resident_id"]}
        )
        assert merged.status_code == 200, merged.text

        async def one_resident_in_the_hub():
            found = await fulfilment_api.get(
                "/v1/hubs/thanet/queue", headers=thanet, params={"resident": maggie["resident_id"]}
            )
            items = found.json()["items"]
            return items if len(items) == 3 else None

        together = await eventually(one_resident_in_the_hub, timeout=30)
        assert {c["resident_id"] for c in together} == {margaret["resident_id"]}

        rt_r, rt_f, rt_rep = (api.app.state.runtime for api in (referrals_api, fulfilment_api, reporting_api))
        # Reporting passes over the merge (it keeps nothing per resident). A referral taken after it is
        # behind it on the one partition: once reporting counts that, it has read the merge.
        await take(referral(PETER, ("practical", "Post to collect")))

        async def reporting_counted_the_next_referral():
            now = await figures()
            return now if ("practical", 1) in now["type"] else None

        after_merge = await eventually(reporting_counted_the_next_referral, timeout=30)
        expected = {
            "type": sorted([*before["type"], ("practical", 1)]),
            "channel": [(channel, count + 1 if channel == "phone" else count) for channel, count in before["channel"]],
        }
        # Requests counted, never people: the merge moved no figure; only the new request was added.
        assert {k: after_merge[k] for k in expected} == expected

        held = await everything_held(rt_r) + await everything_held(rt_f) + log_file.read_text()
        assert all(secret in held for secret in SECRETS), "the test data really was there"

        erased = await referrals_api.post(f"/v1/residents/{maggie['reference']}/erasure", headers=admin)
        assert erased.status_code == 200, erased.text
        assert sorted(erased.json()["erased"]) == sorted([margaret["id"], maggie["id"]])

        async def fulfilment_erased():
            for case in together:
                answer = (await fulfilment_api.get(f"/v1/assignments/{case['id']}", headers=admin_f)).json()
                if answer["resident"]["name"] != "[erased]":
                    return False
            return True

        await eventually(fulfilment_erased, timeout=30)

        held_after = {
            "referrals": await everything_held(rt_r),
            "fulfilment": await everything_held(rt_f),
            "reporting": await everything_held(rt_rep),
            "notifications log": log_file.read_text(),
        }
        left = {place: [s for s in SECRETS if s in text] for place, text in held_after.items()}
        assert left == {place: [] for place in held_after}, f"still held after erasure: {left}"
        assert "Peter Smith" in held_after["referrals"] and "Peter Smith" in held_after["fulfilment"]
        final = await figures()
        assert {k: final[k] for k in expected} == expected  # erasure keeps every count
