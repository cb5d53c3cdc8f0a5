"""The demo's plan: exactly the load asked for, reproducibly, with no I/O."""

from collections import Counter
from datetime import UTC, date, datetime

import pytest

from suite import demo

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
# Made-up postcodes are enough for the plan: the driver's test routes real ones.
POSTCODES = {slug: [f"CT{i} {n}AA" for n in range(1, 4)] for i, slug in enumerate(demo.HUBS, start=1)} | {
    demo.OUT_OF_AREA: ["ME4 4TR"],
    demo.UNKNOWN: ["CT9 9XX"],
}


@pytest.fixture(scope="module")
def april() -> demo.Plan:
    return demo.make_plan(demo.april_2020(), POSTCODES, now=NOW)


def test_april_2020_has_exactly_the_briefings_referrals_and_requests(april):
    assert len(april.referrals) == 2893
    assert len(april.requests) == 4293


def test_april_2020_has_the_briefings_shares_of_food_and_prescriptions_rounded_from_the_total(april):
    by_type = april.requests_by_type()
    assert by_type["food"] == round(0.55 * 4293)
    assert by_type["prescription"] == round(0.27 * 4293)
    assert sum(by_type.values()) == 4293
    assert set(by_type) == set(demo.TYPES)


def test_every_referral_carries_one_or_more_requests_of_distinct_types(april):
    for referral in april.referrals:
        types = [r.type for r in referral.requests]
        assert 1 <= len(types) == len(set(types))


def test_april_2020_referrals_fall_between_1_and_25_april_on_every_day_rising_in_the_first_week(april):
    days = april.referrals_by_day()
    assert set(days) == {date(2020, 4, d) for d in range(1, 26)}
    first_week = [days[date(2020, 4, d)] for d in range(1, 8)]
    assert first_week[0] < first_week[3] < first_week[6]
    assert first_week[0] < min(days[date(2020, 4, d)] for d in range(8, 26))


def test_no_april_2020_referral_comes_before_the_launch_at_midday_on_1_april(april):
    first = min(r.received_at for r in april.referrals)
    assert first >= datetime(2020, 4, 1, 12, 0, tzinfo=demo.LONDON)
    assert first.astimezone(demo.LONDON).date() == date(2020, 4, 1)


def test_referrals_go_only_to_the_districts_chosen_in_their_weights():
    spec = demo.april_2020(referrals=300, requests=400, districts={"thanet": 2, "dover": 1})
    plan = demo.make_plan(spec, POSTCODES, now=NOW)
    assert plan.referrals_by("place") == Counter({"thanet": 200, "dover": 100})
    assert {r.postcode for r in plan.referrals if r.place == "dover"} <= set(POSTCODES["dover"])


def test_out_of_area_and_unknown_postcodes_take_their_share_and_no_hub_activity():
    spec = demo.april_2020(referrals=200, requests=250, out_of_area=0.05, unknown=0.02)
    plan = demo.make_plan(spec, POSTCODES, now=NOW)
    places = plan.referrals_by("place")
    assert (places[demo.OUT_OF_AREA], places[demo.UNKNOWN]) == (10, 4)
    elsewhere = [r for ref in plan.referrals if ref.place in (demo.OUT_OF_AREA, demo.UNKNOWN) for r in ref.requests]
    assert elsewhere and all(r.fate == "elsewhere" and r.steps == () for r in elsewhere)


def test_channels_are_shared_out_exactly(april):
    assert april.referrals_by("channel") == Counter(demo.largest_remainder(2893, april.spec.channels))


def test_hub_activity_is_shared_out_exactly_and_the_rest_stays_open():
    spec = demo.april_2020(referrals=100, requests=100, activity={"fulfilled": 0.5, "rejected": 0.1})
    plan = demo.make_plan(spec, POSTCODES, now=NOW)
    assert plan.fates() == Counter({"fulfilled": 50, "open": 40, "rejected": 10})


