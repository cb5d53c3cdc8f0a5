"""Async SQLAlchemy for every service: SQLite and PostgreSQL both first-class."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import BigInteger, DateTime, Integer, MetaData, TypeDecorator, event, text
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config


# Integer on SQLite so the column is the rowid alias and autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """A service's own metadata, with constraint names Alembic can rely on."""
    return MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A random (version 4) UUID as text: `str(uuid.uuid4())` without building a UUID object.

    Hot paths make several per referral (its id, its requests', its events'); the UUID
    class's constructor and `__str__` were 3% of intake's CPU.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    foreign_keys: bool = True,
    reading: bool = False,
    busy_timeout_seconds: float = 30.0,
) -> AsyncEngine:
    """An engine tuned for the database behind `url` (`foreign_keys=False`: SQLite migrations only, see below).

    `reading`: SQLite transactions that only read start deferred, taking no write lock
    (WAL gives them a snapshot beside any writer); PostgreSQL needs no such engine.
    """
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            connect_args={"timeout": busy_timeout_seconds},
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's BEGIN below be the only one (the driver's own is off).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # WAL lets readers and the relay work beside writers; FULL makes a
            # commit durable before we answer 201.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin_immediate(conn: Connection) -> None:
            # Take the write lock at BEGIN, so two writers queue instead of
            # deadlocking on a read-to-write upgrade; a reader takes none.
            conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

        return engine
    # No pre-ping: a round trip on every checkout costs more than it saves; a dead
    # connection fails one transaction, which callers retry.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Database:
    """One service's engine and session factory, built once at start-up."""

    def __init__(self, url: str, *, pool_size: int = 10, busy_timeout_seconds: float = 30.0):
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, busy_timeout_seconds=busy_timeout_seconds)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.dialect = "sqlite" if is_sqlite(url) else self.engine.dialect.name
        self.read_engine = (
            create_engine(url, pool_size=pool_size, reading=True, busy_timeout_seconds=busy_timeout_seconds)
            if self.dialect == "sqlite"
            else None
        )
        self.read_sessions = (
            async_sessionmaker(self.read_engine, expire_on_commit=False) if self.read_engine else self.sessions
        )
        """For use cases that only read: on SQLite they never wait for (or hold) the write lock."""

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not None:
            await self.read_engine.dispose()


def migrations_dir(service: str | Path) -> Path:
    """`service` as a migrations directory, or the name of a declared service (shared/spec.py)."""
    if isinstance(service, Path):
        return service
    from shared.spec import migrations_of

    return migrations_of(service)


def alembic_config(service: str | Path, url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir(service)))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["database_url"] = url
    return config


def upgrade(service: str | Path, url: str, revision: str = "head") -> None:
    """Apply a service's Alembic migrations (blocking; call from a thread in async code)."""
    from alembic import command

    command.upgrade(alembic_config(service, url), revision)


def run_migrations(target_metadata: MetaData, *, default_url: Callable[[], str] | None = None) -> None:
    """The body of every service's migrations/env.py.

    The database is the one `kent-together migrate` (or a test) passes in; else the ini's `sqlalchemy.url`;
    else, for the plain `alembic` commands, the service's own setting (`default_url`).
    """
    from alembic import context

    url = (
        context.config.attributes.get("database_url")
        or context.config.get_main_option("sqlalchemy.url")
        or (default_url() if default_url is not None else None)
    )
    if not url:
        raise RuntimeError("no database to migrate: give the service's DATABASE_URL setting")
    render_as_batch = is_sqlite(url)

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=render_as_batch,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    async def run_async() -> None:
        # SQLite: batch mode rebuilds a table (copy, drop, rename), which foreign keys pointing at
        # it would refuse; they are off while migrating, as SQLite's ALTER TABLE procedure says,
        # and checked before the commit.
        engine = create_async_engine(url) if not is_sqlite(url) else create_engine(url, foreign_keys=False)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
            if render_as_batch:
                broken = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
            await connection.commit()
        await engine.dispose()

    asyncio.run(run_async())
