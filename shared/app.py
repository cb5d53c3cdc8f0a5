"""Bootstrap: every service is built here from its settings, tables and routers.

Settings, database, producer, relay, consumers and the token verifier are made
once at start-up and hung on `app.state.runtime`; tests build the same app with
their own database and broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import MetaData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.audit import AuditLog, audit_router, audit_table
from shared.auth import SigningKeys, TokenVerifier
from shared.bus import Producer
from shared.consumer import BatchHandler, EventConsumer, Handler, inbox_table
from shared.crypto import Keyring
from shared.db import Database
from shared.docs_pages import install_docs
from shared.errors import PayloadTooLarge, ValidationFailed, field_errors
from shared.http_errors import ProblemSettings, install_error_handlers
from shared.idempotency import IdempotencyKeys, IdempotentPosts, idempotency_table
from shared.kafka_security import check_transport
from shared.logs import configure_logging, request_id_var
from shared.metrics import ServiceMetrics, package_version, route_of
from shared.metrics import now as metrics_now
from shared.openapi import document_security_and_errors
from shared.outbox import OutboxRelay, outbox_table
from shared.security import UNLIMITED_PATHS, install_security
from shared.settings import ServiceSettings
from shared.tracing import ServerSpans, Tracing, current_traceparent, instrument_engine
from shared.uow import Reaction, UnitOfWork

log = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)


@dataclass
class ServiceTables:
    """A service's metadata with the shared outbox and inbox tables added to it (and the audit log, if it holds personal data)."""

    metadata: MetaData
    with_audit: bool = False
    with_idempotency: bool = True
    """Keeps `Idempotency-Key` answers (shared/idempotency.py): every service that takes POSTs."""

    def __post_init__(self) -> None:
        self.outbox = outbox_table(self.metadata)
        self.idempotency = idempotency_table(self.metadata) if self.with_idempotency else None
        self.personal = self.with_audit
        """Holds residents' personal data: audited, and sealed at rest with the keyring (shared/crypto.py)."""
        self.inbox = inbox_table(self.metadata)
        self.audit = audit_table(self.metadata) if self.with_audit else None
        self.repositories: dict[str, Callable[[UnitOfWork], object]] = self.metadata.info.setdefault("repositories", {})
        """name -> factory(uow): `uow.<name>` in the service's use cases (its repository.py registers them)."""


