"""Must show (issue 17): one request recurs weekly; fulfilled, it opens next week's occurrence for the same hub.

Through the running suite, as `make run` starts it: the referrals API takes the
referral, fulfilment routes it from Kafka, the hub works its queue over HTTP,
and referrals and reporting follow the status events.
"""

import asyncio
import time
from datetime import datetime, timedelta

import httpx

FOOD_WEEKLY = {
    "type": "food",
    "details": "Weekly shop",
    "urgency": "this-week",
    "recurrence": {"frequency": "weekly", "occurrences": 6},
}


def referral(requests: list[dict], name: str) -> dict:
    return {
        "channel": "phone",
        "resident": {
            "name": name,
            "phone": "01843 577000",
            "address": {"line1": "12 Northdown Road", "postcode": "CT9 2RN"},
        },
        "consent": {"to_share": True},
        "requests": requests,
    }


async def until(check, *, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.3)


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


async def test_a_weekly_request_fulfilled_opens_next_weeks_occurrence_for_the_same_hub(suite):
    suite.start("referrals", "fulfilment", "reporting")
    adviser = {"Authorization": f"Bearer {suite.token('call-centre')}"}
    hub = {"Authorization": f"Bearer {suite.token('hub', hub='thanet')}"}
    analyst = {"Authorization": f"Bearer {suite.token('analyst')}"}
    async with (
        httpx.AsyncClient(base_url=suite.url(8001), timeout=10) as referrals,
        httpx.AsyncClient(base_url=suite.url(8002), timeout=10) as fulfilment,
        httpx.AsyncClient(base_url=suite.url(8004), timeout=10) as reporting,
    ):
        taken = await referrals.post("/v1/referrals", json=referral([FOOD_WEEKLY], "Margaret Jones"), headers=adviser)
        assert taken.status_code == 201, taken.text
        request = taken.json()["requests"][0]
        assert request["recurrence"] == {"frequency": "weekly", "ends_on": None, "occurrences": 6}
        other = await referrals.post(
            "/v1/referrals",
            json=referral([{"type": "prescription"}, {"type": "befriending"}], "Ann Smith"),
            headers=adviser,
        )
        assert other.status_code == 201, other.text

        async def queue(expect_total: int):
            response = await fulfilment.get("/v1/hubs/thanet/queue", headers=hub)
            assert response.status_code == 200, response.text
            page = response.json()
            return page if page["total"] == expect_total else None

        before = await until(lambda: queue(3))
        first = next(i for i in before["items"] if i["type"] == "food")
        assert first["series"]["label"] == "weekly, 1 of 6"

        for to in ("accepted", "in_progress", "fulfilled"):
            moved = await fulfilment.post(f"/v1/assignments/{first['id']}/transitions", json={"to": to}, headers=hub)
            assert moved.status_code == 200, moved.text
        assert moved.json()["next_occurrence"]["occurrence"] == 2

        after = await queue(3)
        assert after is not None and after["count"] == 3  # two one-offs and next week's shop
        second = next(i for i in after["items"] if i["type"] == "food")
        assert (second["hub"], second["status"], second["series"]["label"]) == ("thanet", "routed", "weekly, 2 of 6")
        assert parse(second["fulfil_due_at"]) - parse(first["fulfil_due_at"]) == timedelta(weeks=1)

        async def still_open():
            response = await referrals.get(f"/v1/referrals/{taken.json()['id']}", headers=adviser)
            found = response.json()["requests"][0]
            return found if found["occurrence"] == 2 else None

        followed = await until(still_open)
        assert (followed["status"], followed["progress"], followed["hub"]) == ("open", "routed", "thanet")

        async def series_figure():
            response = await reporting.get("/v1/figures/series", headers=analyst)
            rows = {r["frequency"]: r for r in response.json()["rows"]}
            return rows if rows.get("weekly", {}).get("occurrences") == 2 else None

        rows = await until(series_figure)
        assert rows["weekly"]["series"] == 1
        requests = (await reporting.get("/v1/figures/requests", params={"group_by": "type"}, headers=analyst)).json()
        assert {r["type"]: r["count"] for r in requests["rows"]} == {"food": 2, "prescription": 1, "befriending": 1}
