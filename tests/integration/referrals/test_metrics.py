"""An operator on call sees the outbox back up while the broker is away, and drain when it is back."""

import asyncio
import re

from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token

SERVICE = "referrals"


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


async def test_metrics_show_the_outbox_backlog_rising_while_the_broker_is_down_and_draining_after(
    client, settings, broker
):
    headers = token(settings, "call-centre")
    broker.pause()
    try:
        for i in range(5):
            body = referral_body()
            body["resident"]["name"] = f"Resident {i}"
            assert (await client.post("/v1/referrals", json=body, headers=headers)).status_code == 201
        during = (await client.get("/metrics")).text
        assert metric(during, "kt_outbox_backlog") == 15  # 5 referrals, 3 events each
        assert metric(during, "kt_outbox_oldest_age_seconds") >= 0
    finally:
        broker.resume()
    for _ in range(300):
        after = (await client.get("/metrics")).text
        if metric(after, "kt_outbox_backlog") == 0:
            break
        await asyncio.sleep(0.1)
    assert metric(after, "kt_outbox_backlog") == 0
    assert metric(after, "kt_outbox_published_total") >= 15
    assert metric(after, "kt_http_requests_total", '{method="POST",route="/v1/referrals",status="201"}') == 5
