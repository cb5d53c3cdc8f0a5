"""A referral through the running suite, as a front-end and a hub system see it."""

import asyncio
import os
import signal

import httpx

from shared.events import ReferralReceivedV1
from shared.settings import Topics
from tests.e2e.conftest import wait_until_up
from tests.support.kafka import read_topic


def referral(i: int) -> dict:
    return {
        "channel": "phone",
        "resident": {
            "name": f"Resident {i}",
            "phone": "01843 577000",
            "address": {"line1": "12 Northdown Road", "postcode": "CT9 2RN"},
        },
        "consent": {"to_share": True},
        "requests": [{"type": "food"}],
    }


async def test_a_referral_posted_to_the_running_suite_is_on_the_topic(suite):
    suite.start("referrals")
    url = suite.url(8001)
    headers = {"Authorization": f"Bearer {suite.token('call-centre')}"}
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/v1/referrals", json=referral(1), headers=headers)
        assert response.status_code == 201, response.text
        docs = await http.get("/openapi.json")
    assert "/v1/referrals" in docs.json()["paths"]
    events = await read_topic(suite.bootstrap_servers, Topics().referrals, expect=1)
    assert events[0][1].type == ReferralReceivedV1.type
    assert events[0][1].data["referral_id"] == response.json()["id"]


async def test_kill_9_of_the_service_while_posting_loses_no_accepted_referral(suite):
    suite.start("referrals")
    url = suite.url(8001)
    headers = {"Authorization": f"Bearer {suite.token('call-centre')}"}
    accepted: list[str] = []
    failed = 0

    async def post_steadily(http, count):
        nonlocal failed
        for i in range(count):
            try:
                response = await http.post("/v1/referrals", json=referral(i), headers=headers, timeout=5)
                if response.status_code == 201:
                    accepted.append(response.json()["id"])
                else:
                    failed += 1
            except httpx.HTTPError:
                failed += 1  # the service was down: the front-end would retry
                await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=url) as http:
        load = asyncio.gather(*[post_steadily(http, 60) for _ in range(4)])
        while len(accepted) < 40:
            await asyncio.sleep(0.01)
        os.kill(suite.service_pid("referrals"), signal.SIGKILL)
        await load
        wait_until_up(url)  # the supervisor started it again
        await post_steadily(http, 10)

    assert len(accepted) >= 50 and failed > 0  # the kill really happened mid-load
    events = await read_topic(
        suite.bootstrap_servers,
        Topics().referrals,
        expect=len(accepted),
        timeout=60,
        event_type=ReferralReceivedV1.type,
    )
    published = {e.data["referral_id"] for _, e in events}
    assert set(accepted) <= published  # every 201 has its event


async def test_ctrl_c_stops_the_whole_suite_cleanly(suite):
    suite.start("referrals")
    service = suite.service_pid("referrals")
    suite.stop()  # SIGINT, as Ctrl-C sends
    assert suite.process.returncode == 0
    assert suite.log.read_text().rstrip().endswith("stopped.")
    assert not os.path.exists(f"/proc/{service}")  # the service went with it
