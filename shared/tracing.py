"""Tracing with OpenTelemetry: one trace from an HTTP request through Kafka to the hub's webhook.

Each service app has its own `Tracing` (a tracer provider named after the
service). `ServerSpans` (pure ASGI middleware) runs each request in a server span from the
caller's `traceparent` and `tracestate` (or a new trace); the unit of work puts
the current context on every CloudEvent it records (the CloudEvents
distributed-tracing extension: `traceparent`, `tracestate`); the relay sends
each event in a producer span and as Kafka headers; a consumer handles each
event in a consumer span continuing the event's trace, so the events a handler
publishes carry the same trace id; the webhook dispatcher's HTTP client is
instrumented, so a hub's server receives the trace as well. Log lines carry
`trace_id` and `span_id`.

Export is off by default: spans are made (they carry the ids every event and
log line needs) but not recorded. The standard variables turn it on:
`OTEL_TRACES_EXPORTER=otlp` with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, read by the SDK's OTLP/HTTP
exporter itself. With export on, database statements are spans too.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine


HEADER = "traceparent"
STATE_HEADER = "tracestate"
_FORMAT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
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


def current() -> TraceContext | None:
    """The trace and span the running code is in (OpenTelemetry's current span), if any."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return TraceContext(
        format(span_context.trace_id, "032x"),
        format(span_context.span_id, "016x"),
        format(int(span_context.trace_flags), "02x"),
    )


def current_traceparent() -> str | None:
    context = current()
    return context.traceparent if context else None


def current_tracestate() -> str | None:
    state = trace.get_current_span().get_span_context().trace_state
    return state.to_header() if state else None


def _remote_context(traceparent: str | bytes | None, tracestate: str | bytes | None = None) -> otel_context.Context:
    carrier: dict[str, str] = {}
    if traceparent is not None:
        carrier[HEADER] = traceparent.decode("latin-1") if isinstance(traceparent, bytes) else traceparent
    if tracestate is not None:
        carrier[STATE_HEADER] = tracestate.decode("latin-1") if isinstance(tracestate, bytes) else tracestate
    return extract(carrier, context=otel_context.Context())


def _trace_state(value: str | bytes) -> TraceState:
    """A `tracestate` header as the W3C propagator reads it (without building a whole context to get it)."""
    return TraceState.from_header([value.decode("latin-1") if isinstance(value, bytes) else value])


def new_trace() -> TraceContext:
    """The ids of a trace just started (sampled)."""
    return TraceContext(secrets.token_hex(16), secrets.token_hex(8))


