"""What an adviser asks before and during a call: is this a duplicate, and who is this caller (two facts together)."""

from tests.integration.referrals.conftest import referral_body
from tests.integration.referrals.test_advisers import take
from tests.support.apps import token

SERVICE = "referrals"


async def test_a_duplicate_check_names_the_open_request_of_the_same_person_and_type_and_stores_nothing(
    client, settings
):
    earlier = await take(client, settings)
    body = referral_body()
    body["requests"] = [{"type": "food"}, {"type": "befriending"}]
    response = await client.post("/v1/referrals/duplicate-check", json=body, headers=token(settings, "call-centre"))
    assert response.status_code == 200, response.text
    [duplicate] = response.json()["duplicates"]
    assert (duplicate["type"], duplicate["reference"], duplicate["referral_id"]) == (
        "food",
        earlier["reference"],
        earlier["id"],
    )
    listed = await client.get(
        "/v1/referrals", params={"reference": earlier["reference"]}, headers=token(settings, "call-centre")
    )
    assert listed.json()["count"] == 1
    everyone = await client.get("/v1/referrals", params={"postcode": "CT9 2RN"}, headers=token(settings, "admin"))
    assert everyone.json()["count"] == 1, "the check stored no referral"


async def test_a_duplicate_check_for_someone_else_finds_nothing(client, settings):
    await take(client, settings)
    body = referral_body()
    body["resident"]["name"] = "Someone Else"
    response = await client.post("/v1/referrals/duplicate-check", json=body, headers=token(settings, "call-centre"))
    assert response.json() == {"duplicates": [], "count": 0}


async def test_a_duplicate_check_with_a_bad_body_names_the_fields(client, settings):
    body = referral_body()
    body["resident"]["address"]["postcode"] = "nope"
    response = await client.post("/v1/referrals/duplicate-check", json=body, headers=token(settings, "call-centre"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "resident.address.postcode"


async def test_an_adviser_finds_a_caller_by_name_and_postcode_or_by_phone_and_date_of_birth(client, settings):
    referral = await take(client, settings)
    adviser = token(settings, "call-centre")
    for params in (
        {"name": "margaret jones", "postcode": "ct92rn"},
        {"phone": "01843 577000", "date_of_birth": "1941-03-02"},
    ):
        found = await client.get("/v1/referrals", params=params, headers=adviser)
        assert [r["id"] for r in found.json()["results"]] == [referral["id"]], params
    wrong_birthday = await client.get(
        "/v1/referrals", params={"phone": "01843 577000", "date_of_birth": "1950-01-01"}, headers=adviser
    )
    assert wrong_birthday.json()["count"] == 0


async def test_an_adviser_cannot_list_everyone_at_a_postcode_or_with_a_name(client, settings):
    await take(client, settings)
    adviser = token(settings, "call-centre")
    for params in (
        {"postcode": "CT9 2RN"},
        {"name": "jones"},
        {"phone": "01843 577000"},
        {"name": "jones", "phone": "01843 577000"},
    ):
        assert (await client.get("/v1/referrals", params=params, headers=adviser)).status_code == 403, params
