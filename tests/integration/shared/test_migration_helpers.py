"""shared/migrations.py's `create_outbox` and `create_inbox` make exactly the tables the services' migrations made."""

import asyncio

import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from shared.db import create_engine, new_metadata, upgrade
from shared.migrations import create_inbox, create_outbox, drop_inbox, drop_outbox

# The services whose first migration wrote the outbox and the inbox out by hand.
FIRST = ("referrals", "fulfilment", "actions", "reporting")


def shape(url: str) -> dict:
    """The outbox and inbox as the database holds them: columns, keys, unique constraints, indexes."""

    def describe(sync) -> dict:
        found = inspect(sync)
        tables = {}
        for name in ("outbox", "inbox"):
            if not found.has_table(name):
                tables[name] = None
                continue
            tables[name] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in found.get_columns(name)
                ],
                "primary_key": found.get_pk_constraint(name),
                "unique": sorted((u["name"], tuple(u["column_names"])) for u in found.get_unique_constraints(name)),
                "indexes": sorted(
                    (
                        i["name"],
                        tuple(i["column_names"]),
                        bool(i["unique"]),
                        sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items()),
                    )
                    for i in found.get_indexes(name)
                    # Both list the unique constraint's own index too: it is the constraint above
                    if not i["name"].startswith("sqlite_autoindex") and not i.get("duplicates_constraint")
                ),
            }
        return tables

    async def run():
        engine = create_engine(url)
        async with engine.connect() as connection:
            tables = await connection.run_sync(describe)
        await engine.dispose()
        return tables

    return asyncio.run(run())


def apply(url: str, *steps) -> None:
    """Run `steps(op)` as a migration would, in one transaction."""

    def run_steps(sync) -> None:
        op = Operations(MigrationContext.configure(sync, opts={"target_metadata": new_metadata()}))
        for step in steps:
            step(op)

    async def run():
        engine = create_engine(url)
        async with engine.begin() as connection:
            await connection.run_sync(run_steps)
        await engine.dispose()

    asyncio.run(run())


def empty(backend: str, name: str, tmp_path, postgres_templates) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
    return postgres_templates.empty_database(name)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_create_outbox_and_create_inbox_make_the_tables_the_services_migrations_made(
    backend, tmp_path, postgres_templates
):
    helped = empty(backend, "helped", tmp_path, postgres_templates)
    apply(helped, create_outbox, create_inbox)
    made = shape(helped)
    assert made["outbox"] is not None and made["inbox"] is not None
    assert {index[0] for index in made["outbox"]["indexes"]} == {"ix_outbox_created_at", "ix_outbox_to_publish"}
    for service in FIRST:
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / f'{service}.db'}"
            upgrade(service, url)
        else:
            url = postgres_templates.fresh_database(service)
        assert shape(url) == made, service


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_drop_outbox_and_drop_inbox_undo_what_the_helpers_made(backend, tmp_path, postgres_templates):
    url = empty(backend, "dropped", tmp_path, postgres_templates)
    apply(url, create_outbox, create_inbox)
    apply(url, drop_inbox, drop_outbox)
    assert shape(url) == {"outbox": None, "inbox": None}
