"""Bootstrap of the referrals service."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.referrals import api, handlers, notifications, service
from services.referrals.models import tables
from shared.app import Runtime, create_service_app
from shared.consumer import EventConsumer
from shared.notify import NotificationWorker, NotifySettings, sender_from_settings
from shared.settings import PORTS, ServiceSettings
from shared.spec import ServiceSpec

NAME = "referrals"
PORT = PORTS[NAME]


class ReferralsSettings(ServiceSettings, NotifySettings):
    model_config = SettingsConfigDict(env_prefix="REFERRALS_", extra="ignore", populate_by_name=True)

    service_name: str = NAME
    run_retention: bool = True
    """Anonymise cases past retention in this process, now and then (safe in every instance)."""
    retention_closed_days: float = 365.0
    """A closed or cancelled referral unchanged this long is anonymised."""
    retention_kept_days: float = 730.0
    """An open referral taken this long ago is flagged for review (GET /v1/retention/review), never anonymised."""
    consumer_group: str = "referrals"
    """Reads fulfilment's status events: where each request is, and when it closed."""
    retention_poll_seconds: float = 3600.0
    notify_residents: bool = True
    """Send a resident who agreed (`consent.to_notify`) their reference, and word when help is arranged, by text
    or email (GOV.UK Notify: the `REFERRALS_NOTIFY_*` settings; with no API key, to var/notifications.log)."""
    notify_recent_hours: float = 24.0
    """An event older than this tells no one: a backfill or a replay is not news."""


def create_app(settings: ReferralsSettings | None = None) -> FastAPI:
    settings = settings or ReferralsSettings()
    recent = timedelta(hours=settings.notify_recent_hours)
    sender = sender_from_settings(settings)  # the erasure reaction's: it scrubs the local log the worker writes

    async def on_startup(runtime: Runtime) -> None:
        await service.seed_request_types(runtime.uow())
        if settings.run_retention:
            runtime.start_loop(app.state.retention, name="retention")
        if settings.notify_residents and settings.run_notifications:
            runtime.start_loop(app.state.notifier, name="notifications")

    def status_consumers(runtime: Runtime) -> list[EventConsumer]:
        consumer = runtime.consumer(
            group=settings.consumer_group,
            topics=[settings.topics.assignment_status],
            handlers=notifications.told_of_progress(handlers.status_handlers(), recent=recent)
            if settings.notify_residents
            else handlers.status_handlers(),
            batch_handler=notifications.told_of_progress_in_batches(handlers.status_batch(), recent=recent)
            if settings.notify_residents
            else handlers.status_batch(),
        )
        # An adviser's view of where a request is need not be fresher than a tenth of a second: on the
        # embedded broker a short fetch wait is paid in polls (its CPU and ours), so as reporting does.
        consumer.fetch_max_wait_ms = 100
        return [consumer]

    app = create_service_app(
        title="Kent Together: referrals",
        settings=settings,
        tables=tables,
        routers=[api.router, notifications.router],
        consumers=status_consumers,
        on_startup=on_startup,
        own_idempotency_paths=frozenset({"/v1/referrals"}),  # the intake keeps the key with the referral
    )
    app.state.request_types = service.RequestTypes()
    runtime = app.state.runtime
    runtime.reactions.update(notifications.reactions(recent=recent, sender=sender, tell=settings.notify_residents))
    app.state.notifier = NotificationWorker.from_settings(
        settings, db=runtime.db, tables=notifications.TABLES, keyring=runtime.keyring
    )
    # The "create" audit record commits with the referral: no second transaction per referral.
    app.state.intake = service.IntakeQueue(uow_factory=runtime.uow, audit=runtime.audit)
    app.state.retention = service.RetentionScheduler(
        uow_factory=runtime.uow,
        poll_seconds=settings.retention_poll_seconds,
        closed_for=timedelta(days=settings.retention_closed_days),
        kept_for=timedelta(days=settings.retention_kept_days),
        audit=runtime.audit,
    )
    return app


SPEC = ServiceSpec(
    name=NAME,
    port=PORT,
    settings_class=ReferralsSettings,
    create_app=create_app,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    rekey_indexes=service.REKEY_INDEXES,
    publish_state_page=service.publish_state_page,
)
