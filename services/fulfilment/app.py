"""Bootstrap of the fulfilment service."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.fulfilment import api, assignees, handlers, notifications, service
from services.fulfilment.hubs import Hub, hub_reference_data_problems
from services.fulfilment.metrics import assignment_families
from services.fulfilment.models import tables
from services.fulfilment.postcodes import PostcodeDirectory
from services.fulfilment.webhooks import WebhookDispatcher
from shared.app import Runtime, create_service_app
from shared.bus import ensure_topics
from shared.kafka_security import KafkaSecurity
from shared.notify import NotificationWorker, NotifySettings
from shared.settings import PORTS, ServiceSettings
from shared.spec import ServiceSpec

NAME = "fulfilment"
PORT = PORTS[NAME]

log = logging.getLogger(__name__)


class FulfilmentSettings(ServiceSettings, NotifySettings):
    model_config = SettingsConfigDict(env_prefix="FULFILMENT_", extra="ignore", populate_by_name=True)

    service_name: str = NAME
    consumer_group: str = "fulfilment"
    inbox_retention_days: float | None = 30.0
    """Above the referrals topic's 7 days (the only topic fulfilment reads), with room for an outage."""
    triage_within_hours: float = 4.0
    """How soon a person must place a request in triage before it is escalated."""
    out_of_area_within_hours: float = 24.0
    """How soon an out-of-area request must be passed to its council before it is escalated."""
    run_scheduler: bool = True
    """Look for missed deadlines in this process (safe in every instance)."""
    sla_poll_seconds: float = 30.0
    run_webhooks: bool = True
    webhook_poll_seconds: float = 1.0
    webhook_max_attempts: int = 8
    webhook_backoff_seconds: float = 5.0
    """The first retry's wait; each later one doubles it, up to an hour."""
    webhook_timeout_seconds: float = 10.0
    create_hub_topics: bool = True
    """Create each hub's topic at start-up (production clusters rarely create topics on first use)."""
    hub_topic_partitions: int = 3
    notify_hubs: bool = True
    """Email each hub's address of each new "today" request and each missed deadline (GOV.UK Notify: the
    `FULFILMENT_NOTIFY_*` settings; with no API key, to var/notifications.log)."""
    notify_recent_hours: float = 24.0
    """An event older than this tells no one: a replay or a demo's backfill is not news."""
    staff_seen_every_seconds: float = 300.0
    """How often a hub worker's calls refresh their entry in the hub's staff directory (`last_seen_at`)."""
    case_url: str = "http://127.0.0.1:8005/hub/cases/{id}"
    """The hub's page of a case, linked from the emails; `{id}` is the assignment's id."""


def create_app(settings: FulfilmentSettings | None = None, *, directory: PostcodeDirectory | None = None) -> FastAPI:
    """The service; give `directory` to share one already loaded (tests), or it is loaded at start-up."""
    settings = settings or FulfilmentSettings()
    routing = service.Routing(
        directory=directory,
        triage_within=timedelta(hours=settings.triage_within_hours),
        out_of_area_within=timedelta(hours=settings.out_of_area_within_hours),
    )

    async def on_startup(runtime: Runtime) -> None:
        await service.seed_hubs(runtime.uow())
        if routing.directory is None:
            # About a third of a second, once: every lookup after it is in memory.
            routing.directory = await asyncio.to_thread(PostcodeDirectory.load)
        hub_rows = await service.list_hubs(runtime.uow())
        for problem in hub_reference_data_problems(
            [Hub(r["slug"], r["name"], r["district_code"]) for r in hub_rows], routing.directory
        ):
            log.warning("hub reference data: %s", problem)
        if settings.create_hub_topics:
            topics = [settings.topics.hub(r["slug"]) for r in hub_rows] + [settings.topics.assignment_status]
            runtime.tasks.append(
                asyncio.create_task(
                    _create_topics(
                        settings.kafka_bootstrap_servers,
                        topics,
                        partitions=settings.hub_topic_partitions,
                        security=settings.kafka,
                    ),
                    name="create-hub-topics",
                )
            )
        if settings.run_scheduler:
            runtime.start_loop(app.state.scheduler, name="sla-scheduler")
        if settings.run_webhooks:
            runtime.start_loop(app.state.webhooks, name="webhooks")
        if settings.notify_hubs and settings.run_notifications:
            runtime.start_loop(app.state.notifier, name="notifications")

    app = create_service_app(
        title="Kent Together: fulfilment",
        settings=settings,
        tables=tables,
        routers=[api.router, assignees.router, notifications.router],
        consumers=lambda runtime: [
            runtime.consumer(
                group=settings.consumer_group,
                topics=[settings.topics.referrals],
                handlers=handlers.referral_handlers(routing=routing, topics=settings.topics),
                batch_handler=handlers.referral_batch(routing=routing, topics=settings.topics),
            )
        ],
        on_startup=on_startup,
    )
    runtime = app.state.runtime
    app.add_middleware(assignees.StaffSeen, uow_factory=runtime.uow, every_seconds=settings.staff_seen_every_seconds)
    app.state.routing = routing
    app.state.metrics.add_source(lambda: assignment_families(runtime.db))
    app.state.scheduler = service.EscalationScheduler(
        uow_factory=runtime.uow,
        topics=settings.topics,
        poll_seconds=settings.sla_poll_seconds,
    )
    app.state.webhooks = WebhookDispatcher(
        db=runtime.db,
        uow_factory=runtime.uow,
        poll_seconds=settings.webhook_poll_seconds,
        max_attempts=settings.webhook_max_attempts,
        backoff_seconds=settings.webhook_backoff_seconds,
        timeout_seconds=settings.webhook_timeout_seconds,
        tracing=runtime.tracing,
    )
    if settings.notify_hubs:
        runtime.reactions.update(
            notifications.reactions(case_url=settings.case_url, recent=timedelta(hours=settings.notify_recent_hours))
        )
    app.state.notifier = NotificationWorker.from_settings(
        settings, db=runtime.db, tables=notifications.TABLES, keyring=runtime.keyring
    )
    return app


async def _create_topics(
    bootstrap_servers: str, topics: list[str], *, partitions: int, security: KafkaSecurity
) -> None:
    """Best effort, in the background: the service works without (a broker may create topics on first use)."""
    for attempt in range(10):
        try:
            await ensure_topics(bootstrap_servers, {topic: partitions for topic in topics}, security=security)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.info("hub topics not created yet (%s); trying again", error)
            await asyncio.sleep(min(30, 2**attempt))


SPEC = ServiceSpec(
    name=NAME,
    port=PORT,
    settings_class=FulfilmentSettings,
    create_app=create_app,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    publish_state_page=service.publish_state_page,
)
