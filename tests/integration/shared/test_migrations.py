"""Every service's migrations build exactly the tables its code declares, on both databases."""

import asyncio
import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from shared.cli import installed_services
from shared.db import create_engine, upgrade

SERVICES = [name for name, _ in installed_services()]


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_match_the_models(service, backend, tmp_path, postgres_templates):
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        upgrade(service, url)
    else:
        url = postgres_templates.fresh_database(service)
    metadata = importlib.import_module(f"services.{service}.models").metadata

    async def differences():
        engine = create_engine(url)
        async with engine.connect() as connection:
            found = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
        await engine.dispose()
        return found

    assert asyncio.run(differences()) == []
