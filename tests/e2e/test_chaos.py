"""The fault suite, short: the running suite under load while each service is killed and the broker stops."""

from tests.support.chaos import chaos, failures


async def test_under_kills_and_a_broker_outage_no_accepted_referral_is_lost_or_duplicated():
    result = await chaos(seconds=24, rate=6, settle_seconds=90)
    assert failures(result) == []
    assert result["lost_referrals"] == result["duplicated_referrals"] == 0
    assert result["requests_without_assignment"] == result["requests_with_two_assignments"] == 0
    # The faults really landed mid-load: every service killed, the broker stopped, front-ends had to retry.
    assert len(result["faults"]) == len(result["services"]) + 2
    assert result["retries_after_outage"] > 0
    # Enough load to mean something (the rate held is a benchmark figure, not asserted): make test runs this
    # beside the other xdist worker, where 25–28 of the planned 144 were answered while the faults landed.
    assert result["referrals_answered_201"] >= 10 and result["hub_transitions"] > 0
