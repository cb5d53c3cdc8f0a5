"""Fulfilment follows `residents.merged.v1`: one resident's cases together in the hub's list, whatever the order.

Referrals merges two residents recorded twice and says so with ids only; fulfilment
re-points its copies, keeps the merge (so a referral that arrives after it, or a later
merge of the kept resident, still lands on one resident), flags the merged resident's
open requests that repeat the kept one's, and does it once however often it is told.
"""

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from services.fulfilment.models import referrals, resident_merges
from shared.db import Database
from shared.events import ResidentsMergedV1
from tests.integration.fulfilment.conftest import deliver, headers, referral_received

SERVICE = "fulfilment"


def received(resident_id: uuid.UUID, *types: str):
    return referral_received(types=types, urgency="this-week").model_copy(update={"resident_id": resident_id})


def merge(into: uuid.UUID, merged: uuid.UUID, *referral_ids: uuid.UUID) -> ResidentsMergedV1:
    return ResidentsMergedV1(
        resident_id=into, merged_resident_id=merged, referral_ids=list(referral_ids), merged_at=datetime.now(UTC)
    )


async def cases_of(client, settings, resident: uuid.UUID) -> list[dict]:
    response = await client.get(
        "/v1/hubs/thanet/queue",
        params={"resident": str(resident), "sort": "routed"},
        headers=headers(settings, "hub", "thanet"),
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_a_merge_puts_both_residents_cases_in_one_list_and_flags_the_repeated_request(client, settings):
    margaret, maggie, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first = received(margaret, "food", "prescription")
    second = received(maggie, "food", "befriending")
    for referral in (first, second, received(other, "food")):
        await deliver(client.app, referral)
    assert len(await cases_of(client, settings, margaret)) == 2
    assert len(await cases_of(client, settings, maggie)) == 2

    event = await deliver(client.app, merge(margaret, maggie, second.referral_id))
    await deliver(client.app, merge(margaret, maggie, second.referral_id), event=event)  # redelivered: inbox
    await deliver(client.app, merge(margaret, maggie, second.referral_id))  # republished: a new id, same change

    together = await cases_of(client, settings, margaret)
    assert sorted(c["type"] for c in together) == ["befriending", "food", "food", "prescription"]
    assert {c["resident_id"] for c in together} == {str(margaret)}
    assert await cases_of(client, settings, maggie) == together  # the merged id finds the one resident
    food = {c["referral_id"]: c for c in together if c["type"] == "food"}
    kept_food = food[str(first.referral_id)]
    assert kept_food["duplicate_of"] is None
    assert food[str(second.referral_id)]["duplicate_of"] == kept_food["request_id"]
    assert [c["duplicate_of"] for c in together if c["type"] != "food"] == [None, None]
    assert len(await cases_of(client, settings, other)) == 1  # another resident untouched

    db = Database(settings.database_url)
    try:
        async with db.sessions() as session:
            merges = (await session.execute(select(resident_merges.c.merged_id, resident_merges.c.into_id))).all()
    finally:
        await db.dispose()
    assert merges == [(str(maggie), str(margaret))]


async def test_a_referral_arriving_after_its_merge_and_a_later_merge_of_the_kept_resident_still_land_on_one(
    client, settings
):
    margaret, maggie, peggy = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await deliver(client.app, received(margaret, "food"))
    late = received(maggie, "prescription")
    # On the topic the merge (keyed by resident) may overtake the referral (keyed by referral).
    await deliver(client.app, merge(margaret, maggie, late.referral_id))
    await deliver(client.app, late)
    assert sorted(c["type"] for c in await cases_of(client, settings, margaret)) == ["food", "prescription"]

    await deliver(client.app, received(peggy, "befriending"))
    await deliver(client.app, merge(peggy, margaret))  # Margaret (with Maggie in her) was Peggy all along
    everyone = await cases_of(client, settings, maggie)
    assert sorted(c["type"] for c in everyone) == ["befriending", "food", "prescription"]
    assert {c["resident_id"] for c in everyone} == {str(peggy)}

    db = Database(settings.database_url)
    try:
        async with db.sessions() as session:
            named = set((await session.scalars(select(referrals.c.resident_id))).all())
            merges = set((await session.execute(select(resident_merges.c.merged_id, resident_merges.c.into_id))).all())
    finally:
        await db.dispose()
    assert named == {str(peggy)}
    assert merges == {(str(maggie), str(peggy)), (str(margaret), str(peggy))}  # flat: one step from any id
