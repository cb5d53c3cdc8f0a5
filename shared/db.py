"""Async SQLAlchemy for every service: SQLite and PostgreSQL both first-class."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import BigInteger, DateTime, Integer, MetaData, Table, TypeDecorator, event, insert, text
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
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
    synchronous: str = "FULL",
    writers: _WriteTurns | None = None,
) -> AsyncEngine:
    """An engine tuned for the database behind `url` (`foreign_keys=False`: SQLite migrations only, see below).

    `reading`: SQLite transactions that only read start deferred, taking no write lock
    (WAL gives them a snapshot beside any writer); PostgreSQL needs no such engine.
    `synchronous`: SQLite's, FULL unless a lost commit only repeats work (`Database.unsynced_sessions`).
    `writers`: the write turns of another engine on the same file, so the two queue together.
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
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
            cursor.close()

        if reading:

            @event.listens_for(engine.sync_engine, "begin")
            def _sqlite_begin_deferred(conn: Connection) -> None:
                conn.exec_driver_sql("BEGIN")  # a reader takes no lock: WAL gives it a snapshot

            return engine
        writers = writers or _WriteTurns(timeout_seconds=busy_timeout_seconds)

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin_immediate(conn: Connection) -> None:
            # Take the write lock at BEGIN, so two writers queue instead of
            # deadlocking on a read-to-write upgrade. This process's writers queue
            # here first, in order, so SQLite's own busy handler is rarely met.
            writers.take(conn)
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                writers.give_back(conn.connection)
                raise

        # The turn passes on once SQLite has committed (or rolled back), not before: a next
        # BEGIN IMMEDIATE sent during the COMMIT's fsync would meet the busy handler's sleeps.
        dialect = engine.sync_engine.dialect
        for hook in ("do_commit", "do_rollback"):  # this engine's dialect instance only
            setattr(dialect, hook, writers.giving_back_after(getattr(dialect, hook)))
        # A connection that goes back to the pool, or is thrown away, mid-transaction gives its turn back too.
        event.listen(engine.sync_engine.pool, "checkin", lambda dbapi, _record: writers.give_back(dbapi))
        event.listen(engine.sync_engine.pool, "invalidate", lambda dbapi, _record, _e: writers.give_back(dbapi))
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


class _WriteTurns:
    """One SQLite writer at a time in this process, each waiting its turn on the event loop.

    SQLite lets one transaction write at once; a second `BEGIN IMMEDIATE` waits in
    SQLite's busy handler, which sleeps 1, 2, 5, 10 … up to 100 ms between tries and
    so wakes long after the lock is free. Under intake at 100 referrals/s that sleeping
    was most of what referrals' database threads did (py-spy --native: 181 of 210
    samples in `sqlite3InvokeBusyHandler`), and the relay's "published" mark, the
    status consumer and intake's group commit waited on each other in it. Here a
    writer awaits an asyncio lock instead (`await_only`, inside SQLAlchemy's greenlet),
    woken the moment the last one commits. Another process on the same file (a CLI
    command, a second instance) still meets the busy handler, as before.

    The turn is given back once the transaction has committed or rolled back, or when
    its connection goes back to the pool or is invalidated mid-transaction.
    """

    def __init__(self, *, timeout_seconds: float = 30.0) -> None:
        self.timeout_seconds = timeout_seconds
        """As SQLite's busy timeout: a writer that waits longer fails ("database is locked"), never hangs."""
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        """One lock per event loop: an asyncio lock belongs to the loop it first waited on."""
        self._held: dict[int, asyncio.Lock] = {}
        """The turn each DBAPI connection (by id) holds, while its transaction is open."""

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def take(self, conn: Connection) -> None:
        from sqlalchemy.util import await_only

        lock = self._lock()
        await_only(self._acquire(lock))
        self._held[id(conn.connection.dbapi_connection)] = lock

    async def _acquire(self, lock: asyncio.Lock) -> None:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await lock.acquire()
        except TimeoutError:
            # SQLAlchemy's error, as when SQLite's busy timeout expires: raised in the `begin` event, which
            # SQLAlchemy does not wrap, a bare sqlite3 error reached an API caller as a 500, not a 503.
            message = f"database is locked: no write turn in {self.timeout_seconds:g} s (a writer inside another?)"
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError(message)) from None

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """The write turn held by a block of code, not by a connection's transaction (`Database.insert_at_once`)."""
        lock = self._lock()
        await self._acquire(lock)
        try:
            yield
        finally:
            lock.release()

    def give_back(self, connection: Any) -> None:
        """`connection`: the DBAPI connection, or SQLAlchemy's pooled proxy of it."""
        lock = self._held.pop(id(getattr(connection, "dbapi_connection", None) or connection), None)
        if lock is not None and lock.locked():
            lock.release()

    def giving_back_after(self, end: Callable[[Any], None]) -> Callable[[Any], None]:
        """The dialect's `do_commit` or `do_rollback`, then the turn given back."""

        def ended(connection: Any) -> None:
            try:
                end(connection)
            finally:
                self.give_back(connection)

        return ended


