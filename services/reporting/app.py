"""Bootstrap of the reporting service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.reporting import api, handlers
from services.reporting.models import tables
from shared.app import Runtime, create_service_app
from shared.settings import PORTS, ServiceSettings
from shared.spec import ServiceSpec

NAME = "reporting"
PORT = PORTS[NAME]
BATCH_SIZE = 500


class ReportingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REPORTING_", extra="ignore", populate_by_name=True)

    service_name: str = NAME
    consumer_group: str = "reporting"
    run_relay: bool = False
    """Reporting publishes nothing: no outbox to relay."""
    suppress_small_numbers: bool = False
    """Show counts of 1–4 as "<5" in every figure (a caller may also ask with `?suppress=true`)."""
    cache_seconds: int = 60
    """`Cache-Control: max-age` of figures; ETag and HEAD make a fresh check cheap."""
    odata_page_size: int = 1000
    """Rows per OData page before `@odata.nextLink`."""


def consumed_topics(settings: ReportingSettings) -> list[str]:
    topics = settings.topics
    return [topics.request_stats, topics.assignment_status, topics.actions]


def create_app(settings: ReportingSettings | None = None) -> FastAPI:
    settings = settings or ReportingSettings()

    def consumers(runtime: Runtime):
        consumer = runtime.consumer(
            group=settings.consumer_group,
            topics=consumed_topics(settings),
            handlers=handlers.projection_handlers(),
            batch_handler=handlers.project_batch,
        )
        # A whole fetch (up to 500 events) in one transaction: the fold's cost is per
        # transaction and per count key, and a bigger batch shares both.
        consumer.batch_size = BATCH_SIZE
        # Figures need not be fresher than a tenth of a second: on the embedded broker a short
        # fetch wait is paid in polls (its CPU), so reporting keeps the longer one.
        consumer.fetch_max_wait_ms = 100
        return [consumer]

    return create_service_app(
        title="Kent Together: reporting",
        settings=settings,
        tables=tables,
        routers=[api.figures, api.odata, api.dashboard],
        consumers=consumers,
    )


SPEC = ServiceSpec(
    name=NAME,
    port=PORT,
    settings_class=ReportingSettings,
    create_app=create_app,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
)