class BackgroundLoop(Protocol):
    """What `Runtime.start_loop` runs until `stop()`: shared/lifecycle.py's loops, and the JWKS refresh."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Runtime:
    """What a running service is made of; built once, passed in everywhere."""

    settings: ServiceSettings
    tables: ServiceTables
    db: Database
    producer: Producer
    relay: OutboxRelay
    verifier: TokenVerifier
    consumers: list[EventConsumer] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    loops: list[tuple[BackgroundLoop, asyncio.Task[None]]] = field(default_factory=list)
    reactions: dict[str, Reaction] = field(default_factory=dict)
    """Event type -> what its commit also writes (shared/uow.py `Reaction`): e.g. a notification to send."""
    """The background loops among `tasks`: asked to stop between rounds when the service stops."""
    audit: AuditLog | None = None
    keyring: Keyring | None = None
    """The data keys, for a service that holds personal data; None for the others."""
    idempotency: IdempotencyKeys | None = None
    tracing: Tracing | None = None

    def start_loop(self, loop: BackgroundLoop, *, name: str) -> None:
        """Run a background loop for the life of the service (see shared/lifecycle.py)."""
        task = asyncio.create_task(loop.run(), name=name)
        self.loops.append((loop, task))
        self.tasks.append(task)

    async def stop_background(self) -> None:
        """Loops stop between rounds (within the grace), other tasks at once; whatever overruns is cancelled."""
        loop_tasks = set()
        for loop, task in self.loops:
            loop.stop()
            loop_tasks.add(task)
        for task in self.tasks:
            if task not in loop_tasks:
                task.cancel()
        if self.tasks:
            _, overrunning = await asyncio.wait(self.tasks, timeout=self.settings.stop_grace_seconds)
            for task in overrunning:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.loops.clear()

    def uow(self, *, reading: bool = False) -> UnitOfWork:
        """A unit of work; `reading=True` for a use case that only reads (no write lock on SQLite, no commit)."""
        return UnitOfWork(
            self.db,
            source=f"/kent-together/{self.settings.service_name}",
            outbox=self.tables.outbox,
            on_commit=self.relay.notify,
            keyring=self.keyring,
            sealed_topic=self.settings.topics.personal,
            reading=reading,
            topics=self.settings.topics,
            reactions=self.reactions,
            inserts_at_commit=not reading,  # SQLite: a transaction's inserts in one go (shared/uow.py)
        )

    def consumer(
        self, *, group: str, topics: list[str], handlers: dict[str, Handler], batch_handler: BatchHandler | None = None
    ) -> EventConsumer:
        consumer = EventConsumer(
            group_id=group,
            topics=topics,
            handlers=handlers,
            uow_factory=self.uow,
            inbox=self.tables.inbox,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            producer=self.producer,
            dead_letter_topic=self.settings.topics.dead_letter_prefix + group,
            max_attempts=self.settings.consumer_max_attempts,
            session_timeout_ms=self.settings.consumer_session_timeout_ms,
            batch_handler=batch_handler,
            max_event_bytes=self.settings.consumer_max_event_bytes,
            security=self.settings.kafka,
            inbox_retention=None
            if self.settings.inbox_retention_days is None
            else timedelta(days=self.settings.inbox_retention_days),
        )
        consumer.tracing = self.tracing
        return consumer


def build_runtime(settings: ServiceSettings, tables: ServiceTables) -> Runtime:
    check_transport(settings.kafka, settings.environment)
    # Before anything else: production without its data keys must not start at all.
    keyring = settings.keyring() if tables.personal else None
    db = Database(settings.database_url, busy_timeout_seconds=settings.database_busy_timeout_seconds)
    producer = Producer(
        settings.kafka_bootstrap_servers, security=settings.kafka, idempotent=settings.kafka_idempotent_producer
    )
    relay = OutboxRelay(
        db=db,
        table=tables.outbox,
        producer=producer,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
        retention=timedelta(days=settings.outbox_retention_days),
        keyring=keyring,
    )
    keys = (
        SigningKeys(
            settings.jwt_jwks_url,
            refresh_seconds=settings.jwks_refresh_seconds,
            timeout_seconds=settings.jwks_timeout_seconds,
            min_refetch_seconds=settings.jwks_min_refetch_seconds,
        )
        if settings.jwt_jwks_url
        else None
    )
    verifier = TokenVerifier(
        issuer=_listed(settings.jwt_issuer),
        audience=_listed(settings.jwt_audience),
        signing_key="" if keys else settings.signing_key(),
        keys=keys,
        claims=settings.claims(),
        online_form_key=settings.jwt_online_form_key.get_secret_value() if keys else "",
    )
    audit = AuditLog(db=db, table=tables.audit) if tables.audit is not None else None
    idempotency = (
        IdempotencyKeys(
            db=db,
            table=tables.idempotency,
            keyring=keyring,
            retention=timedelta(hours=settings.idempotency_retention_hours),
        )
        if tables.idempotency is not None
        else None
    )
    tracing = Tracing(
        settings.otel_service_name or settings.service_name,
        exporter=settings.otel_traces_exporter,
        sample_ratio=settings.otel_traces_sampler_arg,
    )
    relay.tracing = tracing
    tracing.when_exporting(lambda: instrument_engine(db.engine, tracing))
    return Runtime(
        settings=settings,
        tables=tables,
        db=db,
        producer=producer,
        relay=relay,
        verifier=verifier,
        audit=audit,
        keyring=keyring,
        idempotency=idempotency,
        tracing=tracing,
    )


def _listed(value: str) -> str | list[str]:
    """A setting of one value or several separated by commas."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items[0] if len(items) == 1 else items


