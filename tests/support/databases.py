"""Real databases for tests: each service migrated once into a template, copied per test."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from pathlib import Path

import asyncpg

from shared.db import upgrade
from suite import registry

POSTGRES_ADMIN_DSN = os.environ.get("KT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_sqlite_templates: dict[str, Path] = {}


def sqlite_template(service: str, scratch: Path) -> Path:
    """A SQLite file with every migration of `service` applied, made once per session."""
    if service not in _sqlite_templates:
        path = scratch / f"template-{service}-{uuid.uuid4().hex[:6]}.db"
        upgrade(registry.spec(service).migrations, f"sqlite+aiosqlite:///{path}")
        _sqlite_templates[service] = path
    return _sqlite_templates[service]


def _sqlalchemy_url(database: str) -> str:
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{database}"


async def _admin(*statements: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


class PostgresTemplates:
    """Per-session template databases on the local PostgreSQL server; a fresh copy per test."""

    def __init__(self):
        self.session = uuid.uuid4().hex[:8]
        self.templates: dict[str, str] = {}
        self.created: list[str] = []

    def fresh_database(self, service: str) -> str:
        if service not in self.templates:
            template = f"kt_tpl_{service}_{self.session}"
            asyncio.run(_admin(f'CREATE DATABASE "{template}"'))
            self.created.append(template)
            upgrade(registry.spec(service).migrations, _sqlalchemy_url(template))
            self.templates[service] = template
        name = f"kt_{service}_{self.session}_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.templates[service]}"'))
        self.created.append(name)
        return _sqlalchemy_url(name)

    def empty_database(self, service: str) -> str:
        """A database with no migration applied (to migrate step by step)."""
        name = f"kt_{service}_{self.session}_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return _sqlalchemy_url(name)

    def drop_all(self) -> None:
        async def drop():
            connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)  # one connection for them all
            try:
                for name in reversed(self.created):
                    try:
                        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    except asyncpg.PostgresError:
                        pass
            finally:
                await connection.close()

        asyncio.run(drop())


class WriteLock:
    """Another writer holding SQLite's write lock (a group commit, the relay, a consumer's batch, a CLI command).

    Taken in a thread: waiting for it must not stop the event loop, whose tasks may hold it a moment.
    """

    def __init__(self, path: str):
        self.path = path

    def _take(self):
        self.connection = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self.connection.execute("BEGIN IMMEDIATE")

    def _release(self):
        self.connection.execute("ROLLBACK")
        self.connection.close()

    async def __aenter__(self):
        await asyncio.to_thread(self._take)
        return self

    async def __aexit__(self, *exc):
        await asyncio.to_thread(self._release)
