"""The demo speaks the services' own names: it posts what referrals accepts and moves assignments as fulfilment allows."""

from services.fulfilment import domain as fulfilment
from services.fulfilment.hubs import KENT_HUBS
from services.fulfilment.schemas import TransitionIn
from services.referrals import domain as referrals
from services.referrals.schemas import ReferralIn
from suite import demo


def test_the_demo_uses_the_request_types_channels_urgencies_and_hubs_the_services_define():
    assert set(demo.TYPES) == {request_type for request_type, _, _ in referrals.DEFAULT_REQUEST_TYPES}
    assert set(demo.CHANNELS) == set(referrals.CHANNELS)
    assert set(demo.URGENCIES) == set(referrals.URGENCIES)
    assert set(demo.HUBS) == set(demo.DISTRICT_POPULATION) == {hub.slug for hub in KENT_HUBS}


def test_every_outcome_and_reason_the_demo_gives_is_one_fulfilment_accepts():
    assert set(demo.FULFILLED_OUTCOMES) <= set(fulfilment.FULFILLED_OUTCOMES)
    assert set(demo.UNABLE_OUTCOMES) <= set(fulfilment.UNABLE_OUTCOMES)
    assert set(demo.REJECT_REASONS) <= set(fulfilment.REJECT_REASONS)
    assert set(demo.ORDER) <= {str(status) for status in fulfilment.Status}


def test_every_planned_referral_and_transition_is_a_body_the_services_validate():
    from datetime import date

    spec = demo.LoadSpec(
        referrals=40,
        requests=60,
        start=date(2020, 4, 1),
        end=date(2020, 4, 5),
        mix=demo.APRIL_2020_MIX,
        channels={"phone": 1, "partner": 1},
        districts=demo.DISTRICT_POPULATION,
    )
    postcodes = {slug: ["CT9 1AA"] for slug in demo.HUBS}
    plan = demo.make_plan(spec, postcodes)
    for referral in plan.referrals:
        ReferralIn.model_validate(referral.body(), context={"request_types": set(demo.TYPES)})
        for request in referral.requests:
            for step in request.steps:
                TransitionIn.model_validate(step.body())
