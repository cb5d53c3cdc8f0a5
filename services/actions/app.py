"""Bootstrap of the actions service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.actions import api, service
from services.actions.models import tables
from shared.app import create_service_app
from shared.settings import PORTS, ServiceSettings
from shared.spec import ServiceSpec

NAME = "actions"
PORT = PORTS[NAME]


class ActionsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ACTIONS_", extra="ignore", populate_by_name=True)

    service_name: str = NAME
    max_import_bytes: int = 5 * 1024 * 1024
    """The largest plan file an import accepts (the KRF plan is 84 kB)."""


def create_app(settings: ActionsSettings | None = None) -> FastAPI:
    settings = settings or ActionsSettings()
    return create_service_app(
        title="Kent Together: actions",
        settings=settings,
        tables=tables,
        routers=[api.router, api.public],
    )


SPEC = ServiceSpec(
    name=NAME,
    port=PORT,
    settings_class=ActionsSettings,
    create_app=create_app,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    publish_state_page=service.publish_state_page,
)
