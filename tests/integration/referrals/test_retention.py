"""Retention: closed cases are anonymised after a configurable period, open ones after a longer backstop."""

from datetime import timedelta

from sqlalchemy import select

from services.referrals.models import referrals
from shared.db import utcnow
from shared.events import CloudEvent, ResidentErasedV1
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token

SERVICE = "referrals"


async def post(client, settings, name: str) -> dict:
    body = referral_body()
    body["resident"]["name"] = name
    response = await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
    assert response.status_code == 201, response.text
    return response.json()


async def names(client) -> dict[str, str]:
    keyring = client.app.state.runtime.keyring  # the names are sealed at rest
    async with client.app.state.runtime.db.sessions() as session:
        rows = (await session.execute(select(referrals.c.id, referrals.c.personal))).all()
    return {referral_id: keyring.open_json(personal)["name"] for referral_id, personal in rows}


async def test_a_closed_case_is_anonymised_once_its_retention_period_has_passed_and_an_open_one_only_after_the_backstop(
    client, settings,
):
    cancelled = await post(client, settings, "Closed Case")
    cancel = await client.post(f"/v1/referrals/{cancelled['id']}/cancel", json={"reason": "no-longer-needed"},
                               headers=token(settings, "call-centre"))
    assert cancel.status_code == 200
    still_open = await post(client, settings, "Open Case")
    retention = client.app.state.retention  # 365 days closed, 730 days for any referral (the defaults)
    now = utcnow()

    assert await retention.run_once(now=now + timedelta(days=364)) == []
    assert await retention.run_once(now=now + timedelta(days=366)) == [cancelled["id"]]
    held = await names(client)
    assert held == {cancelled["id"]: "[erased]", still_open["id"]: "Open Case"}
    assert await retention.run_once(now=now + timedelta(days=731)) == [still_open["id"]]
    assert (await names(client))[still_open["id"]] == "[erased]"
    # Already anonymised: never again.
    assert await retention.run_once(now=now + timedelta(days=2000)) == []

    outbox = client.app.state.runtime.tables.outbox
    async with client.app.state.runtime.db.sessions() as session:
        payloads = (await session.scalars(select(outbox.c.payload).where(outbox.c.type == ResidentErasedV1.type))).all()
    keyring = client.app.state.runtime.keyring  # events on the referrals topic are sealed in the outbox
    events = sorted((CloudEvent.from_bytes(keyring.open(p)) for p in payloads), key=lambda e: e.time)
    assert [(e.subject, e.data["reason"]) for e in events] == [(cancelled["id"], "retention"), (still_open["id"], "retention")]
    audit = (await client.get("/v1/audit", params={"action": "anonymise"}, headers=token(settings, "admin"))).json()
    assert [(r["actor"], r["resource_id"]) for r in audit["records"]] == [
        ("retention", cancelled["id"]), ("retention", still_open["id"])]


async def test_an_administrator_can_run_retention_now_with_the_configured_period(client, settings):
    client.app.state.retention.closed_for = timedelta(0)  # as REFERRALS_RETENTION_CLOSED_DAYS=0 would set it
    cancelled = await post(client, settings, "Closed Case")
    await client.post(f"/v1/referrals/{cancelled['id']}/cancel", json={"reason": "duplicate"},
                      headers=token(settings, "call-centre"))
    open_one = await post(client, settings, "Open Case")
    response = await client.post("/v1/retention/anonymise", headers=token(settings, "admin"))
    assert response.status_code == 200
    assert response.json() == {"anonymised": 1, "referral_ids": [cancelled["id"]]}
    assert (await names(client)) == {cancelled["id"]: "[erased]", open_one["id"]: "Open Case"}


async def test_the_anonymise_expired_command_anonymises_with_the_configured_period(client, settings, database_url):
    import asyncio

    from typer.testing import CliRunner

    from shared.cli import app as cli

    cancelled = await post(client, settings, "Closed Case")
    await client.post(f"/v1/referrals/{cancelled['id']}/cancel", json={"reason": "duplicate"},
                      headers=token(settings, "call-centre"))
    open_one = await post(client, settings, "Open Case")
    env = {"REFERRALS_DATABASE_URL": database_url, "REFERRALS_RETENTION_CLOSED_DAYS": "0",
           "KT_VAR_DIR": str(settings.var_dir), "KT_LOG_JSON": "false"}
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["anonymise-expired"], env=env)
    assert result.exit_code == 0, result.output
    assert "anonymised 1 referrals" in result.output
    assert (await names(client)) == {cancelled["id"]: "[erased]", open_one["id"]: "Open Case"}
