"""A recovery lead's tool that retries an update after a timeout records it once."""

from tests.integration.actions.conftest import find_action
from tests.support.apps import token

SERVICE = "actions"


async def test_an_update_retried_with_its_key_is_recorded_once(client, settings, seeded):
    action = await find_action(client, settings, "district-and-communities", 1)
    lead = {**token(settings, "recovery-lead", subject="dcrc-lead"), "Idempotency-Key": '"update-2020-09-30"'}
    body = {"narrative": "Town centre plans agreed in 9 of 12 districts", "on": "2020-09-30"}

    first = await client.post(f"/v1/actions/{action['id']}/updates", headers=lead, json=body)
    retry = await client.post(f"/v1/actions/{action['id']}/updates", headers=lead, json=body)

    assert first.status_code == retry.status_code == 201, first.text
    assert retry.json() == first.json() and retry.headers["idempotent-replayed"] == "true"
    detail = (await client.get(f"/v1/actions/{action['id']}", headers=lead)).json()
    assert [h["narrative"] for h in detail["history"] if h["kind"] == "update"] == [body["narrative"]]
