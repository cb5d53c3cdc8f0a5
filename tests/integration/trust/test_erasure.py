"""Erasure across services: referrals erases, tells fulfilment over the real broker, and the person is gone.

Afterwards the erased resident's name, phone, address and date of birth appear in
no column of any table of either database (text, JSON and bytes alike), another
resident is untouched, and every count (referrals, requests by type and status,
assignments by hub and status) is what it was.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from sqlalchemy import select

from shared.bus import ensure_topics
from shared.crypto import is_sealed
from tests.support.apps import token
from tests.support.waiting import eventually

ERASED_PERSON = (
    "Margaret",
    "Jones",
    "577000",
    "577999",
    "Northdown",
    "1941-03-02",
    "margaret@example.org",
    "7911123456",
    "Her daughter",
)
OTHER_PERSON = "Peter Smith"


def referral(
    name: str, phone: str, line1: str, *, email: str | None = None, dob: str | None = None, referrer: dict | None = None
) -> dict:
    resident = {
        "name": name,
        "phone": phone,
        "address": {"line1": line1, "town": "Margate", "postcode": "CT9 2RN"},
        "contact_preference": "phone",
        "vulnerabilities": ["shielding"],
    }
    if email:
        resident["email"] = email
    if dob:
        resident["date_of_birth"] = dob
    body = {
        "channel": "phone",
        "resident": resident,
        "consent": {"to_share": True},
        "requests": [
            {"type": "food", "details": f"Weekly shop for {name}"},
            {"type": "prescription", "details": f"Boots, near {line1}"},
        ],
    }
    if referrer:
        body["referrer"] = referrer
    return body


async def everything_held(runtime, *, open_sealed: bool = True) -> str:
    """Every value of every row of every table of a service's database, as one searchable text.

    Sealed values are opened with the service's keys (erasure must empty them, not
    only hide them); `open_sealed=False` gives the bytes as a stolen copy would.
    """
    parts = []
    async with runtime.db.sessions() as session:
        for table in runtime.tables.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                for value in row:
                    if isinstance(value, bytes) and open_sealed and is_sealed(value):
                        parts.append(runtime.keyring.open(value).decode())
                    elif isinstance(value, bytes):
                        parts.append(value.decode("utf-8", "replace"))
                    elif isinstance(value, (dict, list)):
                        parts.append(orjson.dumps(value).decode())
                    elif value is not None:
                        parts.append(str(value))
    return "\n".join(parts)


async def counts(referrals_runtime, fulfilment_runtime) -> dict:
    from services.fulfilment.models import assignments
    from services.referrals.models import referrals, requests

    async with referrals_runtime.db.sessions() as session:
        referral_statuses = Counter((await session.execute(select(referrals.c.status, referrals.c.channel))).all())
        request_kinds = Counter(
            (await session.execute(select(requests.c.type, requests.c.status, requests.c.urgency))).all()
        )
    async with fulfilment_runtime.db.sessions() as session:
        assignment_kinds = Counter(
            (
                await session.execute(
                    select(
                        assignments.c.request_type, assignments.c.hub, assignments.c.status, assignments.c.district_code
                    )
                )
            ).all()
        )
    return {"referrals": referral_statuses, "requests": request_kinds, "assignments": assignment_kinds}


@pytest.fixture(params=["sqlite", "postgres"])
def databases(request, sqlite_databases, postgres_templates) -> dict[str, str]:
    if request.param == "sqlite":
        return sqlite_databases
    return {name: postgres_templates.fresh_database(name) for name in ("referrals", "fulfilment")}


async def test_an_erased_resident_appears_nowhere_in_referrals_or_fulfilment_and_the_counts_are_unchanged(
    start_service,
    broker,
    unique,
    databases,
):
    from tests.support.apps import test_topics

    await ensure_topics(broker.bootstrap_servers, {test_topics(unique).referrals: 1})
    async with (
        start_service(
            "referrals", database_url=databases["referrals"], run_relay=True, outbox_poll_seconds=0.1
        ) as referrals_api,
        start_service(
            "fulfilment",
            database_url=databases["fulfilment"],
            run_consumers=True,
            run_relay=True,
            consumer_group=f"fulfilment-{unique}",
            outbox_poll_seconds=0.1,
        ) as fulfilment_api,
    ):
        adviser = token(referrals_api.settings, "call-centre", subject="adviser-1")
        admin_r = token(referrals_api.settings, "admin", subject="admin-1")
        admin_f = token(fulfilment_api.settings, "admin", subject="admin-1")
        thanet = token(fulfilment_api.settings, "hub", hub="thanet", subject="thanet-1")

        posted = await referrals_api.post(
            "/v1/referrals",
            headers=adviser,
            json=referral(
                "Margaret Jones",
                "01843 577000",
                "12 Northdown Road",
                email="margaret@example.org",
                dob="1941-03-02",
                referrer={"name": "Her daughter Susan", "relationship": "daughter", "phone": "07911 123456"},
            ),
        )
        assert posted.status_code == 201, posted.text
        margaret = posted.json()
        peter = (
            await referrals_api.post(
                "/v1/referrals", headers=adviser, json=referral(OTHER_PERSON, "01843 588000", "3 Harbour Street")
            )
        ).json()
        amended = await referrals_api.patch(
            f"/v1/referrals/{margaret['id']}",
            headers=adviser,
            json={"resident": {"phone": "01843 577999"}, "note": "Margaret Jones asked us to use this number"},
        )
        assert amended.status_code == 200, amended.text

        async def routed():
            items = (await fulfilment_api.get("/v1/hubs/thanet/assignments", headers=thanet)).json()["items"]
            mine = [i for i in items if i["referral_id"] == margaret["id"]]
            return mine if len(items) == 4 else None

        margarets = await routed_items(routed)
        note = await fulfilment_api.post(
            f"/v1/assignments/{margarets[0]['id']}/notes",
            headers=thanet,
            json={"text": "Rang Margaret Jones on 01843 577999, no answer"},
        )
        assert note.status_code == 201, note.text
        await eventually(
            lambda: feed_has(fulfilment_api, thanet, "577999"), timeout=30
        )  # the amendment reached the hub

        rt_r, rt_f = referrals_api.app.state.runtime, fulfilment_api.app.state.runtime
        held_before = await everything_held(rt_r) + await everything_held(rt_f)
        assert all(s in held_before for s in ERASED_PERSON), "the test data really was there"
        at_rest = await everything_held(rt_r, open_sealed=False) + await everything_held(rt_f, open_sealed=False)
        assert [s for s in ERASED_PERSON if s in at_rest] == [], "sealed at rest (tests/integration/trust/test_sealed)"
        before = await counts(rt_r, rt_f)

        erased = await referrals_api.post(f"/v1/referrals/{margaret['id']}/erasure", headers=admin_r)
        assert erased.status_code == 200, erased.text
        body = erased.json()
        assert body["reference"] == margaret["reference"]
        assert body["resident"]["name"] == "[erased]" and body["resident"]["phone"] is None
        assert body["resident"]["address"]["postcode"] == "CT9"
        assert [r["type"] for r in body["requests"]] == ["food", "prescription"]

        async def fulfilment_erased():
            answer = (await fulfilment_api.get(f"/v1/assignments/{margarets[0]['id']}", headers=admin_f)).json()
            return answer["resident"]["name"] == "[erased]" and answer

        after_f = await eventually(fulfilment_erased, timeout=30)
        assert after_f["status"] == "routed" and after_f["type"] in ("food", "prescription")

        # The hub is told to erase its own copy, on its feed (as on its topic and webhook), after the events it had.
        feed = (await fulfilment_api.get("/v1/hubs/thanet/feed", headers=thanet, params={"limit": 1000})).json()
        erasures = [i["event"] for i in feed["items"] if i["event"]["type"].endswith("assignment.erased.v1")]
        assert sorted(e["data"]["assignment_id"] for e in erasures) == sorted(m["id"] for m in margarets)
        assert feed["items"][-len(erasures) :] == [i for i in feed["items"] if i["event"] in erasures]

        held_after = await everything_held(rt_r) + await everything_held(rt_f)
        still_there = [s for s in ERASED_PERSON if s in held_after]
        assert still_there == [], f"still held after erasure: {still_there}"
        assert OTHER_PERSON in held_after, "another resident was erased too"
        assert await counts(rt_r, rt_f) == before

        # Erasing again is harmless; amending an erased referral is refused.
        again = await referrals_api.post(f"/v1/referrals/{margaret['id']}/erasure", headers=admin_r)
        assert again.status_code == 200 and again.json()["version"] == body["version"]
        refused = await referrals_api.patch(
            f"/v1/referrals/{margaret['id']}", headers=adviser, json={"resident": {"name": "Margaret Jones"}}
        )
        assert refused.status_code == 409
        assert peter["id"] != margaret["id"]


async def routed_items(check):
    return await eventually(check, timeout=30)


async def feed_has(client, headers, text: str) -> bool:
    return text in (await client.get("/v1/hubs/thanet/feed", headers=headers)).text
