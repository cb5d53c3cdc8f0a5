"""Bootstrap of the actions service."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.actions import api
from services.actions.models import tables
from shared.app import create_service_app
from shared.settings import ServiceSettings

NAME = "actions"
PORT = 8003


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
