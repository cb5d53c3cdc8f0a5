"""The audit log: who created, read, searched, changed or cancelled a resident's referral, for administrators."""

import orjson
import pytest
from sqlalchemy import delete, text, update

from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token
from tests.support.audit import allow_audit, refuse_audit

SERVICE = "referrals"


def as_(settings, role, subject):
    return token(settings, role, subject=subject)


async def test_every_read_search_and_change_of_a_referral_is_recorded_with_who_and_no_personal_data(client, settings):
    posted = await client.post("/v1/referrals", json=referral_body(), headers=as_(settings, "call-centre", "adviser-1"))
    assert posted.status_code == 201, posted.text
    referral = posted.json()
    adviser2, admin = as_(settings, "call-centre", "adviser-2"), as_(settings, "admin", "admin-1")

    assert (await client.get(f"/v1/referrals/{referral['id']}", headers=adviser2)).status_code == 200
    assert (await client.get("/v1/referrals", params={"reference": referral["reference"]}, headers=adviser2)).json()[
        "count"
    ] == 1
    assert (await client.get("/v1/referrals", params={"name": "Margaret Jones"}, headers=admin)).json()["count"] == 1
    amended = await client.patch(
        f"/v1/referrals/{referral['id']}", json={"resident": {"phone": "01843 577111"}}, headers=adviser2
    )
    assert amended.status_code == 200, amended.text
    cancelled = await client.post(
        f"/v1/referrals/{referral['id']}/cancel", json={"reason": "no-longer-needed"}, headers=adviser2
    )
    assert cancelled.status_code == 200, cancelled.text
    # Looking for nobody touches nobody's data: no record.
    assert (await client.get("/v1/referrals", params={"name": "Nobody Atall"}, headers=admin)).json()["count"] == 0

    page = await client.get("/v1/audit", params={"resource_id": referral["id"]}, headers=admin)
    assert page.status_code == 200, page.text
    records = page.json()["records"]
    assert [(r["action"], r["actor"], r["role"]) for r in records] == [
        ("create", "adviser-1", "call-centre"),
        ("read", "adviser-2", "call-centre"),
        ("search", "adviser-2", "call-centre"),
        ("search", "admin-1", "admin"),
        ("change", "adviser-2", "call-centre"),
        ("cancel", "adviser-2", "call-centre"),
    ]
    assert records[3]["detail"] == {"by": ["name"]}
    assert records[4]["detail"] == {"fields": ["resident"]}
    assert all(r["request_id"] for r in records)
    log = (await client.get("/v1/audit", params={"limit": 1000}, headers=admin)).json()["records"]
    # Random ids and times aside (a request id can hold "1941" by chance), nothing personal anywhere.
    whole_log = orjson.dumps(
        [{k: v for k, v in r.items() if k not in ("request_id", "resource_id", "at")} for r in log]
    ).decode()
    for personal in ("Margaret", "Jones", "577000", "577111", "Northdown", "1941"):
        assert personal not in whole_log


async def test_the_audit_log_is_filtered_by_actor_and_action_and_read_on_with_after(client, settings):
    adviser = as_(settings, "call-centre", "adviser-9")
    ids = []
    for _ in range(3):
        posted = await client.post("/v1/referrals", json=referral_body(), headers=adviser)
        ids.append(posted.json()["id"])
        await client.get(f"/v1/referrals/{ids[-1]}", headers=as_(settings, "call-centre", "reader-1"))
    admin = as_(settings, "admin", "admin-1")
    reads = (
        await client.get("/v1/audit", params={"actor": "reader-1", "action": "read", "limit": 2}, headers=admin)
    ).json()
    assert [r["resource_id"] for r in reads["records"]] == ids[:2]
    rest = (
        await client.get("/v1/audit", params={"actor": "reader-1", "after": reads["next_after"]}, headers=admin)
    ).json()
    assert [r["resource_id"] for r in rest["records"]] == ids[2:]


async def test_the_audit_log_refuses_update_and_delete_even_from_the_database(client, settings):
    posted = await client.post("/v1/referrals", json=referral_body(), headers=as_(settings, "call-centre", "adviser-1"))
    runtime = client.app.state.runtime
    table = runtime.tables.audit
    for statement in (update(table).values(actor="someone-else"), delete(table)):
        with pytest.raises(Exception, match="append-only"):
            async with runtime.db.sessions() as session, session.begin():
                await session.execute(statement)
    if runtime.db.dialect == "postgresql":
        with pytest.raises(Exception, match="append-only"):
            async with runtime.db.sessions() as session, session.begin():
                await session.execute(text("TRUNCATE audit"))
    records = (await client.get("/v1/audit", headers=as_(settings, "admin", "a"))).json()["records"]
    assert [(r["actor"], r["resource_id"]) for r in records] == [("adviser-1", posted.json()["id"])]


async def test_a_change_whose_audit_record_cannot_be_written_is_not_made(client, settings):
    """The change and the record of who made it commit together: never a change nobody can account for."""
    adviser = as_(settings, "call-centre", "adviser-1")
    referral = (await client.post("/v1/referrals", json=referral_body(), headers=adviser)).json()
    runtime = client.app.state.runtime
    await refuse_audit(runtime)

    amended = await client.patch(
        f"/v1/referrals/{referral['id']}", json={"resident": {"phone": "01843 577111"}}, headers=adviser
    )
    cancelled = await client.post(
        f"/v1/referrals/{referral['id']}/cancel", json={"reason": "no-longer-needed"}, headers=adviser
    )
    assert (amended.status_code, cancelled.status_code) == (500, 500)

    await allow_audit(runtime)
    now = (await client.get(f"/v1/referrals/{referral['id']}", headers=adviser)).json()
    assert now["version"] == referral["version"]
    assert now["resident"]["phone"] == referral["resident"]["phone"]
    assert {r["status"] for r in now["requests"]} == {r["status"] for r in referral["requests"]} == {"open"}
    records = (
        await client.get("/v1/audit", params={"resource_id": referral["id"]}, headers=as_(settings, "admin", "a"))
    ).json()["records"]
    assert [r["action"] for r in records] == ["create", "read"]


async def test_erasing_again_changes_nothing_and_is_still_recorded(client, settings):
    referral = (
        await client.post("/v1/referrals", json=referral_body(), headers=as_(settings, "call-centre", "adviser-1"))
    ).json()
    admin = as_(settings, "admin", "admin-1")
    for _ in range(2):
        erased = await client.post(f"/v1/referrals/{referral['id']}/erasure", headers=admin)
        assert erased.status_code == 200, erased.text
    records = (await client.get("/v1/audit", params={"resource_id": referral["id"]}, headers=admin)).json()["records"]
    assert [r["action"] for r in records] == ["create", "erase", "erase"]
