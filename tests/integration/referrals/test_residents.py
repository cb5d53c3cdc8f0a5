"""Residents: one resident's whole history for an adviser; two residents recorded twice merged; erasure reaches both."""

import orjson
from sqlalchemy import select

from services.referrals.models import referral_changes
from tests.integration.referrals.conftest import referral_body
from tests.integration.trust.test_erasure import everything_held
from tests.support.apps import token

SERVICE = "referrals"


async def take(client, settings, *, name: str, postcode: str = "ct9 2rn", need: str = "food") -> dict:
    body = referral_body()
    body["resident"]["name"] = name
    body["resident"]["address"]["postcode"] = postcode
    body["requests"] = [{"type": need, "details": f"{need} for {name}"}]
    response = await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
    assert response.status_code == 201, response.text
    return response.json()


async def audit(client, settings, referral_id: str) -> list[tuple[str, str]]:
    page = await client.get("/v1/audit", params={"resource_id": referral_id}, headers=token(settings, "admin"))
    return [(r["action"], r["actor"]) for r in page.json()["records"]]


async def test_an_adviser_sees_every_referral_and_request_of_one_resident_and_each_read_is_audited(client, settings):
    first = await take(client, settings, name="Margaret Jones")
    second = await take(client, settings, name="Margaret Jones", need="prescription")  # the same person: linked
    other = await take(client, settings, name="Jo Smith", postcode="me14 1xx")

    adviser = token(settings, "call-centre", subject="adviser-7")
    history = await client.get(f"/v1/residents/{first['reference']}", headers=adviser)

    assert history.status_code == 200, history.text
    body = history.json()
    assert body["resident_id"] == first["resident_id"] == second["resident_id"] != other["resident_id"]
    assert [r["id"] for r in body["referrals"]] == [first["id"], second["id"]]
    assert [[q["type"] for q in r["requests"]] for r in body["referrals"]] == [["food"], ["prescription"]]
    assert body["merges"] == []
    for referral in (first, second):
        assert ("read", "adviser-7") in await audit(client, settings, referral["id"])
    assert ("read", "adviser-7") not in await audit(client, settings, other["id"])
    missing = await client.get("/v1/residents/5c3f3c1e-59a4-4e34-9d43-6b5b1c3c7f00", headers=adviser)
    assert missing.status_code == 404


async def test_two_residents_recorded_twice_merge_into_one_history_audited_and_published_with_ids_only(
    client,
    settings,
):
    margaret = await take(client, settings, name="Margaret Jones")
    maggie = await take(client, settings, name="Maggie Jones", need="befriending")  # recorded twice, unlinked
    assert margaret["resident_id"] != maggie["resident_id"]
    admin = token(settings, "admin", subject="admin-3")

    refused = await client.post(
        f"/v1/residents/{margaret['resident_id']}/merge",
        json={"duplicate": maggie["id"]},
        headers=token(settings, "call-centre"),
    )
    itself = await client.post(
        f"/v1/residents/{margaret['resident_id']}/merge", json={"duplicate": margaret["reference"]}, headers=admin
    )
    merged = await client.post(
        f"/v1/residents/{margaret['resident_id']}/merge", json={"duplicate": maggie["reference"]}, headers=admin
    )

    assert refused.status_code == 403 and itself.status_code == 409
    assert merged.status_code == 200, merged.text
    history = merged.json()
    assert [r["id"] for r in history["referrals"]] == [margaret["id"], maggie["id"]]
    assert history["referrals"][1]["resident"]["name"] == "Maggie Jones"  # each referral kept as it was
    assert [(m["merged_id"], m["into_id"], m["referral_ids"], m["by"]) for m in history["merges"]] == [
        (maggie["resident_id"], margaret["resident_id"], [maggie["id"]], "admin-3")
    ]
    # The merged resident's id still finds the one history.
    again = await client.get(f"/v1/residents/{maggie['resident_id']}", headers=admin)
    assert again.json()["resident_id"] == margaret["resident_id"]
    assert ("merge", "admin-3") in await audit(client, settings, margaret["resident_id"])
    runtime = client.app.state.runtime
    async with runtime.db.sessions() as session:
        kinds = (
            await session.execute(
                select(referral_changes.c.kind, referral_changes.c.fields).where(
                    referral_changes.c.referral_id == maggie["id"]
                )
            )
        ).all()
        outbox = runtime.tables.outbox
        events = (
            await session.execute(
                select(outbox.c.topic, outbox.c.payload).where(outbox.c.type.like("%residents.merged%"))
            )
        ).all()
    assert [k for k, _ in kinds] == ["merged"]
    assert sorted(topic for topic, _ in events) == sorted([settings.topics.referrals, settings.topics.request_stats])
    for _, payload in events:
        data = orjson.loads(runtime.keyring.open_if_sealed(payload))["data"]
        assert data == {
            "resident_id": margaret["resident_id"],
            "merged_resident_id": maggie["resident_id"],
            "referral_ids": [maggie["id"]],
            "merged_at": data["merged_at"],
        }


async def test_erasing_a_merged_resident_leaves_nothing_of_either_record_in_referrals(client, settings):
    margaret = await take(client, settings, name="Margaret Jones")
    maggie = await take(client, settings, name="Maggie Jones", need="befriending")
    admin = token(settings, "admin")
    await client.post(f"/v1/residents/{margaret['id']}/merge", json={"duplicate": maggie["id"]}, headers=admin)

    erased = await client.post(f"/v1/residents/{maggie['reference']}/erasure", headers=admin)

    assert erased.status_code == 200, erased.text
    assert sorted(erased.json()["erased"]) == sorted([margaret["id"], maggie["id"]])
    held = await everything_held(client.app.state.runtime)
    for secret in ("Margaret", "Maggie", "Northdown", "577000", "CT9 2RN", "food for", "befriending for"):
        assert secret not in held, secret
    history = (await client.get(f"/v1/residents/{margaret['id']}", headers=admin)).json()
    assert all(r["erased_at"] for r in history["referrals"]) and len(history["referrals"]) == 2
