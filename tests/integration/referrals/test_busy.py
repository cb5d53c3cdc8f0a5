"""Intake reads what is stored before it takes SQLite's write lock: a retry is answered while another writer holds it."""

from services.referrals.app import create_app
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import running, token
from tests.support.databases import WriteLock

SERVICE = "referrals"


async def test_a_retried_post_is_answered_from_what_is_stored_while_another_writer_holds_the_lock(
    settings, sqlite_only
):
    # Waiting only 0.2 s for the lock: had intake read inside it, the retry would be a 503.
    app = create_app(settings.model_copy(update={"database_busy_timeout_seconds": 0.2}))
    headers = {**token(settings, "online-form", subject="online-form"), "Idempotency-Key": "form-busy-1"}
    async with running(app) as client:
        first = await client.post("/v1/referrals", json=referral_body(), headers=headers)
        async with WriteLock(sqlite_only):
            again = await client.post("/v1/referrals", json=referral_body(), headers=headers)
            new = await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))
    assert first.status_code == 201, first.text
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (201, "true"), again.text
    assert again.json()["id"] == first.json()["id"]
    # A new referral must write: it waits its turn, and is told so in time, nothing taken.
    assert new.status_code == 503 and new.headers["retry-after"] == "1", new.text
