"""What a body must be to be read at all: JSON said to be JSON, and text without control or direction characters."""

from __future__ import annotations

import asyncio

import orjson
from typer.testing import CliRunner

from suite.cli import app as cli
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token


async def test_a_body_sent_as_text_or_with_no_content_type_is_refused_415_and_nothing_is_stored(start_service):
    async with start_service("referrals") as client:
        writer = token(client.settings, "call-centre")
        raw = orjson.dumps(referral_body())
        for content_type in ("text/plain", None):  # httpx sends raw bytes with no Content-Type of its own
            headers = {**writer, **({"Content-Type": content_type} if content_type else {})}
            response = await client.post("/v1/referrals", content=raw, headers=headers)
            assert response.status_code == 415, (content_type, response.text)
            assert "application/json" in response.json()["detail"]
        admin = token(client.settings, "admin")
        assert (await client.get("/v1/referrals", params={"name": "Margaret Jones"}, headers=admin)).json()[
            "count"
        ] == 0
        as_json = await client.post(
            "/v1/referrals", content=raw, headers={**writer, "Content-Type": "application/json"}
        )
        assert as_json.status_code == 201


async def test_a_name_or_details_with_a_nul_or_a_direction_override_is_refused_naming_the_field(start_service):
    async with start_service("referrals") as client:
        body = referral_body()
        body["resident"]["name"] = "Margaret\u202e senoJ"
        body["requests"][0]["details"] = "Weekly\x00 shop"
        response = await client.post("/v1/referrals", json=body, headers=token(client.settings, "call-centre"))
        assert response.status_code == 422, response.text
        fields = {e["field"]: e["reason"] for e in response.json()["errors"]}
        assert "U+202E" in fields["resident.name"] and "U+0000" in fields["requests[0].details"]


async def test_a_referral_is_found_by_the_reference_the_resident_quotes_in_the_path(start_service):
    async with start_service("referrals") as client:
        writer = token(client.settings, "call-centre")
        taken = (await client.post("/v1/referrals", json=referral_body(), headers=writer)).json()
        quoted = taken["reference"].lower().replace("-", " ")
        response = await client.get(f"/v1/referrals/{quoted}", headers=writer)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == taken["id"]
        assert response.headers["content-location"] == f"/v1/referrals/{taken['id']}"
        missing = await client.get("/v1/referrals/KT-0000-0000", headers=writer)
        assert missing.status_code == 404 and "KT-0000-0000" in missing.json()["detail"]


async def test_no_token_is_minted_for_a_hub_that_does_not_exist(tmp_path):
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["token", "--role", "hub", "--hub", "nowhere"], env={"KT_VAR_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2
    assert "no hub 'nowhere'" in result.output and "thanet" in result.output
