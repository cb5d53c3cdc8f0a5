"""Finishing a rotation across both services that seal (`kent-together rekey`): after it, every sealed value in
every table of either database carries the new key, and a keyring holding only the new keys reads everything,
finds residents and spots duplicates.

The check is generic: every column of every table is read and each value with a
`kt1:` header is counted by the key that sealed it, so a sealed column rekey does not
re-seal (one added later, say) fails this test. SQLite and PostgreSQL, through the
real apps, with the broker between them.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select

from services.referrals.service import REKEY_INDEXES
from shared import rekey as r
from shared.bus import ensure_topics
from shared.crypto import is_sealed, new_key
from tests.integration.trust.test_erasure import databases, eventually, everything_held  # noqa: F401 (fixture)
from tests.integration.trust.test_sealed import give_margaret_a_history, margaret
from tests.support import apps
from tests.support.apps import token

K1, K2, INDEX_1, INDEX_2 = new_key(), new_key(), new_key(), new_key()

EXPECTED_SEALED = {
    "referrals": {"referrals.personal", "requests.sealed_details", "referral_changes.sealed_note", "outbox.payload"},
    "fulfilment": {
        "referrals.personal",
        "assignments.sealed_details",
        "assignment_changes.sealed_note",
        "case_notes.sealed_text",
        "hub_feed.event",
        "outbox.payload",
    },
}
"""What the test's story seals, at least: each must be found by the scan below (it does not use this list)."""


async def sealed_values(runtime) -> dict[str, set[str]]:
    """`table.column` -> the ids of the keys its sealed values carry, for every column of every table."""
    found = defaultdict(set)
    async with runtime.db.sessions() as session:
        for table in runtime.tables.metadata.sorted_tables:
            for row in (await session.execute(select(table))).mappings():
                for column, value in row.items():
                    if is_sealed(value):
                        found[f"{table.name}.{column}"].add(runtime.keyring.key_id_of(value))
    return dict(found)


def keys(data_keys: str, index: str, previous: str = "") -> dict:
    return {"data_keys": data_keys, "blind_index_key": index, "blind_index_key_previous": previous}


