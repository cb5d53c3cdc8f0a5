"""Under write load: a read never waits for SQLite's write lock; a lock not had in time is a 503, never a 500."""

import pytest

from services.fulfilment.app import create_app
from tests.integration.fulfilment.conftest import deliver, headers, referral_received
from tests.support.apps import running
from tests.support.databases import WriteLock

SERVICE = "fulfilment"


async def test_a_hub_reads_its_list_while_another_transaction_holds_the_write_lock(client, settings, sqlite_only):
    async with WriteLock(sqlite_only):
        response = await client.get("/v1/hubs/ashford/assignments", headers=headers(settings, "hub", "ashford"))
        hubs = await client.get("/v1/hubs", headers=headers(settings, "hub", "ashford"))
    assert response.status_code == 200, response.text
    assert (response.json()["items"], hubs.status_code) == ([], 200)


@pytest.fixture
async def impatient_client(settings, directory, sqlite_only):
    """The service waiting only 0.2 s for the write lock (REFERRALS_DATABASE_BUSY_TIMEOUT_SECONDS and so on)."""
    app = create_app(
        settings.model_copy(update={"run_consumers": False, "database_busy_timeout_seconds": 0.2}), directory=directory
    )
    async with running(app) as http:
        http.app = app
        yield http


async def test_a_lock_not_had_in_time_is_answered_503_with_retry_after_and_the_request_can_go_again(
    impatient_client,
    settings,
    sqlite_only,
):
    client = impatient_client
    await deliver(client.app, referral_received())
    hub = headers(settings, "hub", "thanet")
    [assignment] = [
        a for a in (await client.get("/v1/hubs/thanet/assignments", headers=hub)).json()["items"] if a["type"] == "food"
    ]
    transition = f"/v1/assignments/{assignment['id']}/transitions"
    async with WriteLock(sqlite_only):
        refused = await client.post(transition, json={"to": "accepted"}, headers=hub)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["type"].endswith("/busy") and "nothing was changed" in refused.json()["detail"]
    again = await client.post(transition, json={"to": "accepted"}, headers=hub)
    assert (again.status_code, again.json()["status"]) == (200, "accepted")
