"""The fault suite, short, on Apache Kafka: three KRaft brokers failing under load, two instances per consumer group."""

import pytest

from tests.support.chaos import chaos, failures


@pytest.mark.timeout(900)  # three brokers restarted one by one, then the suite must settle
async def test_on_a_three_broker_cluster_leader_kills_a_lost_quorum_and_a_rolling_restart_lose_and_duplicate_nothing():
    result = await chaos(seconds=40, rate=5, settle_seconds=150, broker_kind="kafka")
    assert failures(result) == []
    assert result["lost_referrals"] == result["duplicated_referrals"] == 0
    assert result["requests_without_assignment"] == result["requests_with_two_assignments"] == 0
    # Every fault landed: each service killed, one of two fulfilment and reporting instances
    # killed, a restart of all, the leader killed, two brokers down, a rolling restart.
    labels = " | ".join(result["faults"])
    for fault in (
        "leader",
        "two of three brokers down",
        "rolling restart",
        "one of two fulfilment",
        "one of two reporting",
    ):
        assert fault in labels
    assert result["retries_after_outage"] > 0
    assert result["referrals_answered_201"] >= 10 and result["hub_transitions"] > 0