@contextlib.contextmanager
def continued(traceparent: str | bytes | None, tracestate: str | bytes | None = None) -> Iterator[TraceContext]:
    """Work done inside belongs to the given trace (a new span id of it, not exported), or to a new trace.

    For code that runs on behalf of a caller outside any span of its own (the referral
    intake's group commit writes many callers' referrals in one task).
    """
    parent = parse(traceparent)
    made = parent.child() if parent else new_trace()
    state = _trace_state(tracestate) if parent and tracestate else TraceState()
    span = NonRecordingSpan(
        SpanContext(
            int(made.trace_id, 16),
            int(made.span_id, 16),
            is_remote=False,
            trace_flags=TraceFlags(int(made.flags, 16)),
            trace_state=state,
        )
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield made
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def within(traceparent: str | bytes | None, tracestate: str | bytes | None = None) -> Iterator[None]:
    """Spans started inside are children of the span `traceparent` names (as it is, no span of our own)."""
    token = otel_context.attach(_remote_context(traceparent, tracestate))
    try:
        yield
    finally:
        otel_context.detach(token)


class _WhenExporting(Sampler):
    """Record spans only once an exporter is attached (`Tracing.export_to`); make their ids either way.

    `roots=False`: only spans inside a recorded span (database statements: a background loop's polling
    is not a trace of its own).
    """

    def __init__(self, tracing: Tracing, ratio: float, *, roots: bool = True) -> None:
        self.tracing = tracing
        self.on = ParentBased(TraceIdRatioBased(ratio) if roots else ALWAYS_OFF)

    def should_sample(  # type: ignore[override]  # no trace_state parameter: the SDK calls with six arguments
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
    ) -> SamplingResult:
        sampler = self.on if self.tracing.exporting else ALWAYS_OFF
        result = sampler.should_sample(parent_context, trace_id, name, kind, attributes, links)
        return SamplingResult(result.decision, result.attributes, result.trace_state)

    def get_description(self) -> str:
        return "KentTogetherWhenExporting"


class Tracing:
    """One service's tracer provider: spans always made, recorded and exported only with an exporter."""

    def __init__(self, service: str, *, exporter: str = "none", sample_ratio: float = 1.0):
        self.service = service
        self.exporting = False
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service}), sampler=_WhenExporting(self, sample_ratio)
        )
        self.tracer = self.provider.get_tracer("kent-together")
        self.inner_provider = TracerProvider(
            resource=self.provider.resource, sampler=_WhenExporting(self, sample_ratio, roots=False)
        )
        """For instrumentation that should only add to a trace, never start one (database statements)."""
        self._on_export: list[Callable[[], None]] = []
        if exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.export_to(OTLPSpanExporter(), batch=True)  # endpoint, headers, timeout: the OTEL_* variables
        elif exporter not in ("none", ""):
            raise ValueError(f"OTEL_TRACES_EXPORTER={exporter!r}: this platform exports with otlp, or none")

    def export_to(self, exporter: SpanExporter, *, batch: bool = False) -> None:
        """Record and export spans from now on (tests give the SDK's in-memory exporter)."""
        for provider in (self.provider, self.inner_provider):
            provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        self.exporting = True
        for instrument in self._on_export:
            instrument()

    def when_exporting(self, instrument: Callable[[], None]) -> None:
        """Run `instrument` once export is on (now, if it is): instrumentation that costs only when recorded."""
        self._on_export.append(instrument)
        if self.exporting:
            instrument()

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        kind: SpanKind,
        traceparent: str | bytes | None = None,
        tracestate: str | bytes | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> Iterator[trace.Span]:
        """A span continuing `traceparent` (a new trace without one), current for the code inside."""
        parent = _remote_context(traceparent, tracestate) if parse(traceparent) else otel_context.Context()
        with self.tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as span:
            yield span

    def shutdown(self) -> None:
        self.provider.shutdown()
        self.inner_provider.shutdown()


class ServerSpans:
    """Pure ASGI middleware: each HTTP request runs in a server span continuing the caller's `traceparent`.

    What FastAPI's OpenTelemetry instrumentation did, at a fraction of its cost per
    request (it was a quarter of intake's CPU with export off): with export off
    (the default) no SDK span is made at all, only the ids every event and log
    line carries (the caller's trace with a new span id, or a new trace); with
    export on, an SDK server span named `METHOD /route/{template}` with the HTTP
    semantic-convention attributes and the response status.
    """

    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        traceparent = tracestate = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value
            elif name == b"tracestate":
                tracestate = value
        if not self.tracing.exporting:
            with continued(traceparent, tracestate):
                return await self.app(scope, receive, send)
        await self._recorded(scope, receive, send, traceparent, tracestate)

    async def _recorded(
        self, scope: Scope, receive: Receive, send: Send, traceparent: bytes | None, tracestate: bytes | None
    ) -> None:
        method = scope["method"]
        attributes = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        with self.tracing.span(
            method, kind=SpanKind.SERVER, traceparent=traceparent, tracestate=tracestate, attributes=attributes
        ) as span:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            except Exception as error:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)


def instrument_engine(engine: AsyncEngine, tracing: Tracing) -> None:
    """Database statements as spans of the service's traces (the SQLAlchemy instrumentation, on this engine only)."""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    tracer = tracing.inner_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    connections = NoOpMeterProvider().get_meter("kent-together").create_up_down_counter("db.client.connections.usage")
    EngineTracer(tracer, engine.sync_engine, connections)  # type: ignore[no-untyped-call]  # the instrumentation leaves it unannotated


def instrument_http_client(client: httpx.AsyncClient, tracing: Tracing) -> None:
    """Calls made with this httpx client are client spans, their `traceparent` sent (the HTTPX instrumentation)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracing.provider)


__all__ = [
    "HEADER",
    "STATE_HEADER",
    "ServerSpans",
    "SpanKind",
    "TraceContext",
    "Tracing",
    "continued",
    "current",
    "new_trace",
    "current_traceparent",
    "current_tracestate",
    "instrument_engine",
    "instrument_http_client",
    "parse",
    "within",
]
