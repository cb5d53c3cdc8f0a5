"""Taking a referral: stored whole or not at all, published, never duplicated."""

import asyncio

from sqlalchemy import func, select

from services.referrals.models import referrals, requests
from shared.events import ReferralReceivedV1, RequestReceivedV1
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token
from tests.support.kafka import read_topic

SERVICE = "referrals"


async def count_rows(app, table) -> int:
    runtime = app.state.runtime
    async with runtime.db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(table))


async def test_referral_is_stored_with_a_reference_and_its_location(client, settings):
    response = await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/referrals/{body['id']}"
    assert body["reference"].startswith("KT-") and len(body["reference"]) == 12
    assert body["resident"]["address"]["postcode"] == "CT9 2RN"
    assert body["resident"]["phone"] == "+441843577000"
    assert [r["type"] for r in body["requests"]] == ["food", "prescription"]
    assert all(r["status"] == "open" for r in body["requests"])

    fetched = await client.get(
        body["links"] if "links" in body else response.headers["location"], headers=token(settings, "call-centre")
    )
    assert fetched.status_code == 200
    assert fetched.json()["reference"] == body["reference"]


async def test_referral_received_event_carries_what_fulfilment_needs_keyed_by_referral(client, settings):
    response = await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))
    referral = response.json()
    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.referrals, expect=1)
    assert len(events) == 1
    key, event = events[0]
    assert key == referral["id"].encode()
    assert event.type == ReferralReceivedV1.type and event.specversion == "1.0"
    data = ReferralReceivedV1.model_validate(event.data)
    assert data.reference == referral["reference"]
    assert data.resident.address.postcode == "CT9 2RN"
    assert [str(r.request_id) for r in data.requests] == [r["id"] for r in referral["requests"]]


async def test_reporting_events_carry_no_personal_data(client, settings):
    await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))
    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.request_stats, expect=2)
    assert sorted(RequestReceivedV1.model_validate(e.data).request_type for _, e in events) == ["food", "prescription"]
    for _, event in events:
        raw = event.to_bytes().decode()
        for personal in ("Margaret", "Jones", "577000", "Northdown", "CT9 2RN", "1941"):
            assert personal not in raw
        assert event.data["postcode_district"] == "CT9"


async def test_every_invalid_field_is_named_with_its_reason_in_one_response(client, settings):
    body = referral_body(channel="fax", colour="red")
    body["resident"]["phone"] = "12345"
    body["resident"]["address"]["postcode"] = "ZZ9"
    body["resident"]["date_of_birth"] = "2090-01-01"
    body["requests"] = [{"type": "pizza"}, {"type": "food", "needed_by": "not-a-date"}]
    response = await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    errors = {e["field"]: e["reason"] for e in response.json()["errors"]}
    assert errors["channel"].startswith("Input should be 'phone'")
    assert errors["colour"] == "unknown field"
    assert "not a valid phone number" in errors["resident.phone"]
    assert "not a valid UK postcode" in errors["resident.address.postcode"]
    assert errors["resident.date_of_birth"] == "is in the future"
    assert "unknown request type 'pizza'" in errors["requests[0].type"]
    assert "requests[1].needed_by" in errors
    # The contact preference is phone, and the phone was invalid: said too.
    assert "no valid phone" in errors["resident.contact_preference"]


async def test_a_referral_without_requests_or_consent_is_refused(client, settings):
    body = referral_body(requests=[])
    del body["consent"]
    response = await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
    errors = {e["field"]: e["reason"] for e in response.json()["errors"]}
    assert errors == {"requests": "List should have at least 1 item after validation, not 0", "consent": "is required"}


async def test_a_refused_referral_stores_nothing_and_publishes_nothing(client, settings):
    body = referral_body()
    body["requests"][1]["type"] = "unknown-type"
    response = await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
    assert response.status_code == 422
    assert await count_rows(client.app, referrals) == 0
    assert await count_rows(client.app, requests) == 0
    assert await count_rows(client.app, client.app.state.runtime.tables.outbox) == 0


async def test_a_body_that_is_not_json_is_a_clear_error(client, settings):
    response = await client.post(
        "/v1/referrals",
        content=b"{not json",
        headers={**token(settings, "call-centre"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "body", "reason": "not valid JSON"}]


async def test_a_body_over_the_size_limit_is_refused_with_413(client, settings):
    body = referral_body()
    body["requests"][0]["details"] = "x" * (settings.max_body_bytes + 10)
    response = await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
    assert response.status_code == 413


async def test_a_partner_referral_must_name_the_referrer(client, settings):
    response = await client.post(
        "/v1/referrals", json=referral_body(channel="partner"), headers=token(settings, "partner")
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "referrer", "reason": "is required for a partner referral"}]
    body = referral_body(channel="partner", referrer={"name": "Dr Patel", "organisation": "Northdown Surgery"})
    assert (await client.post("/v1/referrals", json=body, headers=token(settings, "partner"))).status_code == 201


async def test_same_idempotency_key_and_body_returns_the_same_referral(client, settings):
    headers = {**token(settings, "online-form", subject="online-form"), "Idempotency-Key": "form-123"}
    first = await client.post("/v1/referrals", json=referral_body(), headers=headers)
    again = await client.post("/v1/referrals", json=referral_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await count_rows(client.app, referrals) == 1
    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.referrals, expect=1)
    assert len(events) == 1