def create_service_app(
    *,
    title: str,
    settings: ServiceSettings,
    tables: ServiceTables,
    routers: list[APIRouter],
    consumers: Callable[[Runtime], list[EventConsumer]] | None = None,
    on_startup: Callable[[Runtime], object] | None = None,
    own_idempotency_paths: frozenset[str] = frozenset(),
) -> FastAPI:
    """The one way a service app is made: same middleware, errors, health and lifecycle."""
    if settings.log_json:  # before the runtime, so what building it logs is formatted too
        configure_logging(settings.service_name, settings.log_level)
    runtime = build_runtime(settings, tables)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if on_startup is not None:
            result = on_startup(runtime)
            if asyncio.iscoroutine(result):
                await result
        if runtime.verifier.keys is not None:
            runtime.start_loop(runtime.verifier.keys, name="jwks-refresh")
        if settings.run_relay:
            runtime.start_loop(runtime.relay, name="outbox-relay")
        if settings.run_consumers and consumers is not None:
            runtime.consumers = consumers(runtime)
            for consumer in runtime.consumers:
                runtime.start_loop(consumer, name=consumer.group_id)
        try:
            yield
        finally:
            await runtime.stop_background()
            await runtime.producer.stop()
            await runtime.db.dispose()
            assert runtime.tracing is not None  # build_runtime makes one
            runtime.tracing.shutdown()  # exports what is still batched

    app = FastAPI(title=title, version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_docs(app)  # Swagger UI and ReDoc with their assets served here, not from a CDN
    app.state.runtime = runtime
    app.state.verifier = runtime.verifier
    app.state.consumer_factory = consumers  # what the service consumes, for tools and tests to find
    install_error_handlers(
        app, ProblemSettings(type_base=settings.problem_type_base, authorization_uri=settings.jwt_authorization_uri)
    )
    version = package_version()  # pyproject.toml's, as installed: the same in /health and kt_build_info
    metrics = ServiceMetrics(settings.service_name, revision=settings.build_revision)
    app.state.metrics = metrics
    if runtime.idempotency is not None:  # innermost: the body has passed the hardening's size limits
        app.add_middleware(
            IdempotentPosts, keys_of=lambda app: app.state.runtime.idempotency, own_paths=own_idempotency_paths
        )
    install_security(app, settings)  # inside RequestContext: its answers carry the request id
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    # Outermost: the server span (from the caller's traceparent and tracestate) is current for everything inside.
    assert runtime.tracing is not None  # build_runtime makes one
    app.add_middleware(ServerSpans, tracing=runtime.tracing)

    @app.get("/health", tags=["operations"], summary="Liveness: the process answers")
    async def health():  # type: ignore[no-untyped-def]  # FastAPI would make a return annotation the response_model, changing the OpenAPI document
        return {"status": "ok", "service": settings.service_name, "version": version}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics: HTTP, outbox backlog and age, consumers")
    async def metrics_endpoint() -> Response:
        return Response(await metrics.render(runtime), media_type="text/plain; version=0.0.4")

    @app.get("/ready", tags=["operations"], summary="Readiness: the database answers; outbox state")
    async def ready():  # type: ignore[no-untyped-def]  # FastAPI would make a return annotation the response_model, changing the OpenAPI document
        try:
            await runtime.db.ping()
            backlog, oldest = await runtime.relay.backlog()
        except Exception as error:
            log.warning("not ready: %s", error)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return {
            "status": "ok",
            "database": "ok",
            "outbox": {"backlog": backlog, "oldest": oldest, "last_error": runtime.relay.last_error},
        }

    for router in routers:
        app.include_router(router)
    if runtime.audit is not None:
        app.include_router(audit_router())
    _complete_openapi(app, settings)
    return app


def _complete_openapi(app: FastAPI, settings: ServiceSettings) -> None:
    """The document as clients need it: `$defs` of `body_schema()` bodies moved into components, where their refs
    point; the bearer scheme, scopes and problem responses of every operation (shared/openapi.py)."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = default_openapi()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for path in document.get("paths", {}).values():
            for operation in path.values():
                content = operation.get("requestBody", {}).get("content", {}) if isinstance(operation, dict) else {}
                for media in content.values():
                    schema = media.get("schema", {})
                    components.update(schema.pop("$defs", {}))
                    if "title" in schema and "properties" in schema:
                        components.setdefault(schema["title"], dict(schema))
                        media["schema"] = {"$ref": f"#/components/schemas/{schema['title']}"}
        document_security_and_errors(
            app, document, rate_limited=settings.rate_limit_per_minute > 0, unlimited_paths=UNLIMITED_PATHS
        )
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the document


class RequestContext:
    """Pure ASGI middleware: a request id on every request and log line, and a body-size limit."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:100]
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        started = metrics_now()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                if traceparent:  # the request's span, from the caller's trace (or a new one)
                    message["headers"].append((b"traceparent", traceparent.encode()))
            await send(message)

        traceparent = current_traceparent()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
            self.metrics.observe(
                method=scope["method"], route=route_of(scope), status=status, seconds=metrics_now() - started
            )


async def read_body(request: Request, model: type[Model], *, context: dict[str, Any] | None = None) -> Model:
    """Validate a JSON body against `model`, with a size limit and every field error at once.

    Used where validation needs context a plain FastAPI body cannot have (the
    request-type taxonomy, say).
    """
    limit = request.app.state.runtime.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is over {limit} bytes")
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body is over {limit} bytes")
    try:
        return model.model_validate_json(raw, context=context)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            raise ValidationFailed([{"field": "body", "reason": "not valid JSON"}]) from None
        raise ValidationFailed(field_errors(error.errors())) from None


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI `requestBody` for an endpoint that reads its body with `read_body`."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