async def test_after_rekey_every_sealed_value_carries_the_new_key_and_the_new_keys_alone_read_everything(
    start_service,
    broker,
    unique,
    databases,  # noqa: F811
):
    await ensure_topics(broker.bootstrap_servers, {apps.test_topics(unique).referrals: 1})

    def both(**keyring):
        return (
            start_service(
                "referrals", database_url=databases["referrals"], run_relay=True, outbox_poll_seconds=0.1, **keyring
            ),
            start_service(
                "fulfilment",
                database_url=databases["fulfilment"],
                run_consumers=True,
                run_relay=True,
                consumer_group=f"fulfilment-{unique}",
                outbox_poll_seconds=0.1,
                **keyring,
            ),
        )

    # Everything sealed with k1: intake, an amendment with a note, routing, hub notes and history, the feed.
    referrals_ctx, fulfilment_ctx = both(**keys(f"k1:{K1}", INDEX_1))
    async with referrals_ctx as referrals_api, fulfilment_ctx as fulfilment_api:
        adviser = token(referrals_api.settings, "call-centre", subject="adviser-1")
        thanet = token(fulfilment_api.settings, "hub", hub="thanet", subject="thanet-1")
        referral, items = await give_margaret_a_history(referrals_api, fulfilment_api, adviser=adviser, hub=thanet)
        first = items[0]["id"]
        for name, api in (("referrals", referrals_api), ("fulfilment", fulfilment_api)):
            found = await sealed_values(api.app.state.runtime)
            assert set(found) >= EXPECTED_SEALED[name], (name, sorted(found))
            assert set().union(*found.values()) == {"k1"}, (name, found)

    # A new data key first, a new index key with the old as previous; rekey while both services run.
    referrals_ctx, fulfilment_ctx = both(**keys(f"k2:{K2},k1:{K1}", INDEX_2, previous=INDEX_1))
    async with referrals_ctx as referrals_api, fulfilment_ctx as fulfilment_api:
        admin = token(referrals_api.settings, "admin", subject="admin-1")

        async def search(**params) -> list[str]:
            response = await referrals_api.get("/v1/referrals", params=params, headers=admin)
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()["results"]]

        for params in ({"name": "jones"}, {"phone": "01843 577999"}, {"postcode": "CT9 2RN"}):
            assert await search(**params) == [referral["id"]], params  # with the previous index key
        for name, api in (("referrals", referrals_api), ("fulfilment", fulfilment_api)):
            runtime = api.app.state.runtime
            derived = REKEY_INDEXES if name == "referrals" else ()
            reports = {
                x.table: x
                for x in await r.rekey(runtime.db, runtime.tables.metadata, runtime.keyring, derived=derived, batch=2)
            }
            found = await sealed_values(runtime)
            left_behind = {column: ids for column, ids in found.items() if ids != {"k2"}}
            assert left_behind == {}, f"{name}: sealed values rekey did not seal again with k2"
            for column in EXPECTED_SEALED[name]:
                assert reports[column.split(".")[0]].resealed > 0, (name, column, reports)
            assert all(x.left == 0 and x.unreadable == 0 for x in reports.values()), reports
            assert (await r.census(runtime.db, runtime.tables.metadata, runtime.keyring, derived=derived)).finished
        for params in ({"name": "jones"}, {"phone": "01843 577999"}, {"postcode": "CT9 2RN"}):
            assert await search(**params) == [referral["id"]], params

    # The old keys gone: everything reads, search and duplicate detection work, the flow goes on.
    referrals_ctx, fulfilment_ctx = both(**keys(f"k2:{K2}", INDEX_2))
    async with referrals_ctx as referrals_api, fulfilment_ctx as fulfilment_api:
        adviser = token(referrals_api.settings, "call-centre", subject="adviser-1")
        admin = token(referrals_api.settings, "admin", subject="admin-1")
        thanet = token(fulfilment_api.settings, "hub", hub="thanet", subject="thanet-1")
        read = (await referrals_api.get(f"/v1/referrals/{referral['id']}", headers=adviser)).json()
        assert read["resident"]["name"] == "Margaret Jones" and read["resident"]["phone"] == "+441843577999"
        assert {q["details"] for q in read["requests"]} == {"Weekly shop, diabetic", "Boots on Northdown"}
        for params in ({"name": "margaret jones"}, {"phone": "01843 577999"}, {"postcode": "ct92rn"}):
            response = await referrals_api.get("/v1/referrals", params=params, headers=admin)
            assert [item["id"] for item in response.json()["results"]] == [referral["id"]], params
        detail = (await fulfilment_api.get(f"/v1/assignments/{first}", headers=thanet)).json()
        assert detail["resident"]["name"] == "Margaret Jones" and detail["notes"][0]["text"] == "Rang her twice"
        assert detail["contact_attempts"][0]["text"] == "Left a message"
        assert detail["history"][-1]["note"] == "Rang her twice"
        feed = (await fulfilment_api.get("/v1/hubs/thanet/feed", headers=thanet)).json()
        assert feed["items"][0]["event"]["data"]["resident"]["name"] == "Margaret Jones"
        for api in (referrals_api, fulfilment_api):  # every sealed value of every table opens with k2 alone
            assert "Margaret Jones" in await everything_held(api.app.state.runtime)

        again = await referrals_api.post("/v1/referrals", headers=adviser, json=margaret())
        assert again.json()["possible_duplicate"] is True, "duplicate detection still sees the same person"

        async def routed_again():
            items = (await fulfilment_api.get("/v1/hubs/thanet/assignments", headers=thanet)).json()["items"]
            return items if len(items) == 4 else None

        await eventually(routed_again)
