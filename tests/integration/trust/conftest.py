"""Fixtures for the cross-service trust tests: every installed service, running, on its own database."""

from __future__ import annotations

import contextlib

import pytest

from tests.support.apps import running
from tests.support.services import build_app, make_settings, service_names, sqlite_database


@pytest.fixture(scope="session")
def shared_resources():
    """What some services accept ready-made, to save loading it per app (fulfilment's postcode directory)."""
    resources = {}
    if "fulfilment" in service_names():
        from services.fulfilment.postcodes import PostcodeDirectory

        resources["directory"] = PostcodeDirectory.load()
    return resources


@pytest.fixture
def sqlite_databases(tmp_path, tmp_path_factory) -> dict[str, str]:
    """A migrated SQLite database per installed service (made here: migrations cannot run inside the test's loop)."""
    scratch = tmp_path_factory.getbasetemp()
    return {name: sqlite_database(name, tmp_path=tmp_path, scratch=scratch) for name in service_names()}


@pytest.fixture
def start_service(tmp_path, sqlite_databases, broker, signing_key, unique, shared_resources):
    """`async with start_service(name, **overrides) as client`: the service on a fresh SQLite database."""

    @contextlib.asynccontextmanager
    async def start(name: str, *, database_url: str | None = None, **overrides):
        url = database_url or sqlite_databases[name]
        settings = make_settings(
            name,
            database_url=url,
            broker=broker,
            signing_key=signing_key,
            unique=unique,
            var_dir=tmp_path / "var",
            **overrides,
        )
        app = build_app(name, settings, **shared_resources)
        async with running(app) as client:
            client.app = app
            client.settings = settings
            yield client

    return start
