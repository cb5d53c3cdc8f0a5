"""Hubs are data: listed for everyone who works them, edited by administrators, used by routing at once."""

from tests.integration.fulfilment.conftest import deliver, headers, hub_assignments, referral_received

SERVICE = "fulfilment"

SLUGS = {
    "ashford",
    "canterbury",
    "dartford",
    "dover",
    "folkestone-hythe",
    "gravesham",
    "maidstone",
    "sevenoaks",
    "swale",
    "thanet",
    "tonbridge-malling",
    "tunbridge-wells",
}


async def test_the_twelve_district_hubs_are_listed_with_their_districts_and_sla(client, settings):
    response = await client.get("/v1/hubs", headers=headers(settings, "hub", "thanet"))

    assert response.status_code == 200
    hubs = {h["slug"]: h for h in response.json()}
    assert set(hubs) == SLUGS
    assert hubs["thanet"]["district_code"] == "E07000114"
    assert hubs["folkestone-hythe"]["name"] == "Folkestone and Hythe"
    assert hubs["thanet"]["sla"]["today"] == {"accept_hours": 4.0, "fulfil_hours": 24.0}
    assert "webhook_secret" not in hubs["thanet"]


async def test_an_administrator_edits_a_hub_and_new_requests_follow_its_sla(client, settings):
    admin = headers(settings, "admin")
    response = await client.patch(
        "/v1/hubs/thanet",
        headers=admin,
        json={
            "email": "hub@thanet.gov.uk",
            "phone": "01843 577000",
            "hours": "8am to 8pm, every day",
            "sla": {"today": {"accept_hours": 2}},
        },
    )
    assert response.status_code == 200, response.text
    hub = response.json()
    assert hub["email"] == "hub@thanet.gov.uk" and hub["hours"] == "8am to 8pm, every day"
    assert hub["sla"]["today"] == {"accept_hours": 2.0, "fulfil_hours": 24.0}

    await deliver(client.app, referral_received(types=("food",), urgency="today"))
    [item] = await hub_assignments(client, settings, "thanet", expect=1)
    from datetime import datetime

    due = datetime.fromisoformat(item["accept_due_at"]) - datetime.fromisoformat(item["routed_at"])
    assert due.total_seconds() == 2 * 3600


async def test_only_administrators_edit_hubs_and_bad_settings_name_the_field(client, settings):
    by_hub = await client.patch("/v1/hubs/thanet", json={"hours": "never"}, headers=headers(settings, "hub", "thanet"))
    bad_sla = await client.patch(
        "/v1/hubs/thanet",
        json={"sla": {"today": {"accept_hours": 48, "fulfil_hours": 2}}},
        headers=headers(settings, "admin"),
    )
    unsigned = await client.patch(
        "/v1/hubs/thanet", json={"webhook_url": "https://hub.example/kt"}, headers=headers(settings, "admin")
    )
    unknown = await client.patch("/v1/hubs/atlantis", json={"hours": "9-5"}, headers=headers(settings, "admin"))

    assert by_hub.status_code == 403
    assert bad_sla.status_code == 422 and bad_sla.json()["errors"][0]["field"] == "sla.today"
    assert unsigned.status_code == 422 and unsigned.json()["errors"][0]["field"] == "webhook_secret"
    assert unknown.status_code == 404
    untouched = (await client.get("/v1/hubs/thanet", headers=headers(settings, "admin"))).json()
    assert untouched["hours"] != "never" and untouched["webhook_url"] is None


async def test_every_endpoint_needs_a_token_with_the_right_scope(client, settings):
    assert (await client.get("/v1/hubs")).status_code == 401
    assert (await client.get("/v1/hubs", headers=headers(settings, "call-centre"))).status_code == 403
    assert (await client.get("/health")).status_code == 200
