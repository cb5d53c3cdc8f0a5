"""Fulfilment's figures on /metrics: assignments by status and hub, and SLA breaches."""

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.fulfilment.conftest import (
    MEDWAY_POSTCODE,
    deliver,
    eventually,
    headers,
    referral_received,
)
from tests.integration.fulfilment.test_sla import FAST_SLA

SERVICE = "fulfilment"


async def samples(client, name: str) -> dict[tuple, float]:
    text = (await client.get("/metrics")).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_metrics_count_assignments_by_status_and_hub(client, settings):
    await deliver(client.app, referral_received(types=("food", "prescription")))
    await deliver(client.app, referral_received(types=("food",), postcode=MEDWAY_POSTCODE))

    counts = await samples(client, "kt_assignments")

    assert counts[(("hub", "thanet"), ("status", "routed"))] == 2
    assert counts[(("hub", "none"), ("status", "out_of_area"))] == 1


async def test_metrics_count_sla_breaches_by_deadline_and_hub(client, settings):
    await client.patch("/v1/hubs/thanet", json=FAST_SLA, headers=headers(settings, "admin"))
    assert await samples(client, "kt_sla_breaches_total") == {}
    await deliver(client.app, referral_received(types=("food",), urgency="today"))

    async def accept_deadline_missed():
        breaches = await samples(client, "kt_sla_breaches_total")
        return breaches.get((("deadline", "accept"), ("hub", "thanet")))

    assert await eventually(accept_deadline_missed, timeout=15) == 1
