"""The audit log in fulfilment: which hub staff read, exported or changed a resident's assignment."""

from tests.integration.fulfilment.conftest import deliver, headers, hub_assignments, referral_received
from tests.support.audit import allow_audit, refuse_audit

SERVICE = "fulfilment"


async def test_hub_reads_feed_exports_and_changes_are_recorded_by_referral_with_who(client, settings):
    referral = referral_received(types=("food",))
    await deliver(client.app, referral)
    thanet = headers(settings, "hub", "thanet")  # subject "hub-thanet"
    [item] = await hub_assignments(client, settings, "thanet", expect=1)
    assert (await client.get(f"/v1/assignments/{item['id']}", headers=thanet)).status_code == 200
    assert (await client.get("/v1/hubs/thanet/feed", params={"cursor": 0}, headers=thanet)).json()["items"]
    accepted = await client.post(f"/v1/assignments/{item['id']}/transitions", json={"to": "accepted"}, headers=thanet)
    assert accepted.status_code == 200, accepted.text
    # Nothing new in the feed: nothing seen, nothing recorded.
    last = (await client.get("/v1/hubs/thanet/feed", params={"cursor": 10**6}, headers=thanet)).json()
    assert last["items"] == []

    admin = headers(settings, "admin")
    by_referral = (
        await client.get("/v1/audit", params={"resource_id": str(referral.referral_id)}, headers=admin)
    ).json()["records"]
    assert [(r["action"], r["actor"], r["hub"]) for r in by_referral] == [
        ("read", "hub-thanet", "thanet"),  # the list (hub_assignments above)
        ("read", "hub-thanet", "thanet"),  # the assignment with the resident's details
        ("export", "hub-thanet", "thanet"),  # the feed
    ]
    assert by_referral[1]["detail"] == {"assignment_id": item["id"]}
    assert by_referral[2]["detail"]["hub-feed"] == "thanet"
    changes = (await client.get("/v1/audit", params={"resource_id": item["id"]}, headers=admin)).json()["records"]
    assert [(r["action"], r["resource"], r["detail"]) for r in changes] == [
        ("change", "assignment", {"to": "accepted"})
    ]


async def test_a_hub_change_whose_audit_record_cannot_be_written_is_not_made(client, settings):
    """A transition or a case note commits with the record of who made it, or not at all."""
    await deliver(client.app, referral_received(types=("food",)))
    thanet = headers(settings, "hub", "thanet")
    [item] = await hub_assignments(client, settings, "thanet", expect=1)
    runtime = client.app.state.runtime
    await refuse_audit(runtime)
    accepted = await client.post(f"/v1/assignments/{item['id']}/transitions", json={"to": "accepted"}, headers=thanet)
    noted = await client.post(f"/v1/assignments/{item['id']}/notes", json={"text": "Rang, no answer"}, headers=thanet)
    assert (accepted.status_code, noted.status_code) == (500, 500)
    await allow_audit(runtime)

    now = (await client.get(f"/v1/assignments/{item['id']}", headers=thanet)).json()
    assert now["status"] == item["status"] == "routed"
    assert now["notes"] == []
    changes = (
        await client.get("/v1/audit", params={"resource_id": item["id"]}, headers=headers(settings, "admin"))
    ).json()["records"]
    assert changes == []
