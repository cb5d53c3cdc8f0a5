"""W3C traceparent: parsed, continued, and written on every log line."""

import logging

import orjson

from shared import tracing
from shared.logs import JsonFormatter, event_id_var

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_read_into_its_trace_and_span():
    context = tracing.parse(VALID)
    assert (context.trace_id, context.span_id, context.flags) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "01",
    )


def test_malformed_or_all_zero_traceparents_are_refused_so_a_new_trace_starts():
    for bad in (
        "",
        "garbage",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        VALID + "-extra",
        "00-4BF92F35-00f067aa0ba902b7-01",
    ):
        assert tracing.parse(bad) is None, bad


def test_continuing_a_trace_keeps_its_id_with_a_new_span_and_restores_the_outer_context():
    assert tracing.current() is None
    with tracing.continued(VALID) as inner:
        assert tracing.current_traceparent() == inner.traceparent
        assert inner.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and inner.span_id != "00f067aa0ba902b7"
    with tracing.continued(None) as started:
        assert len(started.trace_id) == 32 and tracing.parse(started.traceparent) == started
    assert tracing.current() is None


def test_a_log_line_written_while_handling_an_event_carries_the_trace_id_and_event_id():
    record = logging.LogRecord("fulfilment", logging.INFO, __file__, 1, "routed", None, None)
    token = event_id_var.set("6f1c9f0e-7d8a-4c43-9a8e-0d6a4a1f5b2c")
    try:
        with tracing.continued(VALID):
            line = orjson.loads(JsonFormatter("fulfilment").format(record))
    finally:
        event_id_var.reset(token)
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["event_id"] == "6f1c9f0e-7d8a-4c43-9a8e-0d6a4a1f5b2c"


def _seen_inside_a_request(tracer: tracing.Tracing, headers: list[tuple[bytes, bytes]]) -> dict:
    """One HTTP request through `ServerSpans` to an app that notes the span it runs in."""
    import asyncio

    from opentelemetry import trace

    seen: dict = {}

    async def app(scope, receive, send):
        span = trace.get_current_span()
        seen.update(
            span=span,
            context=tracing.current(),
            state=span.get_span_context().trace_state.to_header(),
        )
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": headers}
    asyncio.run(tracing.ServerSpans(app, tracing=tracer)(scope, receive, send))
    return seen


def test_with_export_off_a_request_continues_its_callers_trace_and_state_without_an_sdk_span():
    from opentelemetry.sdk.trace import Span as SdkSpan

    seen = _seen_inside_a_request(
        tracing.Tracing("referrals"), [(b"traceparent", VALID.encode()), (b"tracestate", b"kt=referral")]
    )
    assert not isinstance(seen["span"], SdkSpan) and not seen["span"].is_recording()
    assert seen["context"].trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert seen["context"].span_id != "00f067aa0ba902b7"  # this service's own part of the trace
    assert seen["state"] == "kt=referral"
    assert tracing.current() is None  # restored after the request


def test_with_export_on_a_request_is_a_recorded_server_span_child_of_its_caller():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer, exporter = tracing.Tracing("referrals"), InMemorySpanExporter()
    tracer.export_to(exporter)
    _seen_inside_a_request(tracer, [(b"traceparent", VALID.encode())])
    [span] = exporter.get_finished_spans()
    assert span.kind == tracing.SpanKind.SERVER and span.name == "GET"  # no route matched: the method alone
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.attributes["http.response.status_code"] == 204
