"""The unit of work: one transaction per use case, events committed with the change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
import pydantic_core
from sqlalchemy import JSON, Table, TypeDecorator, event, insert, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import await_only

from shared import tracing
from shared.crypto import Keyring
from shared.db import Database, new_id, utcnow
from shared.events import REGISTRY, CloudEvent, EventData

if TYPE_CHECKING:
    from shared.settings import Topics


@dataclass(frozen=True)
class EncodedEvent:
    """A CloudEvent already serialised (see `UnitOfWork.publish_data`)."""

    id: str
    type: str
    subject: str
    payload: bytes

    def to_bytes(self) -> bytes:
        return self.payload


Reaction = Callable[["UnitOfWork", dict[str, Any]], Awaitable[None]]
"""Given the unit of work and an event's `data`, before it commits: writes what follows from the event."""


class UnitOfWork:
    """`async with uow: ...; uow.publish(event); await uow.commit()`.

    Helpers never commit; leaving the block without `commit()` rolls back,
    events included. A service's repositories are attributes of it
    (`uow.referrals`), made for each transaction from `repositories`.
    An event goes to the topics its contract declares (`EventData.topics`,
    the `Topics` fields read in `topics`), unless `topic=` says otherwise.
    """

    def __init__(
        self,
        db: Database,
        *,
        source: str,
        outbox: Table,
        on_commit: Callable[[], None] | None = None,
        keyring: Keyring | None = None,
        sealed_topic: Callable[[str], bool] = lambda topic: True,
        reading: bool = False,
        repositories: Mapping[str, Callable[[UnitOfWork], object]] | None = None,
        topics: Topics | None = None,
        reactions: Mapping[str, Reaction] | None = None,
        inserts_at_commit: bool = False,
    ) -> None:
        self._made_with = {
            "source": source,
            "outbox": outbox,
            "on_commit": on_commit,
            "keyring": keyring,
            "sealed_topic": sealed_topic,
            "reading": reading,
            "repositories": repositories,
            "topics": topics,
            "reactions": reactions,
            "inserts_at_commit": inserts_at_commit,
        }
        self.db = db
        self.inserts_at_commit = inserts_at_commit and db.dialect == "sqlite"
        """SQLite: `insert_rows` keeps its rows until the next statement on `session` or `commit()`, which send
        every row kept (at commit with the outbox's) to the database's thread in one go (`Database.insert_at_once`,
        `Database.insert_in`), not a round trip through the event loop per statement. The order of statements,
        what each sees, and all-or-nothing are as without it; a broken constraint is raised then, not at
        `insert_rows`. PostgreSQL: no difference (its `insert_rows` is a COPY already)."""
        self._kept: list[tuple[Table, list[dict[str, Any]]]] = []
        self.reactions = reactions or {}
        """Event type -> what else its commit writes, in the same transaction (a notification to send)."""
        self.reading = reading
        """Only reads: on SQLite its transaction takes no write lock, and it cannot commit."""
        self.source = source
        self.outbox = outbox
        self.on_commit = on_commit
        self.keyring = keyring
        """The data keys of a service holding personal data: its use cases seal and open with them."""
        self.sealed_topic = sealed_topic
        """Which topics' events are sealed in the outbox (with a keyring): those that carry personal data."""
        self.repositories = dict(
            repositories if repositories is not None else outbox.metadata.info.get("repositories", {})
        )
        """name -> factory(uow): `uow.<name>` is the repository, one per transaction.

        By default the service's own, registered with its tables (ServiceTables.repositories)."""
        self._repositories: dict[str, object] = {}
        self.topics = topics
        """The platform's `Topics` (shared/settings.py): where contracts' declared topics are."""
        self._routes: dict[str, list[str]] = {}
        self.session: AsyncSession
        self._events: list[tuple[str, str | None, CloudEvent | EncodedEvent]] = []
        self._audit: tuple[Table, list[dict[str, Any]]] | None = None
        self._open = False

    async def __aenter__(self) -> UnitOfWork:
        if self._open:
            # Entering again would put a new session in place of the open one, whose
            # transaction (a consumer's inbox row, say) would then never commit and whose
            # connection would never be returned: a helper given an open unit of work uses it.
            raise RuntimeError("this unit of work is already open: use it, do not enter it again")
        self._open = True
        self.session = (self.db.read_sessions if self.reading else self.db.sessions)()
        self._events = []
        self._repositories = {}
        self._kept = []
        if self.inserts_at_commit:
            # Before any statement (and at a transaction's start, for a connection used directly): the rows kept.
            sync_session = self.session.sync_session
            event.listen(sync_session, "do_orm_execute", lambda state: self._send_kept(state.session.connection()))
            event.listen(sync_session, "after_begin", lambda _s, _t, connection: self._send_kept(connection))
        return self

    def like(self, **changes: Any) -> UnitOfWork:
        """Another unit of work on the same database, keys and repositories, with `changes` (`reading=True`)."""
        return UnitOfWork(self.db, **{**self._made_with, **changes})

    def _send_kept(self, connection: Any) -> None:
        """In SQLAlchemy's greenlet: the rows kept so far, inserted in the transaction `connection` is in."""
        if not self._kept:
            return
        kept, self._kept = self._kept, []
        inserts: list[tuple[Any, list[tuple[Any, ...]]]] = []
        for table, rows in kept:
            compiled = self.db.compiled_insert(table, tuple(rows[0]))
            if compiled is None:  # a table that fills a column itself: through SQLAlchemy, in its place
                if inserts:
                    await_only(self.db.insert_in(connection.connection.driver_connection, inserts))
                    inserts = []
                connection.execute(insert(table), rows)
            else:
                inserts.append((compiled, compiled.parameters(rows)))
        if inserts:
            await_only(self.db.insert_in(connection.connection.driver_connection, inserts))

    def __getattr__(self, name: str) -> Any:
        # Only for names not found otherwise: the repositories (`uow.referrals`).
        factories = self.__dict__.get("repositories") or {}
        if name not in factories:
            raise AttributeError(name)
        made = self.__dict__["_repositories"]
        if name not in made:
            made[name] = factories[name](self)
        return made[name]

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.session.in_transaction():
                await self.session.rollback()
        finally:
            self._open = False
            await self.session.close()
            self._events = []
            self._kept = []

    def now(self) -> datetime:
        return utcnow()

    def routed(self, event_type: str) -> list[str]:
        """The topics a contract declares for itself (`EventData.topics`), as this platform names them."""
        known = self._routes.get(event_type)  # a batch of intake routes three events per referral
        if known is not None:
            return known
        declared = REGISTRY[event_type].topics
        if self.topics is None or not declared:
            raise ValueError(f"{event_type} names no topic this unit of work knows: pass topic=")
        names = [getattr(self.topics, field) for field in declared]
        if any("{" in name for name in names):  # a per-hub topic: only the caller knows which hub
            raise ValueError(f"{event_type} goes to a topic per hub: pass topic=")
        self._routes[event_type] = names
        return names

    def publish(
        self, data: EventData, *, topic: str | None = None, key: str | None = None, time: datetime | None = None
    ) -> CloudEvent:
        """Record an event to be published once this unit of work commits: to `topic`, else where its contract says.

        On several topics, each has its own envelope (an event id is unique in the outbox).
        """
        events = []
        for name in [topic] if topic is not None else self.routed(data.type):
            event = data.envelope(source=self.source, time=time)
            event.traceparent = tracing.current_traceparent()
            event.tracestate = tracing.current_tracestate()
            self._events.append((name, key or event.subject, event))
            events.append(event)
        return events[0]

    def publish_data(
        self,
        event_type: str,
        *,
        subject: str,
        data: dict[str, Any],
        topic: str | None = None,
        key: str | None = None,
        trace: tuple[str | None, str | None] | None = None,
    ) -> EncodedEvent:
        """Record an event from its `data` given as the contract's `model_dump()` would give it.

        For hot paths: the envelope is the one `publish` makes, serialised in one
        step by pydantic-core (so times and dates are written exactly as the
        Pydantic contracts write them), without building the models. The caller
        answers for `data` matching its contract (test it against the model).
        Routed as `publish` routes (one topic here: a hot path's contracts declare one).
        `trace`: the (traceparent, tracestate) the event carries, when the work is done for
        a caller outside its context (intake's group commit); else the current trace's. Given
        as it is, it costs nothing, where entering `tracing.continued` for each of a batch's
        referrals was 7% of intake's CPU.
        """
        if topic is None:
            [topic] = self.routed(event_type)
        event_id = new_id()
        envelope = {
            "specversion": "1.0",
            "id": event_id,
            "source": self.source,
            "type": event_type,
            "time": utcnow(),
            "subject": subject,
            "datacontenttype": "application/json",
        }
        if trace is not None:
            traceparent, tracestate = trace
        else:
            traceparent = tracing.current_traceparent()
            tracestate = tracing.current_tracestate() if traceparent is not None else None
        if traceparent is not None:
            envelope["traceparent"] = traceparent
            if tracestate:
                envelope["tracestate"] = tracestate
        envelope["data"] = data
        event = EncodedEvent(event_id, event_type, subject, pydantic_core.to_json(envelope))
        self._events.append((topic, key or subject, event))
        return event

    async def insert_rows(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert many rows (each with the same keys) in this transaction.

        On PostgreSQL with asyncpg, one COPY rather than an INSERT executed per
        row: far less work per row for Python and for the server. Elsewhere an
        executemany. A constraint violation is SQLAlchemy's IntegrityError either way.
        """
        if not rows:
            return
        if self.inserts_at_commit:
            self._kept.append((table, rows))
            return
        if self.db.dialect != "postgresql" or self.db.engine.dialect.driver != "asyncpg":
            await self.session.execute(insert(table), rows)
            return
        columns = list(rows[0])
        # As SQLAlchemy's JSON type binds them: serialised, and None as JSON null unless the column says otherwise.
        json_columns = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, JSON)]
        null_as_sql = {i: cast(JSON, table.c[columns[i]].type).none_as_null for i in json_columns}
        dialect = self.db.engine.dialect
        decorated = [  # the columns' own checks and conversions (UtcDateTime refuses naive datetimes)
            (i, cast("TypeDecorator[Any]", table.c[name].type))
            for i, name in enumerate(columns)
            if isinstance(table.c[name].type, TypeDecorator)
        ]
        records = []
        for row in rows:
            record = [row[name] for name in columns]
            for i in json_columns:
                value = record[i]
                if value is not None or not null_as_sql[i]:
                    record[i] = orjson.dumps(value).decode()
            for i, column_type in decorated:
                record[i] = column_type.process_bind_param(record[i], dialect)
            records.append(record)
        connection = await self.session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None  # asyncpg's connection, there while the pooled one is checked out
        if not raw.is_in_transaction():
            # SQLAlchemy's asyncpg adapter sends BEGIN with the first statement, not before: one through
            # it, so the COPY is inside this unit of work's transaction and rolls back with it.
            await self.session.execute(text("SELECT 1"))
        if not raw.is_in_transaction():
            raise RuntimeError("refusing to COPY outside a transaction")
        import asyncpg

        try:
            await raw.copy_records_to_table(table.name, columns=columns, records=records, schema_name=table.schema)
        except asyncpg.IntegrityConstraintViolationError as error:
            raise IntegrityError(f"COPY {table.name}", None, error) from error

    def _stored(self, topic: str, payload: bytes) -> bytes:
        """An event as the outbox keeps it: sealed if it carries personal data (the relay opens it to publish)."""
        if self.keyring is not None and self.sealed_topic(topic):
            return self.keyring.seal(payload)
        return payload

    def audit_with_commit(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Audit records for the next `commit()` to write in its transaction.

        Set before the use case runs (it is kept across `async with`): the change and
        the record of who made it then commit together or not at all.
        """
        self._audit = (table, rows)

    def take_unwritten_audit(self) -> tuple[Table, list[dict[str, Any]]] | None:
        """The audit records no commit wrote (the use case changed nothing), now handed to the caller."""
        audit, self._audit = self._audit, None
        return audit

    async def _commit_kept(self) -> None:
        """The rows kept, then the commit: all in one go if nothing has used the session yet."""
        if self.session.in_transaction() or any(
            self.db.compiled_insert(table, tuple(rows[0])) is None for table, rows in self._kept
        ):
            await self.session.run_sync(lambda session: self._send_kept(session.connection()))
            await self.session.commit()
            return
        kept, self._kept = self._kept, []
        inserts = [
            (compiled, compiled.parameters(rows))
            for table, rows in kept
            if (compiled := self.db.compiled_insert(table, tuple(rows[0]))) is not None
        ]
        await self.db.insert_at_once(inserts)

    async def commit(self) -> None:
        if self.reading:
            raise RuntimeError("a reading unit of work cannot commit: use a writing one (runtime.uow())")
        if self.reactions:
            for _, _, event in list(self._events):
                react = self.reactions.get(event.type)
                if react is not None:
                    data = event.data if isinstance(event, CloudEvent) else orjson.loads(event.payload)["data"]
                    await react(self, data)
        if self._audit is not None:
            table, rows = self._audit
            await self.insert_rows(table, rows)
            self._audit = None
        if self._events:
            created = utcnow()
            await self.insert_rows(
                self.outbox,
                [
                    {
                        "event_id": str(event.id),
                        "topic": topic,
                        "key": key,
                        "type": event.type,
                        "payload": self._stored(topic, event.to_bytes()),
                        "created_at": created,
                    }
                    for topic, key, event in self._events
                ],
            )
        if self.inserts_at_commit and self._kept:
            await self._commit_kept()
        else:
            await self.session.commit()
        published = bool(self._events)
        self._events = []
        if published and self.on_commit:
            self.on_commit()
