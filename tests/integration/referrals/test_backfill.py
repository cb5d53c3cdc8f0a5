"""Recording a referral received in the past: for a migration from a legacy system (and `kent-together demo`)."""

from datetime import UTC, datetime, timedelta

from shared.events import ReferralReceivedV1, RequestReceivedV1
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token
from tests.support.kafka import read_topic

SERVICE = "referrals"
APRIL_2020 = "2020-04-03T10:15:00+00:00"


async def test_an_administrator_records_a_referral_received_in_april_2020_and_its_events_carry_that_time(
    client, settings
):
    response = await client.post(
        "/v1/referrals", json=referral_body(received_at=APRIL_2020), headers=token(settings, "admin")
    )
    assert response.status_code == 201, response.text
    assert datetime.fromisoformat(response.json()["received_at"]) == datetime.fromisoformat(APRIL_2020)

    [(_, received)] = await read_topic(settings.kafka_bootstrap_servers, settings.topics.referrals, expect=1)
    data = ReferralReceivedV1.model_validate(received.data)
    assert data.received_at == datetime.fromisoformat(APRIL_2020) and data.backfilled is True
    stats = await read_topic(settings.kafka_bootstrap_servers, settings.topics.request_stats, expect=2)
    assert {RequestReceivedV1.model_validate(e.data).received_at for _, e in stats} == {
        datetime.fromisoformat(APRIL_2020)
    }


async def test_a_call_centre_adviser_cannot_date_a_referral_back_beyond_a_paper_forms_week(client, settings):
    response = await client.post(
        "/v1/referrals", json=referral_body(received_at=APRIL_2020), headers=token(settings, "call-centre")
    )
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["field"] == "received_at" and "referrals:backfill" in problem["detail"]


async def test_a_call_centre_adviser_may_date_a_paper_form_from_yesterday_and_hubs_hear_of_it_now(client, settings):
    yesterday = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    response = await client.post(
        "/v1/referrals", json=referral_body(received_at=yesterday.isoformat()), headers=token(settings, "call-centre")
    )
    assert response.status_code == 201, response.text
    [(_, received)] = await read_topic(settings.kafka_bootstrap_servers, settings.topics.referrals, expect=1)
    data = ReferralReceivedV1.model_validate(received.data)
    assert data.received_at == yesterday and data.backfilled is False


async def test_a_referral_received_in_the_future_is_refused_naming_received_at(client, settings):
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    response = await client.post(
        "/v1/referrals", json=referral_body(received_at=tomorrow), headers=token(settings, "admin")
    )
    assert response.status_code == 422, response.text
    assert {e["field"]: e["reason"] for e in response.json()["errors"]}["received_at"] == "is in the future"
