"""`null` in a PATCH means "clear it", and only where the schema says so: elsewhere it is a 422 naming the field.

Every PATCH operation of every installed service, from its own OpenAPI document:
each body field the document does not let be null is sent as null, and must be
refused before it reaches the database (today's NOT NULL constraint answered 500).
"""

from __future__ import annotations

from tests.support.apps import token
from tests.support.services import service_names


def _resolve(schema: dict, document: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _allows_null(prop: dict) -> bool:
    return prop.get("type") == "null" or any(option.get("type") == "null" for option in prop.get("anyOf", ()))


def patch_fields(document: dict) -> list[tuple[str, str, bool]]:
    """(path, field, may be null) for every field of every PATCH body."""
    found = []
    for path, item in document["paths"].items():
        body = item.get("patch", {}).get("requestBody", {}).get("content", {}).get("application/json")
        if body is None:
            continue
        for name, prop in _resolve(body["schema"], document).get("properties", {}).items():
            found.append((path, name, _allows_null(prop)))
    return found


async def test_every_patch_refuses_null_for_a_field_that_may_be_left_out_but_not_emptied(start_service):
    checked = 0
    for service in service_names():
        async with start_service(service) as client:
            document = client.app.openapi()
            admin = token(client.settings, "admin")
            for path, field, nullable in patch_fields(document):
                if nullable:
                    continue
                url = path.replace("{hub}", "thanet").replace("{plan}", "krf-recovery-2020")
                url = (
                    url.replace("{type_id}", "food")
                    .replace("{action_id}", "0" * 8)
                    .replace("{assignment_id}", "0" * 8)
                    .replace("{referral_id}", "0" * 8)
                )
                response = await client.patch(url, json={field: None}, headers=admin)
                assert response.status_code == 422, (
                    f"{service} PATCH {path} {field}=null: {response.status_code} {response.text}"
                )
                assert field in {e["field"] for e in response.json()["errors"]}, response.text
                checked += 1
    assert checked >= 10  # every PATCH of the suite has fields that must not be emptied


async def test_a_request_type_patched_with_a_null_label_is_refused_and_keeps_its_label(start_service):
    async with start_service("referrals") as client:
        admin = token(client.settings, "admin")
        response = await client.patch("/v1/request-types/food", json={"label": None}, headers=admin)
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == [{"field": "label", "reason": "may be left out (to keep it) but not null"}]
        types = {t["id"]: t["label"] for t in (await client.get("/v1/request-types", headers=admin)).json()}
        assert types["food"] == "Food"
