"""The transactional outbox: events commit with the business change; a relay publishes them.

No request handler talks to Kafka. The relay publishes rows in id order, marks
them published, retries with back-off while the broker is away, and on
PostgreSQL several relays share the work (`FOR UPDATE SKIP LOCKED`).
Published rows are kept for `retention` so an operator can republish a range.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    Text,
    Update,
    any_,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import CursorResult

from shared import tracing
from shared.bus import OutgoingMessage, Producer
from shared.crypto import Keyring, is_sealed
from shared.db import BigId, Database, UtcDateTime, utcnow
from shared.events import STRUCTURED
from shared.lifecycle import StopsBetweenRounds
from shared.tracing import HEADER, STATE_HEADER

if TYPE_CHECKING:
    from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=True),
        Column("type", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("published_at", UtcDateTime, nullable=True),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_error", Text, nullable=True),
        # Only the rows still to publish: published rows are kept for a week and
        # must not make the relay's scan (or its index) grow with them.
        Index(
            "ix_outbox_to_publish",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
        Index("ix_outbox_created_at", "created_at"),
    )


class OutboxRelay(StopsBetweenRounds):
    """Publishes committed outbox rows to Kafka, at least once, in id order."""

    def __init__(
        self,
        *,
        db: Database,
        table: Table,
        producer: Producer,
        batch_size: int = 500,
        poll_seconds: float = 0.5,
        retention: timedelta = timedelta(days=7),
        max_backoff_seconds: float = 30.0,
        keyring: Keyring | None = None,
        mark_every_seconds: float = 0.2,
    ):
        self.db = db
        self.mark_every_seconds = mark_every_seconds
        """SQLite: how long sent rows may wait to be marked published while more keep coming (see `_mark_sent`)."""
        self._sent_up_to: int | None = None
        self._unmarked: list[int] = []
        self._marked_at: float | None = None
        self.table = table
        self.producer = producer
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.retention = retention
        self.max_backoff_seconds = max_backoff_seconds
        self.keyring = keyring
        """Opens the sealed rows (events with personal data) just before they are sent: Kafka gets them as ever."""
        self.last_error: str | None = None
        self.published_total = 0
        self.tracing: tracing.Tracing | None = None
        """The service's tracer: with export on, each message is sent in a producer span of its event's trace."""
        self._wake = asyncio.Event()
        self._last_purge = 0.0

    def notify(self) -> None:
        """A transaction just committed events: publish now rather than at the next poll."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; return how many were published."""
        t = self.table
        query = (
            select(t.c.id, t.c.topic, t.c.key, t.c.payload)
            .where(t.c.published_at.is_(None))
            .order_by(t.c.id)
            .limit(self.batch_size)
        )
        if self.db.dialect == "postgresql":
            # Row locks, not a table lock: other relays take the next rows and
            # intake goes on while this batch is in flight.
            async with self.db.sessions() as session, session.begin():
                rows = (await session.execute(query.with_for_update(skip_locked=True))).all()
                if rows:
                    await self._send(rows)
                    await session.execute(self._mark_published([r.id for r in rows]))
            return self._published(len(rows))
        # SQLite: one relay per database; never hold its single write lock while
        # waiting on the broker, or intake would wait too. Rows sent are marked a
        # few batches at a time (`_mark_sent`): the next batch is read after the
        # last one sent, not after its mark, which had to wait its turn for the
        # write lock (20 ms on average at 100 referrals/s) on every round.
        if self._sent_up_to is not None:
            query = query.where(t.c.id > self._sent_up_to)
        async with self.db.read_sessions() as session:  # a read: no write lock taken
            rows = (await session.execute(query)).all()
            await session.rollback()
        if rows:
            await self._send(rows)
            self._unmarked += [r.id for r in rows]
            self._sent_up_to = rows[-1].id
        now = asyncio.get_running_loop().time()
        if self._marked_at is None:
            self._marked_at = now
        if self._unmarked and (
            not rows
            or len(self._unmarked) >= 10 * self.batch_size  # one statement's worth of ids at most
            or now - self._marked_at >= self.mark_every_seconds
        ):
            await self._mark_sent()
        return self._published(len(rows))

    async def _mark_sent(self) -> None:
        """Mark the rows sent so far published, in one statement; then read from the start again.

        SQLite only: a writer holds the file's one write lock, so ids commit in order and
        "after the last id sent" misses nothing; starting again from the unpublished rows
        once all are marked also finds any an operator republished meanwhile. No fsync for
        the mark: lost in a crash or a power cut, the rows are sent again, and the inboxes
        drop the copies (at least once, as ever).
        """
        async with self.db.unsynced_sessions() as session, session.begin():
            await session.execute(self._mark_published(self._unmarked))
        self._unmarked = []
        self._sent_up_to = None
        self._marked_at = asyncio.get_running_loop().time()

    async def _mark_sent_on_the_way_out(self) -> None:
        """Stopping: mark what was sent, so a graceful restart sends nothing twice (best effort)."""
        if not self._unmarked:
            return
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(self._mark_sent())
        except Exception as error:  # they are sent again after the restart: harmless
            log.warning("outbox relay: could not mark %d sent rows on stop (%s)", len(self._unmarked), error)

    def _published(self, count: int) -> int:
        self.published_total += count
        return count

    async def _send(self, rows: Sequence[Row[*tuple[Any, ...]]]) -> None:
        messages = []
        for r in rows:
            payload = self._opened(r.payload)
            messages.append(
                OutgoingMessage(
                    topic=r.topic,
                    key=r.key.encode() if r.key else None,
                    value=payload,
                    headers=_headers(payload),
                )
            )
        if self.tracing is None or not self.tracing.exporting:
            await self.producer.send_many(messages)
            return
        with contextlib.ExitStack() as spans:
            for message in messages:
                headers = dict(message.headers)
                spans.enter_context(
                    self.tracing.span(
                        f"{message.topic} send",
                        kind=tracing.SpanKind.PRODUCER,
                        traceparent=headers.get(HEADER),
                        tracestate=headers.get(STATE_HEADER),
                        attributes={
                            "messaging.system": "kafka",
                            "messaging.operation.type": "send",
                            "messaging.destination.name": message.topic,
                            "messaging.kafka.message.key": (message.key or b"").decode("utf-8", "replace"),
                        },
                    )
                )
            await self.producer.send_many(messages)

    def _opened(self, payload: bytes) -> bytes:
        if not is_sealed(payload):
            return payload
        if self.keyring is None:
            raise RuntimeError("a sealed outbox row, and no keyring to open it: give the relay the service's keys")
        return self.keyring.open(payload)

    def _mark_published(self, ids: list[int]) -> Update:
        if self.db.dialect == "postgresql":
            # One array parameter: the same statement (and prepared plan) for any batch, where IN
            # would be rewritten with a parameter per id on every batch.
            ids_param = bindparam("published_ids", ids, type_=ARRAY(BigInteger))
            return update(self.table).where(self.table.c.id == any_(ids_param)).values(published_at=utcnow())
        return update(self.table).where(self.table.c.id.in_(ids)).values(published_at=utcnow())

    async def backlog(self) -> tuple[int, datetime | None]:
        """How many rows wait to be published, and when the oldest was committed."""
        t = self.table
        async with self.db.read_sessions() as session:
            row = (
                await session.execute(select(func.count(), func.min(t.c.created_at)).where(t.c.published_at.is_(None)))
            ).one()
        return row[0], row[1]

    async def purge_published(self, *, older_than: datetime | None = None) -> int:
        cutoff = older_than or utcnow() - self.retention
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                delete(self.table).where(self.table.c.published_at.is_not(None), self.table.c.published_at < cutoff)
            )
        return cast("CursorResult[Any]", result).rowcount or 0

    async def run(self) -> None:
        """Publish until stopped or cancelled, backing off while the broker is unreachable."""
        self.started()
        try:
            await self._run()
        except asyncio.CancelledError:
            await self._mark_sent_on_the_way_out()
            raise

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            self._wake.clear()
            try:
                with self.working():  # a stop lets the batch in hand be published and marked
                    count = await self.publish_pending()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # broker down, database blip: retry, never give up
                self.last_error = f"{type(error).__name__}: {error}"
                backoff = min(max(0.25, backoff * 2), self.max_backoff_seconds)
                log.warning("outbox relay: publish failed (%s); retrying in %.1fs", self.last_error, backoff)
                await self.producer.reset()
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            self.last_error = None
            if count == self.batch_size:
                continue  # more waiting: no pause
            with self.working():
                await self._purge_now_and_then()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that lands as the wake-up does, and shutdown hangs.
            try:
                # Rows sent and not yet marked are marked within `mark_every_seconds`, events or not.
                async with asyncio.timeout(self.mark_every_seconds if self._unmarked else self.poll_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _purge_now_and_then(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_purge > 600:
            self._last_purge = now
            try:
                purged = await self.purge_published()
                if purged:
                    log.info("outbox relay: purged %d published rows past retention", purged)
            except Exception:
                log.warning("outbox relay: purge failed", exc_info=True)


_TRACEPARENT = b'"traceparent":"'
_CONTENT_TYPE = (("content-type", STRUCTURED.encode()),)


def _headers(payload: bytes) -> tuple[tuple[str, bytes], ...]:
    """The message's Kafka headers: structured mode's content type, and the event's trace."""
    headers = _CONTENT_TYPE + _trace_headers(payload)
    if b'"tracestate"' in payload:  # rare: only when a caller sent vendor trace state
        value = orjson.loads(payload).get(STATE_HEADER)
        if isinstance(value, str) and value:
            headers += ((STATE_HEADER, value.encode()),)
    return headers


def _trace_headers(payload: bytes) -> tuple[tuple[str, bytes], ...]:
    """The event's `traceparent` as a Kafka header, for tools that read headers, not bodies."""
    if b'"traceparent"' not in payload:
        return ()
    # Both serialisers write the envelope compactly with `traceparent` before `data`: found there,
    # once, it is the envelope's, and the payload need not be parsed (it was most of the relay's
    # own CPU per event). Anything else is parsed.
    start = payload.find(_TRACEPARENT)
    data_at = payload.find(b'"data":')
    if start != -1 and (data_at == -1 or start < data_at) and payload.count(b'"traceparent"') == 1:
        start += len(_TRACEPARENT)
        end = payload.find(b'"', start)
        value = payload[start:end]
        if end != -1 and b"\\" not in value:
            return ((HEADER, value),)
    value = orjson.loads(payload).get(HEADER)
    return ((HEADER, value.encode()),) if isinstance(value, str) else ()


async def republish(*, db: Database, table: Table, since: datetime, until: datetime) -> int:
    """Mark published rows in a time range for publishing again (consumers dedupe by event id)."""
    async with db.sessions() as session, session.begin():
        result = await session.execute(
            update(table)
            .where(table.c.created_at >= since, table.c.created_at < until, table.c.published_at.is_not(None))
            .values(published_at=None)
        )
    return cast("CursorResult[Any]", result).rowcount or 0


StatePage = Callable[["UnitOfWork", str | None, int], Awaitable[tuple[str | None, int]]]
"""Publishes (into the outbox) the current state of up to `limit` records after the key given; returns the
last key and how many records it covered."""


async def republish_state(uow_factory: Callable[[], UnitOfWork], *, page: StatePage, page_size: int = 500) -> int:
    """A service's current state published again, a page of records per transaction; returns how many records.

    For rebuilding a read model when the topics lost what they held (an embedded broker
    restarted, a retention shorter than the figures' history): the events are new (new
    ids) and say how things are now, which the read models fold idempotently. The
    relay sends them as it sends any event.
    """
    after, total = None, 0
    while True:
        async with uow_factory() as uow:
            after, count = await page(uow, after, page_size)
            await uow.commit()
        total += count
        if count < page_size:
            return total
