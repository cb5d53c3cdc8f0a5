"""Bootstrap of the referrals service."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.referrals import api, service
from services.referrals.models import tables
from shared.app import Runtime, create_service_app
from shared.settings import ServiceSettings

NAME = "referrals"
PORT = 8001


class ReferralsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REFERRALS_", extra="ignore", populate_by_name=True)

    service_name: str = NAME


def create_app(settings: ReferralsSettings | None = None) -> FastAPI:
    settings = settings or ReferralsSettings()

    async def on_startup(runtime: Runtime) -> None:
        await service.seed_request_types(runtime.uow())

    app = create_service_app(
        title="Kent Together: referrals",
        settings=settings,
        tables=tables,
        routers=[api.router],
        on_startup=on_startup,
    )
    app.state.request_types = service.RequestTypes()
    runtime = app.state.runtime
    app.state.intake = service.IntakeQueue(uow_factory=runtime.uow, topics=settings.topics)
    return app
