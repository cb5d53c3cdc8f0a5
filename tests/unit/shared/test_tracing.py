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
