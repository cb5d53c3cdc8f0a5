"""The unit of work: one transaction per use case, events committed with the change."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared import tracing
from shared.db import Database, utcnow
from shared.events import CloudEvent, EventData


class UnitOfWork:
    """`async with uow: ...; uow.publish(event, topic=...); await uow.commit()`.

    Helpers never commit; leaving the block without `commit()` rolls back,
    events included.
    """

    def __init__(
        self,
        db: Database,
        *,
        source: str,
        outbox: Table,
        on_commit: Callable[[], None] | None = None,
    ):
        self.db = db
        self.source = source
        self.outbox = outbox
        self.on_commit = on_commit
        self.session: AsyncSession
        self._events: list[tuple[str, str | None, CloudEvent]] = []

    async def __aenter__(self) -> "UnitOfWork":
        self.session = self.db.sessions()
        self._events = []
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            if self.session.in_transaction():
                await self.session.rollback()
        finally:
            await self.session.close()
            self._events = []

    def now(self) -> datetime:
        return utcnow()

    def publish(self, data: EventData, *, topic: str, key: str | None = None, time: datetime | None = None) -> CloudEvent:
        """Record an event to be published once this unit of work commits."""
        event = data.envelope(source=self.source, time=time)
        event.traceparent = tracing.current_traceparent()
        self._events.append((topic, key or event.subject, event))
        return event

    async def commit(self) -> None:
        if self._events:
            created = utcnow()
            await self.session.execute(
                insert(self.outbox),
                [
                    {
                        "event_id": str(event.id),
                        "topic": topic,
                        "key": key,
                        "type": event.type,
                        "payload": event.to_bytes(),
                        "created_at": created,
                    }
                    for topic, key, event in self._events
                ],
            )
        await self.session.commit()
        published = bool(self._events)
        self._events = []
        if published and self.on_commit:
            self.on_commit()
