"""Under write load: a read never waits for SQLite's write lock; a lock not had in time is a 503, never a 500."""

import asyncio
import sqlite3

import pytest
from sqlalchemy.engine import make_url

from services.fulfilment.app import create_app
from tests.integration.fulfilment.conftest import deliver, headers, referral_received
from tests.support.apps import running

SERVICE = "fulfilment"


@pytest.fixture
def sqlite_only(database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's database-wide write lock; PostgreSQL locks rows")
    return make_url(database_url).database


class WriteLock:
    """Another writer holding SQLite's write lock (a group commit, the relay, a consumer's batch).

    Taken in a thread: waiting for it must not stop the event loop, whose tasks may hold it a moment.
    """

    def __init__(self, path: str):
        self.path = path

    def _take(self):
        self.connection = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self.connection.execute("BEGIN IMMEDIATE")

    def _release(self):
        self.connection.execute("ROLLBACK")
        self.connection.close()

    async def __aenter__(self):
        await asyncio.to_thread(self._take)
        return self

    async def __aexit__(self, *exc):
        await asyncio.to_thread(self._release)


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
