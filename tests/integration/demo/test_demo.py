"""`kent-together demo`'s driver against the real referrals and fulfilment apps, on the test broker."""

import shutil
from collections import Counter
from datetime import UTC, date

import httpx
import pytest

from services.fulfilment.app import create_app as create_fulfilment
from services.referrals.app import ReferralsSettings
from services.referrals.app import create_app as create_referrals
from shared.bus import ensure_topics
from shared.http_client import polite_client, retry_after_seconds
from suite import demo
from tests.integration.fulfilment.conftest import directory, make_settings  # noqa: F401 (a fixture)
from tests.support.apps import running, token
from tests.support.databases import sqlite_template

THANET, DOVER = "thanet", "dover"


@pytest.fixture(params=["sqlite", "postgres"])
def database_urls(request, tmp_path, tmp_path_factory, postgres_templates) -> dict[str, str]:
    """A migrated, empty database for each of the two services."""
    urls = {}
    for service in ("referrals", "fulfilment"):
        if request.param == "sqlite":
            target = tmp_path / f"{service}.db"
            shutil.copy(sqlite_template(service, tmp_path_factory.getbasetemp()), target)
            urls[service] = f"sqlite+aiosqlite:///{target}"
        else:
            urls[service] = postgres_templates.fresh_database(service)
    return urls


@pytest.fixture
async def services(database_urls, broker, signing_key, unique, var_dir, directory):  # noqa: F811
    fulfilment_settings = make_settings(
        database_url=database_urls["fulfilment"], broker=broker, signing_key=signing_key, unique=unique, var_dir=var_dir
    )
    referrals_settings = ReferralsSettings(
        database_url=database_urls["referrals"],
        kafka_bootstrap_servers=broker.bootstrap_servers,
        jwt_signing_key=signing_key,
        topics=fulfilment_settings.topics,
        var_dir=var_dir,
        log_json=False,
        outbox_poll_seconds=0.1,
    )
    await ensure_topics(broker.bootstrap_servers, {fulfilment_settings.topics.referrals: 3})
    async with (
        running(create_referrals(referrals_settings)) as referrals,
        running(create_fulfilment(fulfilment_settings, directory=directory)) as fulfilment,
    ):
        yield referrals, fulfilment, referrals_settings


def small_plan(directory, **overrides) -> demo.Plan:  # noqa: F811
    spec = demo.april_2020(referrals=30, requests=44, districts={THANET: 2, DOVER: 1}, **overrides)
    return demo.make_plan(spec, demo.demo_postcodes(directory))


def tokens(settings) -> demo.Tokens:
    header = token(settings, "admin", subject="demo-test")
    hubs = {slug: token(settings, "hub", hub=slug)["Authorization"].split()[1] for slug in (THANET, DOVER)}
    return demo.Tokens(backfill=header["Authorization"].split()[1], hubs=hubs)


async def test_the_demo_posts_exactly_its_plan_and_the_hubs_work_their_assignments(services, directory):  # noqa: F811
    referrals, fulfilment, settings = services
    plan = small_plan(directory)

    report = await demo.run_demo(
        plan, referrals=referrals, fulfilment=fulfilment, tokens=tokens(settings), wait_seconds=60, poll_seconds=0.2
    )

    assert report.failures == []
    assert report.posted == 30 and report.requests == 44
    admin = token(settings, "admin")
    stored = []
    for planned in plan.referrals:
        found = (await referrals.get("/v1/referrals", params={"name": planned.name}, headers=admin)).json()["results"]
        assert len(found) == 1, planned.name
        stored.append(found[0])
    assert Counter(t for r in stored for t in r["request_types"]) == plan.requests_by_type()
    assert {date.fromisoformat(r["received_at"][:10]) for r in stored} <= {
        date(2020, 4, day) for day in range(1, 26)
    } | {date(2020, 3, 31)}  # a morning in BST is the evening before in UTC

    by_hub = {}
    for hub in (THANET, DOVER):
        response = await fulfilment.get(
            f"/v1/hubs/{hub}/assignments", params={"limit": 500, "closed": "true"}, headers=admin
        )
        by_hub[hub] = response.json()["items"]
    # Each hub holds the requests its postcodes route to, but those it rejected (which went on to triage).
    assert {hub: len(items) for hub, items in by_hub.items()} == {
        hub: sum(1 for r in plan.referrals if r.place == hub for q in r.requests if q.fate != "rejected")
        for hub in (THANET, DOVER)
    }

    statuses = Counter(item["status"] for items in by_hub.values() for item in items)
    fates = plan.fates()
    assert statuses["fulfilled"] == fates["fulfilled"]
    assert statuses["unable_to_fulfil"] == fates["unable"]
    assert statuses["in_progress"] == fates["in_progress"]
    assert statuses["accepted"] == fates["accepted"]
    assert statuses["routed"] == fates["open"]
    # Rejected requests left their hub for triage, with the rejection in their history.
    triage = (await fulfilment.get("/v1/queues/triage", headers=admin)).json()["items"]
    assert len(triage) == fates["rejected"]
    assert (
        report.transitions["accepted"]
        == fates["fulfilled"] + fates["unable"] + fates["in_progress"] + fates["accepted"]
    )

    closed = next(item for items in by_hub.values() for item in items if item["status"] == "fulfilled")
    planned = next(
        r
        for ref in plan.referrals
        for r in ref.requests
        if r.fate == "fulfilled"
        and any(s.to == "fulfilled" and s.at.isoformat() == closed["closed_at"].replace("Z", "+00:00") for s in r.steps)
    )
    assert planned.steps[0].to == "accepted"


