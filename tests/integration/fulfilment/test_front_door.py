"""The front door's questions (the web front's resident pages): who helps at a postcode, and where a request is."""

from tests.integration.fulfilment.conftest import (
    MEDWAY_POSTCODE,
    THANET_POSTCODE,
    deliver,
    headers,
    hub_assignments,
    referral_received,
)

SERVICE = "fulfilment"


async def test_a_kent_postcode_names_its_district_hub(client, settings):
    response = await client.get("/v1/areas/ct92rn", headers=headers(settings, "online-form"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("postcode", "outcome", "in_kent", "hub", "council_code", "council_name")} == {
        "postcode": "CT9 2RN",
        "outcome": "hub",
        "in_kent": True,
        "hub": "thanet",
        "council_code": "E07000114",
        "council_name": "Thanet",
    }
    assert "Thanet" in body["hub_name"]


async def test_a_postcode_outside_kent_names_the_council_that_helps(client, settings):
    response = await client.get(f"/v1/areas/{MEDWAY_POSTCODE}", headers=headers(settings, "online-form"))
    body = response.json()
    assert (body["in_kent"], body["outcome"], body["hub"]) == (False, "out_of_area", None)
    assert body["council_name"] == "Medway"


async def test_a_postcode_that_is_not_one_is_a_field_error(client, settings):
    response = await client.get("/v1/areas/NOTAPOSTCODE", headers=headers(settings, "online-form"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "postcode"


async def test_request_status_by_reference_and_postcode_gives_type_status_and_hub_only(client, settings):
    await deliver(client.app, referral_received())  # reference KT-7F3K-9QX2, Thanet
    await hub_assignments(client, settings, "thanet", expect=2)
    response = await client.get(
        "/v1/request-status",
        params={"reference": "kt7f3k9qx2", "postcode": "ct9 2rn"},
        headers=headers(settings, "online-form"),
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert sorted((i["type"], i["status"], i["hub"]) for i in items) == [
        ("food", "routed", "thanet"),
        ("prescription", "routed", "thanet"),
    ]
    assert "Margaret" not in response.text and "Northdown" not in response.text


async def test_request_status_with_the_wrong_postcode_finds_nothing(client, settings):
    await deliver(client.app, referral_received(postcode=THANET_POSTCODE))
    await hub_assignments(client, settings, "thanet", expect=2)
    response = await client.get(
        "/v1/request-status",
        params={"reference": "KT-7F3K-9QX2", "postcode": "CT1 1YW"},
        headers=headers(settings, "online-form"),
    )
    assert response.json() == {"items": [], "count": 0}
