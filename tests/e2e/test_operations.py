"""Operating the running suite: what /metrics shows through a broker outage, and a graceful stop."""

import asyncio
import os
import signal
import subprocess

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.events import ReferralReceivedV1
from shared.settings import Topics
from tests.e2e.conftest import wait_until_up
from tests.e2e.test_referral_journey import referral
from tests.support.kafka import read_topic
from tests.support.waiting import eventually


def broker_pid(suite) -> int:
    """The embedded broker `kent-together run` started (a child of the supervisor)."""
    out = subprocess.run(
        ["pgrep", "-P", str(suite.process.pid), "-f", "listener-url"], capture_output=True, text=True
    ).stdout.split()
    return int(out[0])


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    return next(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


async def test_metrics_show_the_outbox_backlog_rising_while_the_broker_is_away_and_draining_when_it_is_back(suite):
    suite.start("referrals")
    headers = {"Authorization": f"Bearer {suite.token('call-centre')}"}
    broker = broker_pid(suite)
    async with httpx.AsyncClient(base_url=suite.url(8001), timeout=10) as http:
        assert await metric(http, "kt_outbox_backlog") == 0
        os.kill(broker, signal.SIGSTOP)
        try:
            taken = []
            for i in range(5):
                response = await http.post("/v1/referrals", json=referral(i), headers=headers)
                assert response.status_code == 201, response.text  # intake never waits on Kafka
                taken.append(response.json()["id"])
            backlog_while_away = await metric(http, "kt_outbox_backlog")
            oldest_while_away = await metric(http, "kt_outbox_oldest_age_seconds")
        finally:
            os.kill(broker, signal.SIGCONT)

        async def drained():
            return await metric(http, "kt_outbox_backlog") == 0

        assert await eventually(drained, timeout=60, interval=0.2)
        published = await metric(http, "kt_outbox_published_total")

    assert backlog_while_away >= 5 and oldest_while_away > 0
    assert published >= 5
    events = await read_topic(suite.bootstrap_servers, Topics().referrals, expect=5, event_type=ReferralReceivedV1.type)
    assert set(taken) <= {e.data["referral_id"] for _, e in events}


async def test_sigterm_mid_load_finishes_requests_in_flight_and_every_accepted_referral_is_published(suite):
    suite.start("referrals")
    url = suite.url(8001)
    headers = {"Authorization": f"Bearer {suite.token('call-centre')}"}
    accepted: list[str] = []
    refused = 0

    async def post_steadily(http, count):
        nonlocal refused
        for i in range(count):
            try:
                response = await http.post("/v1/referrals", json=referral(i), headers=headers, timeout=10)
                assert response.status_code == 201, response.text  # never a 5xx from a stopping service
                accepted.append(response.json()["id"])
            except httpx.TransportError:
                refused += 1  # the port was closed: a front-end retries
                await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=url) as http:
        load = asyncio.gather(*[post_steadily(http, 40) for _ in range(4)])
        while len(accepted) < 30:
            await asyncio.sleep(0.01)
        os.kill(suite.service_pid("referrals"), signal.SIGTERM)
        await load
        wait_until_up(url)  # the supervisor started it again

    # uvicorn stops gracefully, then exits by the signal it caught (-15), never killed (-9).
    assert "referrals exited with -15" in suite.log.read_text()
    events = await read_topic(
        suite.bootstrap_servers,
        Topics().referrals,
        expect=len(accepted),
        timeout=60,
        event_type=ReferralReceivedV1.type,
    )
    assert set(accepted) <= {e.data["referral_id"] for _, e in events}