def test_each_requests_transitions_follow_the_lifecycle_in_time_order_after_receipt(april):
    paths = {
        "fulfilled": ["accepted", "in_progress", "fulfilled"],
        "unable": ["accepted", "in_progress", "unable_to_fulfil"],
        "in_progress": ["accepted", "in_progress"],
        "accepted": ["accepted"],
        "rejected": ["rejected"],
        "open": [],
    }
    for referral in april.referrals:
        for request in referral.requests:
            assert [s.to for s in request.steps] == paths[request.fate]
            times = [referral.received_at] + [s.at for s in request.steps]
            assert times == sorted(times) and times[-1] <= NOW
            if request.fate == "unable":
                assert request.steps[-1].outcome
            if request.fate == "rejected":
                assert request.steps[0].reason in demo.REJECT_REASONS


def test_nothing_is_dated_in_the_future_when_the_period_ends_today():
    spec = demo.april_2020(referrals=50, requests=60, start=date(2026, 11, 20), end=date(2026, 11, 24))
    plan = demo.make_plan(spec, POSTCODES, now=NOW)
    assert max(r.received_at for r in plan.referrals) < NOW
    assert max(s.at for r in plan.requests for s in r.steps) <= NOW


def test_the_same_seed_makes_the_same_plan_and_another_seed_another(april):
    again = demo.make_plan(demo.april_2020(), POSTCODES, now=NOW)
    other = demo.make_plan(demo.april_2020(seed=7), POSTCODES, now=NOW)
    assert [r.body() for r in again.referrals[:50]] == [r.body() for r in april.referrals[:50]]
    assert [r.body() for r in other.referrals[:50]] != [r.body() for r in april.referrals[:50]]
    assert other.requests_by_type() == april.requests_by_type()


def test_idempotency_keys_are_distinct_and_differ_between_plans(april):
    other = demo.make_plan(demo.april_2020(referrals=2000, requests=3000), POSTCODES, now=NOW)
    keys = {r.idempotency_key for r in april.referrals}
    assert len(keys) == 2893
    assert not keys & {r.idempotency_key for r in other.referrals}


def test_residents_are_distinct_people_so_no_referral_is_flagged_a_duplicate(april):
    assert len({r.name for r in april.referrals}) == 2893


def test_a_partner_referral_names_its_referrer(april):
    partner = next(r for r in april.referrals if r.channel == "partner")
    assert partner.body()["referrer"]["organisation"]


def test_largest_remainder_adds_up_exactly_and_rounds_each_quota_up_or_down():
    counts = demo.largest_remainder(10, {"a": 1, "b": 1, "c": 1})
    assert sum(counts.values()) == 10 and sorted(counts.values()) == [3, 3, 4]


@pytest.mark.parametrize("referrals,requests", [(10, 9), (10, 61)])
def test_an_impossible_number_of_requests_is_refused_naming_the_option(referrals, requests):
    with pytest.raises(ValueError, match="--requests"):
        demo.make_plan(demo.april_2020(referrals=referrals, requests=requests), POSTCODES, now=NOW)


def test_three_requests_a_referral_still_plans_with_distinct_types():
    spec = demo.april_2020(referrals=10, requests=30, mix={kind: 1 for kind in demo.TYPES})
    plan = demo.make_plan(spec, POSTCODES, now=NOW)
    assert len(plan.requests) == 30 and plan.requests_by_type() == Counter({kind: 5 for kind in demo.TYPES})
    assert all(len({r.type for r in ref.requests}) == len(ref.requests) for ref in plan.referrals)


def test_a_type_with_more_requests_than_there_are_referrals_is_refused_naming_the_mix():
    with pytest.raises(ValueError, match="--mix gives food 28 requests, more than there are referrals"):
        demo.make_plan(demo.april_2020(referrals=20, requests=50), POSTCODES, now=NOW)


def test_unknown_channels_districts_and_fates_are_refused_naming_the_option():
    spec = demo.april_2020(channels={"fax": 1}, districts={"medway": 1}, activity={"lost": 0.1})
    problems = " ".join(spec.problems())
    assert "--channels: unknown fax" in problems
    assert "--districts: unknown medway" in problems
    assert "--hub-activity: unknown lost" in problems


def test_shares_are_read_from_the_command_line_as_weights_or_a_list():
    assert demo.parse_shares("food=55, prescription=27", option="--mix") == {"food": 55.0, "prescription": 27.0}
    assert demo.parse_shares("thanet,dover", option="--districts") == {"thanet": 1.0, "dover": 1.0}
    with pytest.raises(ValueError, match="--mix: 'lots'"):
        demo.parse_shares("food=lots", option="--mix")
