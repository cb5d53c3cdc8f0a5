"""What advisers and administrators do after intake: find, amend, cancel; and who may."""

from services.referrals.models import referral_changes
from shared.events import ReferralAmendedV1, RequestCancelledV1
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token
from tests.support.kafka import read_topic

SERVICE = "referrals"


async def take(client, settings, **overrides):
    response = await client.post(
        "/v1/referrals", json=referral_body(**overrides), headers=token(settings, "call-centre")
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_an_adviser_finds_a_referral_by_the_reference_the_resident_quotes(client, settings):
    referral = await take(client, settings)
    typed = referral["reference"].lower().replace("-", "")
    found = await client.get("/v1/referrals", params={"reference": typed}, headers=token(settings, "call-centre"))
    assert [r["id"] for r in found.json()["results"]] == [referral["id"]]
    assert found.json()["results"][0]["request_types"] == ["food", "prescription"]


async def test_only_administrators_search_residents_by_name_postcode_or_phone(client, settings):
    referral = await take(client, settings)
    refused = await client.get("/v1/referrals", params={"name": "jones"}, headers=token(settings, "call-centre"))
    assert refused.status_code == 403
    for params in (
        {"name": "jones"},
        {"postcode": "ct92rn"},
        {"phone": "01843577000"},
        {"name": "margaret", "postcode": "CT9 2RN"},
    ):
        found = await client.get("/v1/referrals", params=params, headers=token(settings, "admin"))
        assert [r["id"] for r in found.json()["results"]] == [referral["id"]], params


async def test_a_search_with_a_bad_postcode_says_so(client, settings):
    response = await client.get("/v1/referrals", params={"postcode": "nope"}, headers=token(settings, "admin"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "postcode"


async def test_the_online_form_and_partners_cannot_read_referrals_back(client, settings):
    referral = await take(client, settings)
    for role in ("online-form", "partner", "hub", "analyst"):
        kwargs = {"hub": "thanet"} if role == "hub" else {}
        response = await client.get(f"/v1/referrals/{referral['id']}", headers=token(settings, role, **kwargs))
        assert response.status_code == 403, role


async def test_no_token_is_401_and_a_hub_cannot_post_referrals(client, settings):
    assert (await client.post("/v1/referrals", json=referral_body())).status_code == 401
    response = await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "hub", hub="thanet"))
    assert response.status_code == 403


async def test_an_unknown_referral_is_404(client, settings):
    response = await client.get(
        "/v1/referrals/00000000-0000-0000-0000-000000000000", headers=token(settings, "call-centre")
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_new_address_is_recorded_and_published_for_re_routing(client, settings):
    referral = await take(client, settings)
    amended = await client.patch(
        f"/v1/referrals/{referral['id']}",
        json={
            "resident": {"address": {"line1": "3 Tonbridge Road", "postcode": "me16 8rf"}},
            "note": "moved to daughter's",
        },
        headers=token(settings, "call-centre"),
    )
    assert amended.status_code == 200, amended.text
    assert amended.json()["resident"]["address"]["postcode"] == "ME16 8RF"
    assert amended.json()["version"] == 2
    events = await read_topic(
        settings.kafka_bootstrap_servers, settings.topics.referrals, expect=1, event_type=ReferralAmendedV1.type
    )
    data = ReferralAmendedV1.model_validate(events[0][1].data)
    assert data.address_changed is True
    assert data.changed == ["address.line1", "address.postcode", "address.town"]
    async with client.app.state.runtime.db.sessions() as session:
        change = (await session.execute(referral_changes.select())).mappings().one()
    assert change["kind"] == "amended"
    assert client.app.state.runtime.keyring.open_text(change["sealed_note"]) == "moved to daughter's"  # sealed at rest


async def test_an_amendment_with_a_bad_phone_names_the_field_and_changes_nothing(client, settings):
    referral = await take(client, settings)
    response = await client.patch(
        f"/v1/referrals/{referral['id']}", json={"resident": {"phone": "999"}}, headers=token(settings, "call-centre")
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "resident.phone"
    again = await client.get(f"/v1/referrals/{referral['id']}", headers=token(settings, "call-centre"))
    assert again.json()["version"] == 1


async def test_cancelling_one_request_leaves_the_other_open_and_publishes_the_cancellation(client, settings):
    referral = await take(client, settings)
    food = referral["requests"][0]["id"]
    response = await client.post(
        f"/v1/referrals/{referral['id']}/requests/{food}/cancel",
        json={"reason": "no-longer-needed"},
        headers=token(settings, "call-centre"),
    )
    body = response.json()
    assert [r["status"] for r in body["requests"]] == ["cancelled", "open"]
    assert body["status"] == "open"
    for topic in (settings.topics.referrals, settings.topics.request_stats):
        events = await read_topic(settings.kafka_bootstrap_servers, topic, expect=1, event_type=RequestCancelledV1.type)
        assert events[0][1].data["request_id"] == food


async def test_cancelling_a_referral_closes_every_open_request_and_twice_is_a_conflict(client, settings):
    referral = await take(client, settings)
    url = f"/v1/referrals/{referral['id']}/cancel"
    first = await client.post(url, json={"reason": "resident-request"}, headers=token(settings, "call-centre"))
    assert first.json()["status"] == "cancelled"
    assert {r["status"] for r in first.json()["requests"]} == {"cancelled"}
    second = await client.post(url, json={"reason": "resident-request"}, headers=token(settings, "call-centre"))
    assert second.status_code == 409


async def test_a_cancelled_referral_cannot_be_amended(client, settings):
    referral = await take(client, settings)
    await client.post(
        f"/v1/referrals/{referral['id']}/cancel", json={"reason": "duplicate"}, headers=token(settings, "call-centre")
    )
    response = await client.patch(
        f"/v1/referrals/{referral['id']}",
        json={"resident": {"name": "M Jones"}},
        headers=token(settings, "call-centre"),
    )
    assert response.status_code == 409