@dataclass(frozen=True)
class _Insert:
    sql: str
    columns: list[tuple[str, Callable[[Any], Any] | None]]
    """For each parameter, in order: its column, and the column type's conversion for the driver."""

    def parameters(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        columns = self.columns
        return [tuple(row[n] if convert is None else convert(row[n]) for n, convert in columns) for row in rows]


def _insert_many(connection: sqlite3.Connection, inserts: Sequence[tuple[_Insert, list[tuple[Any, ...]]]]) -> None:
    for statement, parameters in inserts:
        connection.executemany(statement.sql, parameters)


def _insert_and_commit(
    connection: sqlite3.Connection, inserts: Sequence[tuple[_Insert, list[tuple[Any, ...]]]]
) -> None:
    """In the driver's thread: one transaction of inserts, rolled back whole if any fails."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        _insert_many(connection, inserts)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Database:
    """One service's engine and session factory, built once at start-up."""

    def __init__(self, url: str, *, pool_size: int = 10, busy_timeout_seconds: float = 30.0):
        self.url = url
        writers = self._writers = _WriteTurns(timeout_seconds=busy_timeout_seconds)  # one queue of writers for the file
        self._inserts: dict[tuple[str, tuple[str, ...]], _Insert | None] = {}
        self.engine = create_engine(
            url, pool_size=pool_size, busy_timeout_seconds=busy_timeout_seconds, writers=writers
        )
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
        self.unsynced_engine = (
            create_engine(
                url,
                pool_size=2,
                busy_timeout_seconds=busy_timeout_seconds,
                synchronous="NORMAL",
                writers=writers,
            )
            if self.dialect == "sqlite"
            else None
        )
        self.unsynced_sessions = (
            async_sessionmaker(self.unsynced_engine, expire_on_commit=False) if self.unsynced_engine else self.sessions
        )
        """For writes whose loss in a power cut only repeats work, never loses any: the relay's "published" marks
        (an event marked again is sent again, and every consumer's inbox drops the copy). On SQLite these commit
        without an fsync (synchronous=NORMAL: in WAL mode still safe from a crash of the process, kill -9
        included), so they hold the one write lock for less time; PostgreSQL: the usual sessions."""

    def compiled_insert(self, table: Table, columns: tuple[str, ...]) -> _Insert | None:
        """SQLite: an INSERT of these columns as the driver takes it, with each column's conversion; None if
        the table fills others itself (a Python-side default), which only SQLAlchemy's own execution does."""
        key = (table.fullname, columns)
        if key not in self._inserts:
            dialect = self.engine.sync_engine.dialect
            compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
            names = tuple(compiled.positiontup or ())
            self._inserts[key] = (
                _Insert(str(compiled), [(n, table.c[n].type.bind_processor(dialect)) for n in names])
                if sorted(names) == sorted(columns)
                else None
            )
        return self._inserts[key]

    async def insert_at_once(self, inserts: Sequence[tuple[_Insert, list[tuple[Any, ...]]]]) -> None:
        """SQLite: these inserts in one transaction, handed to the connection's thread in one go.

        Through SQLAlchemy each statement of a transaction is a round trip from the event
        loop to the driver's thread and back; on a busy loop each return waits its turn
        among every other task, and the write lock is held all the while (an intake batch
        held it 42 ms at 100 referrals/s, for ~3 ms of SQLite's own work). Here the
        process's write turn is taken, then BEGIN IMMEDIATE, every insert, and COMMIT
        run in the thread back to back. sqlite3's IntegrityError comes back as
        SQLAlchemy's, as from `session.execute`; nothing is left written on any failure.
        """
        async with self.engine.connect() as connection:
            pooled = await connection.get_raw_connection()
            async with self._writers.turn():
                await self._in_driver_thread(pooled.driver_connection, _insert_and_commit, inserts)

    async def insert_in(self, driver: Any, inserts: Sequence[tuple[_Insert, list[tuple[Any, ...]]]]) -> None:
        """SQLite: these inserts, in the transaction open on `driver` (aiosqlite's connection), in one go."""
        await self._in_driver_thread(driver, _insert_many, inserts)

    @staticmethod
    async def _in_driver_thread(driver: Any, work: Callable[..., None], inserts: Sequence[Any]) -> None:
        try:
            await driver._execute(work, driver._conn, inserts)  # aiosqlite's queue to the connection's thread
        except sqlite3.IntegrityError as error:
            raise IntegrityError("INSERT (at once)", None, error) from error
        except sqlite3.OperationalError as error:
            raise OperationalError("INSERT (at once)", None, error) from error

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        for other in (self.read_engine, self.unsynced_engine):
            if other is not None:
                await other.dispose()


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