async def test_a_rerun_of_the_same_plan_adds_no_referral_and_no_transition(services, directory):  # noqa: F811
    referrals, fulfilment, settings = services
    plan = small_plan(directory)
    first = await demo.run_demo(
        plan, referrals=referrals, fulfilment=fulfilment, tokens=tokens(settings), wait_seconds=60, poll_seconds=0.2
    )

    again = await demo.run_demo(
        plan, referrals=referrals, fulfilment=fulfilment, tokens=tokens(settings), wait_seconds=60, poll_seconds=0.2
    )

    assert first.failures == [] and again.failures == []
    assert again.replayed == again.posted == 30
    assert sum(again.transitions.values()) == 0
    assert again.already_done == sum(first.transitions.values())


async def test_a_request_type_the_service_does_not_know_is_reported_before_anything_is_posted(services, directory):  # noqa: F811
    referrals, fulfilment, settings = services
    plan = small_plan(directory, mix={"food": 0.5, "hot-meals": 0.5})

    report = await demo.run_demo(plan, referrals=referrals, fulfilment=fulfilment, tokens=tokens(settings))

    assert report.posted == 0
    assert [f.what for f in report.failures] == ["request types"] and "hot-meals" in report.failures[0].detail


@pytest.fixture
def sqlite_urls(tmp_path, tmp_path_factory) -> dict[str, str]:
    urls = {}
    for service in ("referrals", "fulfilment"):
        target = tmp_path / f"{service}.db"
        shutil.copy(sqlite_template(service, tmp_path_factory.getbasetemp()), target)
        urls[service] = f"sqlite+aiosqlite:///{target}"
    return urls


@pytest.fixture
async def rate_limited_services(sqlite_urls, broker, signing_key, unique, var_dir, directory):  # noqa: F811
    """Both services on SQLite with a per-client limit far below what the demo sends (as `make run`'s is, at scale)."""
    urls = sqlite_urls
    limits = dict(rate_limit_per_minute=1200, rate_limit_burst=5)
    fulfilment_settings = make_settings(
        database_url=urls["fulfilment"],
        broker=broker,
        signing_key=signing_key,
        unique=unique,
        var_dir=var_dir,
        **limits,
    )
    referrals_settings = ReferralsSettings(
        database_url=urls["referrals"],
        kafka_bootstrap_servers=broker.bootstrap_servers,
        jwt_signing_key=signing_key,
        topics=fulfilment_settings.topics,
        var_dir=var_dir,
        log_json=False,
        outbox_poll_seconds=0.1,
        **limits,
    )
    await ensure_topics(broker.bootstrap_servers, {fulfilment_settings.topics.referrals: 3})
    referrals_app = create_referrals(referrals_settings)
    fulfilment_app = create_fulfilment(fulfilment_settings, directory=directory)
    async with running(referrals_app), running(fulfilment_app):
        yield referrals_app, fulfilment_app, referrals_settings


async def test_the_demo_waits_out_the_services_rate_limits_and_finishes_without_failures(
    rate_limited_services,
    directory,  # noqa: F811
):
    referrals_app, fulfilment_app, settings = rate_limited_services
    plan = small_plan(directory)

    def client(app) -> httpx.AsyncClient:
        return polite_client("http://testserver", inner=httpx.ASGITransport(app=app))

    async with client(referrals_app) as referrals, client(fulfilment_app) as fulfilment:
        report = await demo.run_demo(
            plan, referrals=referrals, fulfilment=fulfilment, tokens=tokens(settings), wait_seconds=60, poll_seconds=0.2
        )
        waited = referrals._transport.retried + fulfilment._transport.retried

    assert report.failures == []
    assert (report.posted, report.requests) == (30, 44)
    assert waited > 0  # the limits were met, and waited out


def test_a_retry_after_in_seconds_or_as_a_date_is_read_and_anything_else_is_not():
    from datetime import datetime

    now = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Tue, 01 Dec 2026 09:00:05 GMT", now=now) == 5.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
