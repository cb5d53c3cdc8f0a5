"""Fulfilment's side of an erasure, through its own consumer code: erased, and the event recorded as handled."""

from datetime import UTC, datetime

from sqlalchemy import select

from shared.events import ResidentErasedV1
from tests.integration.fulfilment.conftest import deliver, headers, hub_assignments, referral_received

SERVICE = "fulfilment"


async def test_an_erasure_commits_with_its_inbox_row_in_the_consumers_transaction(client, settings):
    """The handler works in the consumer's transaction: the erasure and its inbox row commit together.

    It used to open that unit of work a second time, putting a new session in place of
    the consumer's: the inbox row was never committed (the erasure would run again on
    redelivery) and the first session's connection, its write transaction open, was
    never returned (on SQLite, holding the write lock until the garbage collector came).
    """
    referral = referral_received(types=("food",))
    received = await deliver(client.app, referral)
    [item] = await hub_assignments(client, settings, "thanet", expect=1)
    erased = await deliver(
        client.app, ResidentErasedV1(referral_id=referral.referral_id, erased_at=datetime.now(UTC), reason="request")
    )

    runtime = client.app.state.runtime
    async with runtime.db.sessions() as session:
        handled = set((await session.scalars(select(runtime.tables.inbox.c.event_id))).all())
    assert {str(received.id), str(erased.id)} <= handled
    answer = (await client.get(f"/v1/assignments/{item['id']}", headers=headers(settings, "admin"))).json()
    assert answer["resident"]["name"] == "[erased]"
