"""A hub system that retries after a timeout writes once: Idempotency-Key on every POST that creates something."""

from datetime import timedelta

from sqlalchemy import select, update

from shared.db import utcnow
from tests.integration.fulfilment.conftest import headers
from tests.integration.fulfilment.test_assignments import one_thanet_assignment
from tests.support.apps import token

SERVICE = "fulfilment"


async def thanet_assignment(client, settings) -> str:
    item, _ = await one_thanet_assignment(client, settings)
    return item["id"]


async def detail(client, settings, assignment_id: str) -> dict:
    response = await client.get(f"/v1/assignments/{assignment_id}", headers=headers(settings, "hub", "thanet"))
    return response.json()


async def test_a_case_note_retried_with_its_key_is_written_once_and_the_retry_gets_the_first_answer(client, settings):
    assignment_id = await thanet_assignment(client, settings)
    thanet = {**headers(settings, "hub", "thanet"), "Idempotency-Key": '"note-8e03978e-40d5-43e8"'}
    url = f"/v1/assignments/{assignment_id}/notes"

    first = await client.post(url, json={"text": "Neighbour has a key"}, headers=thanet)
    retry = await client.post(url, json={"text": "Neighbour has a key"}, headers=thanet)

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert retry.headers.get("location") == first.headers.get("location")
    assert [n["text"] for n in (await detail(client, settings, assignment_id))["notes"]] == ["Neighbour has a key"]


async def test_a_contact_attempt_and_a_transition_retried_are_recorded_once(client, settings):
    assignment_id = await thanet_assignment(client, settings)
    thanet = headers(settings, "hub", "thanet")

    for _ in range(2):
        tried = await client.post(
            f"/v1/assignments/{assignment_id}/contact-attempts",
            json={"outcome": "no-answer"},
            headers={**thanet, "Idempotency-Key": "attempt-1"},
        )
        assert tried.status_code == 201
        accepted = await client.post(
            f"/v1/assignments/{assignment_id}/transitions",
            json={"to": "accepted"},
            headers={**thanet, "Idempotency-Key": "accept-1"},
        )
        # Without the key the retry would be a 409: an accepted assignment cannot be accepted again.
        assert accepted.status_code == 200, accepted.text

    seen = await detail(client, settings, assignment_id)
    assert len(seen["contact_attempts"]) == 1
    assert seen["status"] == "accepted"


async def test_the_same_key_with_another_body_is_a_422_and_nothing_is_written(client, settings):
    assignment_id = await thanet_assignment(client, settings)
    thanet = {**headers(settings, "hub", "thanet"), "Idempotency-Key": "note-1"}
    url = f"/v1/assignments/{assignment_id}/notes"

    assert (await client.post(url, json={"text": "first"}, headers=thanet)).status_code == 201
    other = await client.post(url, json={"text": "second"}, headers=thanet)

    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert other.json()["errors"] == [
        {"field": "Idempotency-Key", "in": "header", "reason": "already used with another request: use a new key"}
    ]
    assert [n["text"] for n in (await detail(client, settings, assignment_id))["notes"]] == ["first"]


async def test_a_key_is_the_callers_own_another_caller_with_the_same_key_writes_its_own(client, settings):
    assignment_id = await thanet_assignment(client, settings)
    url = f"/v1/assignments/{assignment_id}/notes"
    for subject in ("thanet-a", "thanet-b"):
        response = await client.post(
            url,
            json={"text": f"from {subject}"},
            headers={**token(settings, "hub", hub="thanet", subject=subject), "Idempotency-Key": "shared-key"},
        )
        assert response.status_code == 201
    assert len((await detail(client, settings, assignment_id))["notes"]) == 2


async def test_a_malformed_key_is_a_422_naming_the_header(client, settings):
    assignment_id = await thanet_assignment(client, settings)
    for bad in ('"unterminated', "two words", "x" * 201, '""'):
        response = await client.post(
            f"/v1/assignments/{assignment_id}/notes",
            json={"text": "x"},
            headers={**headers(settings, "hub", "thanet"), "Idempotency-Key": bad},
        )
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["field"] == "Idempotency-Key"
        assert response.json()["errors"][0]["in"] == "header"
    assert (await detail(client, settings, assignment_id))["notes"] == []


async def test_a_refused_request_is_not_kept_so_its_retry_runs(client, settings):
    """A 409 (not allowed now) is the state's answer, not the request's: after the state changes the retry runs."""
    assignment_id = await thanet_assignment(client, settings)
    thanet = headers(settings, "hub", "thanet")
    early = await client.post(
        f"/v1/assignments/{assignment_id}/transitions",
        json={"to": "fulfilled"},
        headers={**thanet, "Idempotency-Key": "fulfil-1"},
    )
    assert early.status_code == 409
    await client.post(f"/v1/assignments/{assignment_id}/transitions", json={"to": "accepted"}, headers=thanet)
    await client.post(f"/v1/assignments/{assignment_id}/transitions", json={"to": "in_progress"}, headers=thanet)
    later = await client.post(
        f"/v1/assignments/{assignment_id}/transitions",
        json={"to": "fulfilled"},
        headers={**thanet, "Idempotency-Key": "fulfil-1"},
    )
    assert later.status_code == 200, later.text


async def test_kept_answers_are_sealed_at_rest_and_forgotten_after_the_retention(client, settings):
    assignment_id = await thanet_assignment(client, settings)
    thanet = {**headers(settings, "hub", "thanet"), "Idempotency-Key": "note-sealed"}
    url = f"/v1/assignments/{assignment_id}/notes"
    assert (await client.post(url, json={"text": "Door code 4471"}, headers=thanet)).status_code == 201

    runtime = client.app.state.runtime
    table = runtime.tables.idempotency
    async with runtime.db.sessions() as session:
        [stored] = (await session.execute(select(table.c.response))).scalars().all()
    assert b"Door code 4471" not in stored

    async with runtime.db.sessions() as session, session.begin():
        await session.execute(update(table).values(created_at=utcnow() - timedelta(hours=25)))
    assert await runtime.idempotency.purge() == 1
    # Forgotten: the same key now names a new request.
    again = await client.post(url, json={"text": "Door code 4471"}, headers=thanet)
    assert "idempotent-replayed" not in again.headers
    assert len((await detail(client, settings, assignment_id))["notes"]) == 2
