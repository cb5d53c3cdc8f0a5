"""One referral, one trace: spans from three services in the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import asyncio

import orjson
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.fulfilment.app import FulfilmentSettings
from services.fulfilment.app import create_app as create_fulfilment
from services.referrals.app import ReferralsSettings
from services.referrals.app import create_app as create_referrals
from services.reporting.app import ReportingSettings
from services.reporting.app import create_app as create_reporting
from shared import tracing
from shared.bus import ensure_topics
from tests.integration.fulfilment.conftest import directory  # noqa: F401 (the fixture)
from tests.integration.fulfilment.test_webhooks import HubServer
from tests.integration.shared.test_tracing import (  # noqa: F401 (fixtures)
    CALLER,
    REFERRAL,
    TRACE_ID,
    common,
    fulfilment_db,
    referrals_db,
)
from tests.support.apps import running, token

CALLER_SPAN = CALLER.split("-")[2]
STATE = "kt=referral,rojo=00f067aa0ba902b7"


async def until(check, *, timeout: float = 45.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "not so in time"
        await asyncio.sleep(0.1)


async def test_one_referral_is_one_trace_across_referrals_fulfilment_and_reporting(
    common,
    unique,
    referrals_db,
    fulfilment_db,
    reporting_sqlite_url,
    directory,  # noqa: F811
):
    topics = common["topics"]
    await ensure_topics(
        common["kafka_bootstrap_servers"],
        {
            t: 1
            for t in (
                topics.referrals,
                topics.request_stats,
                topics.assignment_status,
                topics.actions,
                topics.hub("thanet"),
            )
        },
    )
    referrals_settings = ReferralsSettings(database_url=referrals_db, **common)
    fulfilment_settings = FulfilmentSettings(
        database_url=fulfilment_db,
        consumer_group=f"fulfilment-{unique}",
        create_hub_topics=False,
        run_scheduler=False,
        webhook_poll_seconds=0.05,
        consumer_session_timeout_ms=6000,
        **common,
    )
    reporting_settings = ReportingSettings(
        database_url=reporting_sqlite_url,
        consumer_group=f"reporting-{unique}",
        consumer_session_timeout_ms=6000,
        **common,
    )
    exporter = InMemorySpanExporter()
    apps = [
        create_referrals(referrals_settings),
        create_fulfilment(fulfilment_settings, directory=directory),
        create_reporting(reporting_settings),
    ]
    for app in apps:
        app.state.runtime.tracing.export_to(exporter)

    def spans(service: str | None = None, kind: SpanKind | None = None):
        return [
            s
            for s in exporter.get_finished_spans()
            if (service is None or s.resource.attributes["service.name"] == service)
            and (kind is None or s.kind == kind)
        ]

    async with (
        HubServer().running() as hub,
        running(apps[0]) as referrals,
        running(apps[1]) as fulfilment,
        running(apps[2]),
    ):
        patched = await fulfilment.patch(
            "/v1/hubs/thanet",
            json={"webhook_url": hub.url, "webhook_secret": "thanet-webhook-secret-0123456789"},
            headers=token(fulfilment_settings, "admin"),
        )
        assert patched.status_code == 200, patched.text
        exporter.clear()
        response = await referrals.post(
            "/v1/referrals",
            json=REFERRAL,
            headers={**token(referrals_settings, "call-centre"), "traceparent": CALLER, "tracestate": STATE},
        )
        assert response.status_code == 201, response.text
        await until(lambda: len(hub.received) >= 2)
        await until(lambda: len(spans("reporting", SpanKind.CONSUMER)) >= 4)  # two received, two routed
        await until(lambda: sum(s.name == "POST" for s in spans("fulfilment", SpanKind.CLIENT)) >= 2)

    ours = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == TRACE_ID]
    assert {s.resource.attributes["service.name"] for s in ours} == {"referrals", "fulfilment", "reporting"}
    others = [(s.resource.attributes["service.name"], s.name) for s in exporter.get_finished_spans() if s not in ours]
    assert not others, "background work (polling, SLA checks) made traces of its own"

    [server] = [s for s in spans("referrals", SpanKind.SERVER) if s.name == "POST /v1/referrals"]
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes.get("http.response.status_code", server.attributes.get("http.status_code")) == 201
    assert spans("referrals", SpanKind.PRODUCER) and spans("fulfilment", SpanKind.PRODUCER)
    assert any("db.system" in s.attributes or "db.system.name" in s.attributes for s in spans("referrals"))
    [consumed] = [
        s
        for s in spans("fulfilment", SpanKind.CONSUMER)
        if s.attributes["cloudevents.event_type"].endswith("referral.received.v1")
    ]
    assert consumed.attributes["messaging.destination.name"] == topics.referrals
    webhook_calls = [
        s
        for s in spans("fulfilment", SpanKind.CLIENT)
        if s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"
    ]
    assert len(webhook_calls) == 2

    for request_headers, body in hub.received:
        assert tracing.parse(request_headers["traceparent"]).trace_id == TRACE_ID
        event = orjson.loads(body)
        assert tracing.parse(event["traceparent"]).trace_id == TRACE_ID
        assert event["tracestate"] == STATE  # the caller's vendor state rides along


def test_a_log_line_carries_the_span_id_as_well_as_the_trace_id():
    import logging

    from shared.logs import JsonFormatter

    record = logging.LogRecord("referrals", logging.INFO, __file__, 1, "taken", None, None)
    with tracing.continued(CALLER) as inside:
        line = orjson.loads(JsonFormatter("referrals").format(record))
    assert (line["trace_id"], line["span_id"]) == (TRACE_ID, inside.span_id)


def test_export_is_off_unless_the_standard_variable_turns_it_on():
    off = tracing.Tracing("referrals")
    assert off.exporting is False
    with off.span("x", kind=SpanKind.INTERNAL) as span:
        assert not span.is_recording() and span.get_span_context().is_valid  # ids made, nothing recorded
    on = tracing.Tracing("referrals", exporter="otlp")
    assert on.exporting is True
    on.shutdown()
