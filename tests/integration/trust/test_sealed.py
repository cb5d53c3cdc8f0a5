"""Personal data sealed at rest: after intake, amendment, routing and notes, no table of either database holds a
resident's name, phone, email, postcode, date of birth or request details in clear, and advisers still find them.

Every column of every row is read as a stolen copy of the database would be
(bytes undecoded, nothing opened), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from shared.bus import ensure_topics
from tests.integration.trust.test_erasure import databases, eventually, everything_held  # noqa: F401 (fixture)
from tests.support import apps
from tests.support.apps import token

SECRETS = (
    "Margaret",
    "Jones",
    "MARGARET",
    "margaret",
    "jones",  # the name, as given and as normalised
    "01843 577000",
    "1843577000",
    "+441843577999",
    "1843577999",  # the phones, as given and as stored
    "margaret.jones@example.org",
    "12 Northdown Road",
    "Flat 2",
    "CT9 2RN",
    "CT92RN",
    "1941-03-02",
    "Weekly shop, diabetic",
    "Boots on Northdown",
    "Susan Jones",
    "07911 123456",
    "7911123456",
    "use the new number",
    "Rang her twice",
    "Left a message",
    "Polish",
)


def margaret() -> dict:
    return {
        "channel": "phone",
        "resident": {
            "name": "Margaret Jones",
            "date_of_birth": "1941-03-02",
            "phone": "01843 577000",
            "email": "margaret.jones@example.org",
            "language": "Polish",
            "address": {"line1": "12 Northdown Road", "line2": "Flat 2", "town": "Margate", "postcode": "ct9 2rn"},
            "contact_preference": "phone",
            "vulnerabilities": ["shielding", "lives-alone"],
        },
        "referrer": {"name": "Susan Jones", "relationship": "daughter", "phone": "07911 123456"},
        "consent": {"to_share": True},
        "requests": [
            {"type": "food", "details": "Weekly shop, diabetic"},
            {"type": "prescription", "details": "Boots on Northdown"},
        ],
    }


async def give_margaret_a_history(referrals_api, fulfilment_api, *, adviser: dict, hub: dict) -> tuple[dict, list]:
    """Everything that seals something: intake, an amendment with a note, routing to Thanet, a case note,
    a contact attempt and a transition with a note (so history, notes, the feed and both outboxes)."""
    posted = await referrals_api.post("/v1/referrals", headers=adviser, json=margaret())
    assert posted.status_code == 201, posted.text
    referral = posted.json()
    amended = await referrals_api.patch(
        f"/v1/referrals/{referral['id']}",
        headers=adviser,
        json={"resident": {"phone": "01843 577999"}, "note": "use the new number"},
    )
    assert amended.status_code == 200, amended.text

    async def routed():
        items = (await fulfilment_api.get("/v1/hubs/thanet/assignments", headers=hub)).json()["items"]
        return items if len(items) == 2 and all(i["phone"] == "+441843577999" for i in items) else None

    items = await eventually(routed)
    first = items[0]["id"]
    assert (
        await fulfilment_api.post(f"/v1/assignments/{first}/notes", headers=hub, json={"text": "Rang her twice"})
    ).status_code == 201
    assert (
        await fulfilment_api.post(
            f"/v1/assignments/{first}/contact-attempts",
            headers=hub,
            json={"outcome": "voicemail", "note": "Left a message"},
        )
    ).status_code == 201
    moved = await fulfilment_api.post(
        f"/v1/assignments/{first}/transitions", headers=hub, json={"to": "accepted", "note": "Rang her twice"}
    )
    assert moved.status_code == 200, moved.text
    return referral, items


async def test_no_personal_value_is_held_in_clear_in_either_database_and_search_still_finds_the_resident(
    start_service,
    broker,
    unique,
    databases,  # noqa: F811
):
    await ensure_topics(broker.bootstrap_servers, {apps.test_topics(unique).referrals: 1})
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
        admin = token(referrals_api.settings, "admin", subject="admin-1")
        thanet = token(fulfilment_api.settings, "hub", hub="thanet", subject="thanet-1")

        referral, items = await give_margaret_a_history(referrals_api, fulfilment_api, adviser=adviser, hub=thanet)
        assert {i["details"] for i in items} == {"Weekly shop, diabetic", "Boots on Northdown"}  # opened to read
        first = items[0]["id"]
        detail = (await fulfilment_api.get(f"/v1/assignments/{first}", headers=thanet)).json()
        assert detail["resident"]["name"] == "Margaret Jones" and detail["notes"][0]["text"] == "Rang her twice"
        assert detail["contact_attempts"][0]["text"] == "Left a message"
        assert detail["history"][-1]["note"] == "Rang her twice"
        feed = (await fulfilment_api.get("/v1/hubs/thanet/feed", headers=thanet)).json()
        assert feed["items"][0]["event"]["data"]["resident"]["name"] == "Margaret Jones"  # the hub gets it in clear

        rt_r, rt_f = referrals_api.app.state.runtime, fulfilment_api.app.state.runtime
        at_rest = await everything_held(rt_r, open_sealed=False) + await everything_held(rt_f, open_sealed=False)
        assert [s for s in SECRETS if s in at_rest] == [], "personal data held in clear"
        assert "CT9" in at_rest, "the postcode district stays in clear, for routing and reporting"
        opened = await everything_held(rt_r) + await everything_held(rt_f)
        assert all(s in opened for s in ("Margaret Jones", "Weekly shop, diabetic", "Rang her twice")), (
            "the data is there, sealed"
        )

        async def found(**params) -> list[str]:
            response = await referrals_api.get("/v1/referrals", params=params, headers=admin)
            assert response.status_code == 200, response.text
            return [r["id"] for r in response.json()["results"]]

        for params in (
            {"name": "jones"},
            {"name": "JONES, Margaret"},
            {"phone": "01843 577999"},
            {"postcode": "ct92rn"},
            {"name": "margaret", "postcode": "CT9 2RN"},
        ):
            assert await found(**params) == [referral["id"]], params
        assert (await referrals_api.get("/v1/referrals", params={"name": "jones"}, headers=admin)).json()["results"][0][
            "name"
        ] == "Margaret Jones"
        # Whole words only (a blind index matches equal values), and the old phone no longer.
        for params in ({"name": "jon"}, {"phone": "01843 577000"}, {"postcode": "CT9 2RP"}, {"name": "susan"}):
            assert await found(**params) == [], params

        again = await referrals_api.post("/v1/referrals", headers=adviser, json=margaret())
        assert again.json()["possible_duplicate"] is True, "duplicate detection still sees the same person"
