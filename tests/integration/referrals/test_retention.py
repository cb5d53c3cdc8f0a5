"""Retention: closed cases are anonymised a configurable period after they closed; open ones are never, only listed."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from services.referrals.models import referrals
from shared.bus import OutgoingMessage, Producer
from shared.db import utcnow
from shared.events import AssignmentStatusChangedV1, CloudEvent, ResidentErasedV1
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


async def test_a_closed_case_is_anonymised_once_its_retention_period_has_passed_and_an_open_one_never(
    client,
    settings,
):
    cancelled = await post(client, settings, "Closed Case")
    cancel = await client.post(
        f"/v1/referrals/{cancelled['id']}/cancel",
        json={"reason": "no-longer-needed"},
        headers=token(settings, "call-centre"),
    )
    assert cancel.status_code == 200
    still_open = await post(client, settings, "Open Case")
    retention = client.app.state.retention  # 365 days closed, 730 days open before review (the defaults)
    now = utcnow()

    assert await retention.run_once(now=now + timedelta(days=364)) == []
    assert await retention.run_once(now=now + timedelta(days=366)) == [cancelled["id"]]
    held = await names(client)
    assert held == {cancelled["id"]: "[erased]", still_open["id"]: "Open Case"}
    # Open past every period: flagged for review, never erased unseen.
    assert await retention.run_once(now=now + timedelta(days=2000)) == []
    assert (await names(client))[still_open["id"]] == "Open Case"

    outbox = client.app.state.runtime.tables.outbox
    async with client.app.state.runtime.db.sessions() as session:
        payloads = (await session.scalars(select(outbox.c.payload).where(outbox.c.type == ResidentErasedV1.type))).all()
    keyring = client.app.state.runtime.keyring  # events on the referrals topic are sealed in the outbox
    events = [CloudEvent.from_bytes(keyring.open(p)) for p in payloads]
    assert [(e.subject, e.data["reason"]) for e in events] == [(cancelled["id"], "retention")]
    audit = (await client.get("/v1/audit", params={"action": "anonymise"}, headers=token(settings, "admin"))).json()
    assert [(r["actor"], r["resource_id"]) for r in audit["records"]] == [("retention", cancelled["id"])]


async def test_an_open_referral_past_retention_is_listed_for_review_and_never_anonymised(client, settings):
    still_open = await post(client, settings, "Open Case")
    retention = client.app.state.retention
    assert await retention.run_once(now=utcnow() + timedelta(days=731)) == []
    assert (await names(client)) == {still_open["id"]: "Open Case"}
    review = (await client.get("/v1/retention/review", headers=token(settings, "admin"))).json()
    assert [(item["id"], item["reference"]) for item in review["items"]] == [
        (still_open["id"], still_open["reference"])
    ]


def status_changed(referral: dict, request: dict, *, status: str, at, hub="thanet", outcome=None) -> CloudEvent:
    """What fulfilment publishes when a hub moves a request on (AssignmentStatusChangedV1)."""
    data = AssignmentStatusChangedV1(
        assignment_id=uuid.uuid4(),
        request_id=request["id"],
        referral_id=referral["id"],
        request_type=request["type"],
        urgency=request["urgency"],
        status=status,
        hub=hub,
        received_at=referral["received_at"],
        changed_at=at,
        outcome=outcome,
        closed_at=at if status in ("fulfilled", "unable_to_fulfil") else None,
    )
    return CloudEvent(
        source="/kent-together/fulfilment",
        type=data.type,
        subject=str(data.assignment_id),
        data=data.model_dump(mode="json"),
    )


async def publish_status(
    settings, referral: dict, request: dict, *, status: str, at, hub="thanet", outcome=None
) -> None:
    """`status_changed`, on the real topic."""
    event = status_changed(referral, request, status=status, at=at, hub=hub, outcome=outcome)
    producer = Producer(settings.kafka_bootstrap_servers)
    try:
        await producer.send_many(
            [
                OutgoingMessage(
                    topic=settings.topics.assignment_status, key=referral["id"].encode(), value=event.to_bytes()
                )
            ]
        )
    finally:
        await producer.stop()


async def referral_when(client, settings, referral_id: str, until) -> dict:
    for _ in range(200):
        body = (await client.get(f"/v1/referrals/{referral_id}", headers=token(settings, "call-centre"))).json()
        if until(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"referral never reached the state wanted: {body}")


async def test_a_referral_closes_when_its_hub_fulfils_its_requests_and_retention_counts_from_then(client, settings):
    referral = await post(client, settings, "Helped Resident")
    food, prescription = referral["requests"]
    now = utcnow()
    await publish_status(settings, referral, food, status="accepted", at=now)
    accepted = await referral_when(
        client, settings, referral["id"], lambda r: r["requests"][0]["progress"] == "accepted"
    )
    # An adviser sees a hub has it: "has anyone been in touch?"
    assert (accepted["status"], accepted["requests"][0]["hub"], accepted["requests"][0]["status"]) == (
        "open",
        "thanet",
        "open",
    )
    await publish_status(settings, referral, food, status="fulfilled", at=now, outcome="delivered")
    await publish_status(
        settings,
        referral,
        prescription,
        status="unable_to_fulfil",
        at=now + timedelta(days=10),
        outcome="resident-unreachable",
    )
    closed = await referral_when(client, settings, referral["id"], lambda r: r["status"] == "closed")
    assert [(r["status"], r["progress"], r["outcome"]) for r in closed["requests"]] == [
        ("closed", "fulfilled", "delivered"),
        ("closed", "unable_to_fulfil", "resident-unreachable"),
    ]

    retention = client.app.state.retention
    assert await retention.run_once(now=now + timedelta(days=374)) == []  # 364 days after it closed
    assert await retention.run_once(now=now + timedelta(days=376)) == [referral["id"]]


async def test_a_backfilled_case_closed_years_ago_is_kept_a_full_period_after_it_arrived(client, settings):
    body = referral_body(received_at="2020-04-02T10:00:00+00:00")
    response = await client.post("/v1/referrals", json=body, headers=token(settings, "admin"))
    assert response.status_code == 201, response.text
    referral = response.json()
    long_ago = datetime(2020, 4, 3, tzinfo=UTC)
    for request in referral["requests"]:
        await publish_status(settings, referral, request, status="fulfilled", at=long_ago)
    await referral_when(client, settings, referral["id"], lambda r: r["status"] == "closed")

    retention = client.app.state.retention
    assert await retention.run_once(now=utcnow() + timedelta(hours=1)) == []
    assert (await names(client)) == {referral["id"]: "Margaret Jones"}
    assert await retention.run_once(now=utcnow() + timedelta(days=366)) == [referral["id"]]


async def test_an_administrator_can_run_retention_now_with_the_configured_period(client, settings):
    client.app.state.retention.closed_for = timedelta(0)  # as REFERRALS_RETENTION_CLOSED_DAYS=0 would set it
    cancelled = await post(client, settings, "Closed Case")
    await client.post(
        f"/v1/referrals/{cancelled['id']}/cancel", json={"reason": "duplicate"}, headers=token(settings, "call-centre")
    )
    open_one = await post(client, settings, "Open Case")
    response = await client.post("/v1/retention/anonymise", headers=token(settings, "admin"))
    assert response.status_code == 200
    assert response.json() == {"anonymised": 1, "referral_ids": [cancelled["id"]]}
    assert (await names(client)) == {cancelled["id"]: "[erased]", open_one["id"]: "Open Case"}


async def test_the_anonymise_expired_command_anonymises_with_the_configured_period(client, settings, database_url):
    import asyncio

    from typer.testing import CliRunner

    from suite.cli import app as cli

    cancelled = await post(client, settings, "Closed Case")
    await client.post(
        f"/v1/referrals/{cancelled['id']}/cancel", json={"reason": "duplicate"}, headers=token(settings, "call-centre")
    )
    open_one = await post(client, settings, "Open Case")
    env = {
        "REFERRALS_DATABASE_URL": database_url,
        "REFERRALS_RETENTION_CLOSED_DAYS": "0",
        "KT_VAR_DIR": str(settings.var_dir),
        "KT_LOG_JSON": "false",
    }
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["anonymise-expired"], env=env)
    assert result.exit_code == 0, result.output
    assert "anonymised 1 referrals" in result.output
    assert (await names(client)) == {cancelled["id"]: "[erased]", open_one["id"]: "Open Case"}


async def test_a_retry_after_the_referral_was_anonymised_says_so_rather_than_blaming_the_body(client, settings):
    body = referral_body()
    writer = {**token(settings, "call-centre", subject="adviser-7"), "Idempotency-Key": "call-2291"}
    first = await client.post("/v1/referrals", json=body, headers=writer)
    assert first.status_code == 201, first.text
    client.app.state.retention.closed_for = timedelta(0)
    await client.post(f"/v1/referrals/{first.json()['id']}/cancel", json={"reason": "duplicate"}, headers=writer)
    assert await client.app.state.retention.run_once(now=utcnow() + timedelta(seconds=1)) == [first.json()["id"]]

    again = await client.post("/v1/referrals", json=body, headers=writer)  # the same body, retried

    assert again.status_code == 409, again.text
    problem = again.json()
    assert problem["type"].endswith("/referral-anonymised")
    assert first.json()["reference"] in problem["detail"] and "erased on" in problem["detail"]
    assert "different body" not in problem["detail"]
