"""The audit log: who read, changed or exported a resident's data, when, and through what.

One `audit` table in each service that holds personal data (added to its metadata
like the outbox: `ServiceTables(metadata, audit=True)`), queried by administrators at
`GET /v1/audit`. A change's record commits in the change's own transaction
(`AuditLog.changing`); a read's is written before the data is sent.

Append-only: there is no update or delete path in the code, and the migration adds
triggers that refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) on the table.
A record names the people by id only (the referral, the assignment): the log
holds no personal data, so an erasure leaves it whole and it stays useful.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import JSON, Column, Index, MetaData, String, Table, insert, select

from shared.auth import Principal, require
from shared.db import BigId, Database, UtcDateTime, utcnow
from shared.uow import UnitOfWork

if TYPE_CHECKING:
    from alembic.operations import Operations


ACTIONS = ("create", "read", "search", "change", "cancel", "export", "erase", "anonymise", "merge")


def audit_table(metadata: MetaData) -> Table:
    return Table(
        "audit",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("at", UtcDateTime, nullable=False),
        Column("actor", String(200), nullable=False),
        Column("role", String(40), nullable=False),
        Column("hub", String(40), nullable=True),
        Column("action", String(20), nullable=False),
        Column("resource", String(40), nullable=False),
        Column("resource_id", String(64), nullable=True),
        Column("request_id", String(100), nullable=True),
        Column("detail", JSON, nullable=True),
        Index("ix_audit_resource_id", "resource_id"),
        Index("ix_audit_actor", "actor"),
        Index("ix_audit_at", "at"),
    )


# The statements a migration runs to make the table append-only, per dialect.
APPEND_ONLY_SQL = {
    "postgresql": [
        """CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER audit_no_update_or_delete BEFORE UPDATE OR DELETE ON audit
           FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
        """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
           FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()""",
    ],
    "sqlite": [
        """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
           BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
           BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    ],
}
DROP_APPEND_ONLY_SQL = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS audit_no_truncate ON audit",
        "DROP TRIGGER IF EXISTS audit_no_update_or_delete ON audit",
        "DROP FUNCTION IF EXISTS audit_append_only()",
    ],
    "sqlite": ["DROP TRIGGER IF EXISTS audit_no_update", "DROP TRIGGER IF EXISTS audit_no_delete"],
}


def create_audit_table(op: Operations) -> None:
    """For a service's Alembic migration: the table, its indexes and the append-only triggers."""
    import sqlalchemy as sa

    op.create_table(
        "audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("hub", sa.String(40), nullable=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("resource", sa.String(40), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(100), nullable=True),
        sa.Column("detail", sa.JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_resource_id", "audit", ["resource_id"])
    op.create_index("ix_audit_actor", "audit", ["actor"])
    op.create_index("ix_audit_at", "audit", ["at"])
    for statement in APPEND_ONLY_SQL[op.get_bind().dialect.name]:
        op.execute(statement)


def drop_audit_table(op: Operations) -> None:
    for statement in DROP_APPEND_ONLY_SQL[op.get_bind().dialect.name]:
        op.execute(statement)
    op.drop_table("audit")


class AuditLog:
    """Writes and reads the audit table; nothing here (or anywhere) updates or deletes it."""

    def __init__(self, *, db: Database, table: Table) -> None:
        self.db = db
        self.table = table
        self._waiting: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(
        self,
        *,
        by: Principal,
        action: str,
        resource: str,
        ids: Sequence[str | None] = (None,),
        request: Request | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """One row per resident record touched (so "who saw this person" is one lookup)."""
        await self._insert(
            self.rows(by=by, action=action, resource=resource, ids=ids, request_id=_request_id(request), detail=detail)
        )

    @contextlib.asynccontextmanager
    async def changing(
        self,
        uow: UnitOfWork,
        *,
        by: Principal,
        action: str,
        resource: str,
        ids: list[str],
        request: Request | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AsyncIterator[UnitOfWork]:
        """`uow`, set so that the change its use case commits carries its audit record in the same transaction.

        A change is then never committed without its record, nor a record without
        its change (a process killed between two transactions could do either). A
        use case that changes nothing (an erasure asked again) commits nothing: its
        record is written on its own afterwards, as a read's is.
        """
        uow.audit_with_commit(
            self.table,
            self.rows(by=by, action=action, resource=resource, ids=ids, request_id=_request_id(request), detail=detail),
        )
        yield uow
        unwritten = uow.take_unwritten_audit()
        if unwritten is not None:
            await self._insert(unwritten[1])

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Written before the caller goes on; the records of reads arriving together share one transaction.

        Group commit, as referral intake does: under load, many reads' records take
        the write lock once, instead of each read queueing for it.
        """
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_while_waiting())
        await future

    async def _write_while_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                async with self.db.sessions() as session, session.begin():
                    await session.execute(insert(self.table), [row for rows, _ in batch for row in rows])
            except Exception as error:  # every caller hears it (a lock timeout is their 503)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    @staticmethod
    def rows(
        *,
        by: Principal,
        action: str,
        resource: str,
        ids: Sequence[str | None] = (None,),
        request_id: str | None = None,
        detail: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The records `record` writes, for a use case that writes them in its own transaction instead
        (referral intake: the record commits with the referral, in the same group commit)."""
        assert action in ACTIONS, action
        at = at or utcnow()
        return [
            {
                "at": at,
                "actor": by.subject,
                "role": by.role,
                "hub": by.hub,
                "action": action,
                "resource": resource,
                "resource_id": None if resource_id is None else str(resource_id),
                "request_id": request_id,
                "detail": detail,
            }
            for resource_id in (ids or [None])
        ]

    async def query(
        self,
        *,
        resource_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        since, until = (_utc(v) for v in (since, until))
        t = self.table
        query = select(t).where(t.c.id > after).order_by(t.c.id).limit(limit)
        if resource_id:
            query = query.where(t.c.resource_id == resource_id)
        if actor:
            query = query.where(t.c.actor == actor)
        if action:
            query = query.where(t.c.action == action)
        if resource:
            query = query.where(t.c.resource == resource)
        if since:
            query = query.where(t.c.at >= since)
        if until:
            query = query.where(t.c.at < until)
        async with self.db.sessions() as session:
            return [dict(r) for r in (await session.execute(query)).mappings()]


def _request_id(request: Request | None) -> str | None:
    return getattr(request.state, "request_id", None) if request is not None else None


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class AuditRecord(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    hub: str | None = None
    action: str
    resource: str
    resource_id: str | None = None
    request_id: str | None = None
    detail: dict[str, Any] | None = None


class AuditPage(BaseModel):
    records: list[AuditRecord]
    next_after: int
    """Ask again with `after=` this to read on."""


def audit_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["audit"])

    @router.get(
        "/audit",
        response_model=AuditPage,
        summary="Who read, changed or exported residents' data (administrators), oldest first",
    )
    async def read_audit(
        request: Request,
        by: Annotated[Principal, Depends(require("admin"))],
        resource_id: Annotated[str | None, Query(max_length=64, description="A referral or assignment id")] = None,
        actor: Annotated[str | None, Query(max_length=200, description="A token subject")] = None,
        action: Annotated[str | None, Query(pattern=f"^({'|'.join(ACTIONS)})$")] = None,
        resource: Annotated[str | None, Query(max_length=40)] = None,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        records = await request.app.state.runtime.audit.query(
            resource_id=resource_id,
            actor=actor,
            action=action,
            resource=resource,
            since=since,
            until=until,
            after=after,
            limit=limit,
        )
        return {"records": records, "next_after": records[-1]["id"] if records else after}

    return router
