"""A hub's IT supplier verifies deliveries with the Standard Webhooks library, not with code of ours."""

import base64
import secrets

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.fulfilment.webhooks import verify
from shared.events import AssignmentRoutedV1
from tests.integration.fulfilment.conftest import deliver, eventually, headers, referral_received
from tests.integration.fulfilment.test_webhooks import HubServer

SERVICE = "fulfilment"
STANDARD_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
PLAIN_SECRET = "thanet-webhook-secret-0123456789"


async def received_with(client, settings, secret: str) -> list[tuple[dict, bytes]]:
    async with HubServer().running() as hub:
        response = await client.patch(
            "/v1/hubs/thanet",
            json={"webhook_url": hub.url, "webhook_secret": secret},
            headers=headers(settings, "admin"),
        )
        assert response.status_code == 200, response.text
        await deliver(client.app, referral_received(types=("food", "prescription")))

        async def two():
            return len(hub.received) >= 2

        await eventually(two)
    return hub.received


async def test_a_delivery_signed_with_a_whsec_secret_verifies_with_the_standard_webhooks_library(client, settings):
    received = await received_with(client, settings, STANDARD_SECRET)
    for request_headers, body in received:
        event = Webhook(STANDARD_SECRET).verify(body, request_headers)
        assert event["type"] == AssignmentRoutedV1.type
        assert request_headers["webhook-id"] == request_headers["x-kent-together-delivery"]
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + base64.b64encode(b"another key of 24 bytes!").decode()).verify(body, request_headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(STANDARD_SECRET).verify(body.replace(b"Margaret", b"Margaery"), request_headers)


async def test_a_plain_secret_verifies_as_whsec_of_its_base64_and_the_old_signature_is_still_sent(client, settings):
    received = await received_with(client, settings, PLAIN_SECRET)
    as_standard = "whsec_" + base64.b64encode(PLAIN_SECRET.encode()).decode()
    for request_headers, body in received:
        Webhook(as_standard).verify(body, request_headers)
        # For one release, receivers written against the old header still verify.
        assert verify(
            PLAIN_SECRET,
            timestamp=request_headers["x-kent-together-timestamp"],
            body=body,
            signature=request_headers["x-kent-together-signature"],
        )
