"""Prometheus metrics for every service: HTTP, outbox, consumers, the process; read at scrape time.

Beside the platform's own (`kt_*`): the client library's process collector
(`process_resident_memory_bytes`, `process_cpu_seconds_total`,
`process_open_fds`…), platform (`python_info`) and garbage-collector ones, and
`kt_build_info{service, version, revision}` = 1 to join other series on. No
`*_created` series: Prometheus does not use them and they double what a scrape
carries.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from starlette.types import Scope

from shared.db import utcnow

if TYPE_CHECKING:
    from shared.app import Runtime


disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated


def package_version() -> str:
    try:
        return version("kent-together")
    except PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


class ServiceMetrics:
    """One registry per app (tests run several apps in one process)."""

    def __init__(self, service: str, *, revision: str = ""):
        self.service = service
        self.registry = CollectorRegistry()
        # The library's own collectors read this process: one instance each serves every registry.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        build = Gauge(
            "kt_build_info",
            "The running build: always 1, its labels say which",
            ["service", "version", "revision", "python"],
            registry=self.registry,
        )
        build.labels(service, package_version(), revision or "unknown", platform.python_version()).set(1)
        self.requests = Counter(
            "kt_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "kt_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.sources: list[Callable[[], Awaitable[list[Metric]]]] = []

    def add_source(self, source: Callable[[], Awaitable[list[Metric]]]) -> None:
        """A service's own figures, read at scrape time: an async callable returning metric families."""
        self.sources.append(source)

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    async def render(self, runtime: Runtime) -> bytes:
        """The exposition text: request metrics plus the outbox and consumers as they are now."""
        snapshot = CollectorRegistry()
        backlog, oldest = await runtime.relay.backlog()
        outbox = GaugeMetricFamily("kt_outbox_backlog", "Outbox rows committed but not yet published")
        outbox.add_metric([], backlog)
        age = GaugeMetricFamily("kt_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row")
        age.add_metric([], (utcnow() - oldest).total_seconds() if oldest else 0.0)
        published = CounterMetricFamily("kt_outbox_published", "Outbox rows published by this process's relay")
        published.add_metric([], runtime.relay.published_total)
        processed = CounterMetricFamily("kt_events_processed", "Events handled by consumers", labels=["group"])
        dead = CounterMetricFamily("kt_events_dead_lettered", "Events sent to a dead-letter topic", labels=["group"])
        lag = GaugeMetricFamily("kt_consumer_lag", "Messages behind the end of the topic", labels=["group"])
        for consumer in runtime.consumers:
            processed.add_metric([consumer.group_id], consumer.processed_total)
            dead.add_metric([consumer.group_id], consumer.dead_lettered_total)
            lag.add_metric([consumer.group_id], await consumer.lag())
        families: list[Metric] = [outbox, age, published, processed, dead, lag]
        for source in self.sources:
            families += await source()

        class Now:
            def collect(self) -> list[Metric]:
                return families

        snapshot.register(Now())
        return generate_latest(self.registry) + generate_latest(snapshot)


def route_of(scope: Scope) -> str:
    """The route template ('/v1/referrals/{referral_id}'), never the raw path with ids in it."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def now() -> float:
    return time.perf_counter()
