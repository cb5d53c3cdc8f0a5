"""Webhooks: a hub's own server receives each entry of its feed, signed, retried until it answers, logged."""

import asyncio
import contextlib

import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from services.fulfilment.webhooks import verify
from shared.bus import free_port
from shared.events import AssignmentRoutedV1, CloudEvent
from tests.integration.fulfilment.conftest import deliver, eventually, headers, referral_received

SERVICE = "fulfilment"
SECRET = "thanet-webhook-secret-0123456789"


class HubServer:
    """A hub's real HTTP endpoint on a local port; answers with the statuses given, then 204."""

    def __init__(self, *, fail_first: int = 0, status: int = 503):
        self.fail_first = fail_first
        self.status = status
        self.received: list[tuple[dict, bytes]] = []
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/kent-together"

    async def receive(self, request):
        self.received.append((dict(request.headers), await request.body()))
        if len(self.received) <= self.fail_first:
            return Response(status_code=self.status)
        return Response(status_code=204)

    @contextlib.asynccontextmanager
    async def running(self):
        app = Starlette(routes=[Route("/kent-together", self.receive, methods=["POST"])])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            yield self
        finally:
            server.should_exit = True
            await task


async def use_webhook(client, settings, url):
    response = await client.patch(
        "/v1/hubs/thanet", json={"webhook_url": url, "webhook_secret": SECRET}, headers=headers(settings, "admin")
    )
    assert response.status_code == 200, response.text
    assert response.json()["has_webhook_secret"] is True


async def delivery_log(client, settings) -> list[dict]:
    response = await client.get("/v1/hubs/thanet/webhook-deliveries", headers=headers(settings, "hub", "thanet"))
    assert response.status_code == 200
    return response.json()


async def test_each_feed_entry_is_posted_to_the_hubs_webhook_signed_with_its_secret(client, settings):
    async with HubServer().running() as hub:
        await use_webhook(client, settings, hub.url)
        await deliver(client.app, referral_received(types=("food", "prescription")))

        async def two_received():
            return len(hub.received) >= 2

        await eventually(two_received)

    for request_headers, body in hub.received:
        assert verify(
            SECRET,
            timestamp=request_headers["x-kent-together-timestamp"],
            body=body,
            signature=request_headers["x-kent-together-signature"],
        )
        assert not verify(
            "another-secret-of-some-length",
            timestamp=request_headers["x-kent-together-timestamp"],
            body=body,
            signature=request_headers["x-kent-together-signature"],
        )
        event = CloudEvent.from_bytes(body)
        assert event.type == AssignmentRoutedV1.type and event.data["resident"]["name"] == "Margaret Jones"
    assert sorted(h["x-kent-together-feed-seq"] for h, _ in hub.received) == ["1", "2"]
    feed = (await client.get("/v1/hubs/thanet/feed", headers=headers(settings, "hub", "thanet"))).json()
    assert {CloudEvent.from_bytes(b).id for _, b in hub.received} == {
        CloudEvent(**i["event"]).id for i in feed["items"]
    }
    log = await delivery_log(client, settings)
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log] == [("delivered", 1, 204)] * 2


async def test_a_failing_webhook_is_retried_with_back_off_until_the_hub_answers(client, settings):
    async with HubServer(fail_first=2).running() as hub:
        await use_webhook(client, settings, hub.url)
        await deliver(client.app, referral_received(types=("food",)))

        async def delivered():
            log = await delivery_log(client, settings)
            return log if log and log[0]["status"] == "delivered" else None

        [entry] = await eventually(delivered)

    assert entry["attempts"] == 3 and entry["last_status_code"] == 204 and entry["last_error"] is None
    assert len(hub.received) == 3
    ids = {h["x-kent-together-delivery"] for h, _ in hub.received}
    assert len(ids) == 1  # the same delivery each time, so the hub can tell a retry


async def test_a_webhook_that_keeps_failing_is_given_up_after_the_limit_and_logged(client, settings):
    client.app.state.webhooks.max_attempts = 3
    async with HubServer(fail_first=100, status=500).running() as hub:
        await use_webhook(client, settings, hub.url)
        await deliver(client.app, referral_received(types=("food",)))

        async def failed():
            log = await delivery_log(client, settings)
            return log if log and log[0]["status"] == "failed" else None

        [entry] = await eventually(failed)
        await asyncio.sleep(0.3)

    assert entry["attempts"] == 3 and entry["last_error"] == "HTTP 500"
    assert len(hub.received) == 3  # and no more
    # The entry is still in the feed: a hub that missed it can pull it.
    feed = (await client.get("/v1/hubs/thanet/feed", headers=headers(settings, "hub", "thanet"))).json()
    assert len(feed["items"]) == 1