async def test_same_idempotency_key_with_another_body_is_refused(client, settings):
    headers = {**token(settings, "online-form", subject="online-form"), "Idempotency-Key": "form-124"}
    assert (await client.post("/v1/referrals", json=referral_body(), headers=headers)).status_code == 201
    other = referral_body(channel="online")
    response = await client.post("/v1/referrals", json=other, headers=headers)
    assert response.status_code == 422
    assert response.json()["type"].endswith("/idempotency-key-reused")
    assert await count_rows(client.app, referrals) == 1


async def test_concurrent_retries_with_one_key_create_one_referral(client, settings):
    headers = {**token(settings, "call-centre", subject="adviser-7"), "Idempotency-Key": "retry-storm"}
    responses = await asyncio.gather(
        *[client.post("/v1/referrals", json=referral_body(), headers=headers) for _ in range(6)]
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_rows(client.app, referrals) == 1


async def test_same_person_with_an_open_request_of_the_same_type_is_flagged_and_linked(client, settings):
    first = (await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))).json()
    # The same person through the online form: name typed differently, same date of birth.
    again = referral_body(channel="online", requests=[{"type": "food"}, {"type": "befriending"}])
    again["resident"]["name"] = "  JONES, margaret "
    again["resident"]["address"]["postcode"] = "CT9 1AB"
    second = (await client.post("/v1/referrals", json=again, headers=token(settings, "online-form"))).json()
    assert second["possible_duplicate"] is True
    food, befriending = second["requests"]
    assert food["duplicate_of"] == first["requests"][0]["id"]
    assert befriending["duplicate_of"] is None
    assert food["status"] == "open"  # flagged, never dropped


async def test_a_different_person_with_the_same_name_is_not_a_duplicate(client, settings):
    await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))
    other = referral_body()
    other["resident"].update(date_of_birth="1990-01-01", phone="07911 123456")
    other["resident"]["address"]["postcode"] = "ME14 1XX"
    second = (await client.post("/v1/referrals", json=other, headers=token(settings, "call-centre"))).json()
    assert second["possible_duplicate"] is False


async def test_request_types_are_data_an_administrator_extends(client, settings):
    body = referral_body(requests=[{"type": "dog-walking"}])
    refused = await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
    assert refused.status_code == 422
    added = await client.post(
        "/v1/request-types", json={"id": "dog-walking", "label": "Dog walking"}, headers=token(settings, "admin")
    )
    assert added.status_code == 201
    accepted = await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
    assert accepted.status_code == 201
    assert accepted.json()["requests"][0]["type"] == "dog-walking"
    types = (await client.get("/v1/request-types", headers=token(settings, "call-centre"))).json()
    assert [t["id"] for t in types][:6] == ["food", "prescription", "befriending", "financial", "practical", "other"]


async def test_only_administrators_manage_request_types(client, settings):
    response = await client.post(
        "/v1/request-types", json={"id": "x-ray", "label": "X"}, headers=token(settings, "call-centre")
    )
    assert response.status_code == 403


async def test_a_retired_request_type_is_refused_for_new_requests(client, settings):
    patched = await client.patch("/v1/request-types/other", json={"active": False}, headers=token(settings, "admin"))
    assert patched.json()["active"] is False
    response = await client.post(
        "/v1/referrals", json=referral_body(requests=[{"type": "other"}]), headers=token(settings, "call-centre")
    )
    assert response.status_code == 422


async def test_referrals_posted_together_are_each_stored_whole_and_published(client, settings):
    headers = token(settings, "call-centre")
    bodies = []
    for i in range(40):
        body = referral_body()
        body["resident"]["name"] = f"Resident {i}"
        bodies.append(body)
    responses = await asyncio.gather(*[client.post("/v1/referrals", json=b, headers=headers) for b in bodies])
    assert [r.status_code for r in responses] == [201] * 40
    assert len({r.json()["reference"] for r in responses}) == 40
    assert await count_rows(client.app, referrals) == 40
    assert await count_rows(client.app, requests) == 80
    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.referrals, expect=40)
    assert {e.data["referral_id"] for _, e in events} == {r.json()["id"] for r in responses}


async def test_the_same_person_twice_at_the_same_moment_is_still_flagged(client, settings):
    headers = token(settings, "call-centre")
    first, second = await asyncio.gather(
        client.post("/v1/referrals", json=referral_body(), headers=headers),
        client.post("/v1/referrals", json=referral_body(channel="online"), headers=token(settings, "online-form")),
    )
    flagged = [r.json() for r in (first, second) if r.json()["possible_duplicate"]]
    assert len(flagged) == 1
    other = first.json() if flagged[0]["id"] == second.json()["id"] else second.json()
    assert flagged[0]["requests"][0]["duplicate_of"] == other["requests"][0]["id"]


async def test_concurrent_retries_with_one_key_and_different_bodies_store_one_and_refuse_the_rest(client, settings):
    headers = {**token(settings, "call-centre", subject="adviser-9"), "Idempotency-Key": "mixed"}
    responses = await asyncio.gather(
        client.post("/v1/referrals", json=referral_body(), headers=headers),
        client.post("/v1/referrals", json=referral_body(channel="email"), headers=headers),
    )
    assert sorted(r.status_code for r in responses) == [201, 422]
    assert await count_rows(client.app, referrals) == 1
