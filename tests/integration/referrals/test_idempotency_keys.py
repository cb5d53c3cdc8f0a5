"""The intake and every other POST of referrals read `Idempotency-Key` alike: the IETF draft's sf-string, or a bare token."""

from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token

SERVICE = "referrals"


async def test_a_quoted_key_is_the_same_key_as_its_bare_form(client, settings):
    caller = token(settings, "online-form", subject="online-form")
    first = await client.post("/v1/referrals", json=referral_body(), headers={**caller, "Idempotency-Key": "form-9"})
    again = await client.post("/v1/referrals", json=referral_body(), headers={**caller, "Idempotency-Key": '"form-9"'})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"


async def test_a_key_that_is_not_a_structured_string_or_a_token_is_a_422_naming_the_header(client, settings):
    caller = token(settings, "online-form", subject="online-form")
    response = await client.post("/v1/referrals", json=referral_body(), headers={**caller, "Idempotency-Key": "a b"})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "Idempotency-Key",
            "in": "header",
            "reason": ('a quoted string ("…") or a token of printable ASCII without spaces'),
        }
    ]


async def test_a_new_request_type_retried_with_its_key_is_created_once(client, settings):
    admin = {**token(settings, "admin", subject="admin"), "Idempotency-Key": '"type-hot-meals"'}
    body = {"id": "hot-meals", "label": "Hot meals delivered"}
    first = await client.post("/v1/request-types", json=body, headers=admin)
    retry = await client.post("/v1/request-types", json=body, headers=admin)
    assert first.status_code == 201, first.text
    # Without the key the retry is a 409: the type exists.
    assert retry.status_code == 201 and retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
