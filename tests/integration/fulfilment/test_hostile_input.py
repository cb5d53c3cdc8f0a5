"""Odd and hostile input found by fuzzing: each a 422 naming the field, never a 500."""

from tests.integration.fulfilment.conftest import headers

SERVICE = "fulfilment"


async def test_a_hub_name_set_to_null_is_refused_naming_the_field(client, settings):
    response = await client.patch("/v1/hubs/thanet", json={"name": None}, headers=headers(settings, "admin"))
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "name", "reason": "may be left out (to keep it) but not null"}]
    assert (await client.get("/v1/hubs/thanet", headers=headers(settings, "admin"))).json()["name"] == "Thanet"


async def test_an_offset_or_cursor_past_what_a_database_can_count_is_refused_naming_the_field(client, settings):
    admin = headers(settings, "admin")
    for path, field in [
        ("/v1/queues/triage", "offset"),
        ("/v1/hubs/thanet/assignments", "offset"),
        ("/v1/hubs/thanet/feed", "cursor"),
    ]:
        response = await client.get(path, params={field: 2**70}, headers=admin)
        assert response.status_code == 422, (path, response.text)
        assert [e["field"] for e in response.json()["errors"]] == [field]
