"""W3C Trace Context carried from HTTP through Kafka, so one referral can be followed across services.

The HTTP middleware takes the caller's `traceparent` header (or starts a trace);
the unit of work puts the current one on every CloudEvent it records (the
CloudEvents distributed-tracing extension attribute `traceparent`); the relay
sends it as a Kafka header too; a consumer continues it around its handler, so
the events a handler publishes carry the same trace id. Log lines carry
`trace_id`.

A small helper rather than the OpenTelemetry SDK: the platform exports no spans
yet, and all it needs is to parse, make and pass on one 55-character header.
The values are the W3C format OpenTelemetry uses, so an SDK added later (with an
exporter) continues the same traces.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

HEADER = "traceparent"
_FORMAT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> "TraceContext":
        """The same trace, a new span: this service's part of it."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)


def parse(value: str | bytes | None) -> TraceContext | None:
    """A `traceparent` value, or None when it is missing or not valid W3C (then a new trace starts)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    match = _FORMAT.match(value.strip().lower())
    if not match:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return None
    return TraceContext(trace_id, span_id, flags)


def new_trace() -> TraceContext:
    return TraceContext(secrets.token_hex(16), secrets.token_hex(8))


_current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar("trace", default=None)


def current() -> TraceContext | None:
    return _current.get()


def current_traceparent() -> str | None:
    context = _current.get()
    return context.traceparent if context else None


@contextlib.contextmanager
def continued(traceparent: str | bytes | None) -> Iterator[TraceContext]:
    """Work done inside belongs to the given trace (a new span of it), or to a new trace."""
    parent = parse(traceparent)
    context = parent.child() if parent else new_trace()
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
