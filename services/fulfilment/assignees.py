"""A hub is a team: who holds each case, sharing cases out, and the queue as a team works it.

A hub worker takes a case ("assign to me"), hands it to a colleague, or releases it;
each change is kept in the case's holder history and published as
`assignment.holder-changed` (no one named: reporting counts held and unheld cases).
The queue filters by holder (mine, unassigned, a colleague), status, type and
overdue; sorts by urgency, by the next deadline or by routing time; shows each
case's contact attempts and next contact time; and its `total` is the count of
every case that matches, whatever the page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import case, func, insert, literal, select, update

from services.fulfilment import domain, reading, repository, service
from services.fulfilment.domain import Status
from services.fulfilment.models import assignments, case_holders, case_notes, holder_changes, referrals
from services.fulfilment.schemas import SeriesOut
from shared.app import Runtime
from shared.auth import Principal, require
from shared.errors import Conflict, ValidationFailed
from shared.events import AssignmentHolderChangedV1
from shared.schemas import Strict
from shared.settings import Topics
from shared.uow import UnitOfWork

TAKEN, HANDED_OVER, RELEASED, NEXT_CONTACT = "taken", "handed-over", "released", "next-contact"
SORTS = ("urgency", "due", "routed")
URGENCY_ORDER = {urgency: position for position, urgency in enumerate(domain.URGENCIES)}


# --- the rules --------------------------------------------------------------------------------


def holder_change(
    *, change: str, status: str, holder: str | None, by: str, admin: bool, to: str | None = None
) -> str | None:
    """Who holds the case after `change`, by the rules; raises Conflict or ValidationFailed if it may not happen.

    Taking: an open case nobody else holds. Handing over: an open case the caller holds,
    or one nobody holds (sharing out the day's cases), to someone else. Releasing: a case
    the caller holds. An administrator may hand over or release any case.
    """
    closed = Status(status) in domain.CLOSED
    if change == TAKEN:
        if closed:
            raise Conflict(f"the case is {status}: there is nothing left to take")
        if holder not in (None, by):
            raise Conflict("a colleague holds this case: ask them to hand it over")
        return by
    if change == HANDED_OVER:
        if not to:
            raise ValidationFailed([{"field": "to", "reason": "is required: the colleague's user id"}])
        if closed:
            raise Conflict(f"the case is {status}: there is nothing left to hand over")
        if holder not in (None, by) and not admin:
            raise Conflict("a colleague holds this case: only they (or an administrator) can hand it over")
        if to == holder:
            raise Conflict("they hold it already")
        return to
    if change == RELEASED:
        if holder is None:
            raise Conflict("nobody holds this case")
        if holder != by and not admin:
            raise Conflict("a colleague holds this case: only they (or an administrator) can release it")
        return None
    raise ValueError(change)


# --- use cases --------------------------------------------------------------------------------


async def change_holder(
    uow: UnitOfWork,
    *,
    assignment_id: str,
    change: str,
    by: Principal,
    by_name: str | None,
    topics: Topics,
    to: str | None = None,
    to_name: str | None = None,
) -> dict:
    async with uow:
        row = await service.visible_for_change(uow, assignment_id, by=by)
        current = await _holder_row(uow, assignment_id)
        holder = current["holder"] if current else None
        new = holder_change(
            change=change,
            status=row["status"],
            holder=holder,
            by=by.subject,
            admin="assignments:admin" in by.scopes,
            to=to,
        )
        now = uow.now()
        if new != holder:
            new_name = {TAKEN: by_name, HANDED_OVER: to_name, RELEASED: None}[change]
            values = {"holder": new, "holder_name": new_name, "held_since": now if new else None, "updated_at": now}
            if current is None:
                await uow.session.execute(
                    insert(case_holders).values(
                        assignment_id=assignment_id, hub=row["hub"], next_contact_at=None, **values
                    )
                )
            else:
                result = await uow.session.execute(
                    update(case_holders)
                    .where(case_holders.c.assignment_id == assignment_id, _same_holder(holder))
                    .values(**values)
                )
                if result.rowcount != 1:
                    raise Conflict("the case changed hands while this was being done; look again")
            await uow.session.execute(
                insert(holder_changes).values(
                    assignment_id=assignment_id,
                    at=now,
                    by=by.subject,
                    by_name=by_name,
                    change=change,
                    from_holder=holder,
                    from_name=current["holder_name"] if current else None,
                    to_holder=new,
                    to_name=new_name,
                    next_contact_at=None,
                )
            )
            uow.publish(
                AssignmentHolderChangedV1(
                    assignment_id=row["id"],
                    request_id=row["request_id"],
                    referral_id=row["referral_id"],
                    request_type=row["request_type"],
                    urgency=row["urgency"],
                    status=row["status"],
                    hub=row["hub"],
                    change=change,
                    held=new is not None,
                    changed_at=now,
                ),
                topic=topics.assignment_status,
                key=row["referral_id"],
            )
        await uow.commit()
    return await holder_of(uow, assignment_id=assignment_id, by=by)


async def set_next_contact(
    uow: UnitOfWork, *, assignment_id: str, at: datetime | None, by: Principal, by_name: str | None
) -> dict:
    """When the resident is next to be called (after a missed call, or as agreed with them); None clears it."""
    async with uow:
        row = await service.visible_for_change(uow, assignment_id, by=by)
        current = await _holder_row(uow, assignment_id)
        now = uow.now()
        if current is None:
            await uow.session.execute(
                insert(case_holders).values(
                    assignment_id=assignment_id,
                    hub=row["hub"],
                    holder=None,
                    holder_name=None,
                    held_since=None,
                    next_contact_at=at,
                    updated_at=now,
                )
            )
        else:
            await uow.session.execute(
                update(case_holders)
                .where(case_holders.c.assignment_id == assignment_id)
                .values(next_contact_at=at, updated_at=now)
            )
        holder = current["holder"] if current else None
        await uow.session.execute(
            insert(holder_changes).values(
                assignment_id=assignment_id,
                at=now,
                by=by.subject,
                by_name=by_name,
                change=NEXT_CONTACT,
                from_holder=holder,
                from_name=current["holder_name"] if current else None,
                to_holder=holder,
                to_name=current["holder_name"] if current else None,
                next_contact_at=at,
            )
        )
        await uow.commit()
    return await holder_of(uow, assignment_id=assignment_id, by=by)


async def holder_of(uow: UnitOfWork, *, assignment_id: str, by: Principal) -> dict:
    async with uow:
        row = (await uow.session.execute(select(assignments.c.hub).where(assignments.c.id == assignment_id))).first()
        if row is None or not reading.may_see(by, row.hub):
            from shared.errors import NotFound

            raise NotFound(f"no assignment {assignment_id}")
        current = await _holder_row(uow, assignment_id)
        history = (
            (
                await uow.session.execute(
                    select(holder_changes)
                    .where(holder_changes.c.assignment_id == assignment_id)
                    .order_by(holder_changes.c.id)
                )
            )
            .mappings()
            .all()
        )
    return {
        "assignment_id": assignment_id,
        "holder": current["holder"] if current else None,
        "holder_name": current["holder_name"] if current else None,
        "held_since": current["held_since"] if current else None,
        "next_contact_at": current["next_contact_at"] if current else None,
        "history": [
            {
                k: h[k]
                for k in (
                    "at",
                    "by",
                    "by_name",
                    "change",
                    "from_holder",
                    "from_name",
                    "to_holder",
                    "to_name",
                    "next_contact_at",
                )
            }
            for h in history
        ],
    }


async def hub_queue(
    uow: UnitOfWork,
    *,
    hub: str,
    by: Principal,
    holder: str | None = None,
    statuses: list[str] | None = None,
    request_type: str | None = None,
    overdue: bool | None = None,
    follow_up: bool | None = None,
    sort: str = "urgency",
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict], int]:
    """A hub's open cases as the team works them, and how many match in all.

    `holder`: "mine" (the caller's), "unassigned", or a colleague's user id.
    """
    a, h = assignments.c, case_holders.c
    attempts = (
        select(
            case_notes.c.assignment_id,
            func.count().label("contact_attempts"),
            func.max(case_notes.c.at).label("last_contact_at"),
        )
        .where(case_notes.c.kind == "contact-attempt", case_notes.c.hub == hub)
        .group_by(case_notes.c.assignment_id)
        .subquery()
    )
    conditions = [a.hub == hub, referrals.c.erased_at.is_(None)]
    conditions.append(a.status.in_(statuses) if statuses else a.status.not_in([str(s) for s in domain.CLOSED]))
    if request_type:
        conditions.append(a.request_type == request_type)
    if follow_up is not None:
        conditions.append(a.follow_up == follow_up)
    if holder == "mine":
        conditions.append(h.holder == by.subject)
    elif holder == "unassigned":
        conditions.append(h.holder.is_(None))
    elif holder:
        conditions.append(h.holder == holder)
    next_due = case((a.status.in_([str(Status.ROUTED), str(Status.TRIAGE)]), a.accept_due_at), else_=a.fulfil_due_at)
    urgency = case(*[(a.urgency == u, literal(p)) for u, p in URGENCY_ORDER.items()], else_=literal(len(URGENCY_ORDER)))
    order = {
        "urgency": [urgency, next_due.is_(None), next_due, a.routed_at, a.id],
        "due": [next_due.is_(None), next_due, urgency, a.routed_at, a.id],
        "routed": [a.routed_at, a.id],
    }[sort]
    joined = (
        assignments.join(referrals, referrals.c.id == a.referral_id)
        .outerjoin(case_holders, h.assignment_id == a.id)
        .outerjoin(attempts, attempts.c.assignment_id == a.id)
    )
    async with uow:
        now = uow.now()
        if overdue is not None:
            clause = repository.overdue_clause(now)
            conditions.append(clause if overdue else ~clause)
        query = (
            select(
                assignments,
                referrals.c.personal,
                referrals.c.reference,
                h.holder,
                h.holder_name,
                h.held_since,
                h.next_contact_at,
                attempts.c.contact_attempts,
                attempts.c.last_contact_at,
            )
            .select_from(joined)
            .where(*conditions)
            .order_by(*order)
            .limit(limit)
            .offset(offset)
        )
        rows = (await uow.session.execute(query)).mappings().all()
        total = await uow.session.scalar(select(func.count()).select_from(joined).where(*conditions))
        schedules = await reading.schedules_of(uow, rows)
    keyring = uow.keyring
    items = []
    for r in rows:
        summary = reading.summary(
            repository.opened_assignment(r, keyring),
            {**keyring.open_json(r["personal"]), "reference": r["reference"]},
            now=now,
        )
        items.append(
            {
                **summary,
                "holder": r["holder"],
                "holder_name": r["holder_name"],
                "held_since": r["held_since"],
                "contact_attempts": r["contact_attempts"] or 0,
                "last_contact_at": r["last_contact_at"],
                "next_contact_at": r["next_contact_at"],
                "next_due_at": _next_due(r),
                "series": reading.series_summary(r, schedules),
            }
        )
    return items, total


async def hub_colleagues(uow: UnitOfWork, *, hub: str) -> list[dict]:
    """The hub's workers who have held a case: whom a case can be handed to."""
    c = holder_changes.c
    async with uow:
        rows = (
            await uow.session.execute(
                select(c.to_holder, c.to_name, func.max(c.at).label("last"))
                .join(assignments, assignments.c.id == c.assignment_id)
                .where(assignments.c.hub == hub, c.to_holder.is_not(None))
                .group_by(c.to_holder, c.to_name)
                .order_by(func.max(c.at).desc())
            )
        ).all()
    seen: dict[str, dict] = {}
    for row in rows:
        seen.setdefault(row.to_holder, {"id": row.to_holder, "name": row.to_name or row.to_holder})
    return sorted(seen.values(), key=lambda person: person["name"].lower())


def _next_due(row) -> datetime | None:
    return row["accept_due_at"] if row["status"] in (Status.ROUTED, Status.TRIAGE) else row["fulfil_due_at"]


def _same_holder(holder: str | None):
    return case_holders.c.holder.is_(None) if holder is None else case_holders.c.holder == holder


async def _holder_row(uow: UnitOfWork, assignment_id: str):
    return (
        (await uow.session.execute(select(case_holders).where(case_holders.c.assignment_id == assignment_id)))
        .mappings()
        .first()
    )


# --- HTTP -------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1", tags=["team"])
Reader = Annotated[Principal, Depends(require("assignments:read"))]
Writer = Annotated[Principal, Depends(require("assignments:write"))]
Name = Annotated[str, Field(min_length=1, max_length=200)]


async def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


Rt = Annotated[Runtime, Depends(_runtime)]


class HolderIn(Strict):
    by_name: Name | None = None
    """Your name as colleagues know it, shown beside the case."""


class HandOverIn(Strict):
    to: Annotated[str, Field(min_length=1, max_length=200)]
    """The colleague's user id (`GET /v1/hubs/{hub}/colleagues`)."""
    to_name: Name | None = None
    by_name: Name | None = None


class NextContactIn(Strict):
    at: datetime | None
    """When to call the resident next (with its zone); null clears it."""
    by_name: Name | None = None


class HolderChangeOut(BaseModel):
    at: datetime
    by: str
    by_name: str | None = None
    change: Literal["taken", "handed-over", "released", "next-contact"]
    from_holder: str | None = None
    from_name: str | None = None
    to_holder: str | None = None
    to_name: str | None = None
    next_contact_at: datetime | None = None


class HolderOut(BaseModel):
    assignment_id: str
    holder: str | None = None
    """The user id of the hub worker who holds the case; null: nobody (unassigned)."""
    holder_name: str | None = None
    held_since: datetime | None = None
    next_contact_at: datetime | None = None
    history: list[HolderChangeOut]


class QueueItem(BaseModel):
    model_config = {"extra": "allow"}

    id: str
    reference: str
    type: str
    urgency: str
    status: str
    routed_at: datetime | None = None
    accept_due_at: datetime | None = None
    fulfil_due_at: datetime | None = None
    next_due_at: datetime | None = None
    """The deadline the case faces now: accepting it (routed) or fulfilling it."""
    overdue: bool
    resident_name: str | None = None
    holder: str | None = None
    holder_name: str | None = None
    held_since: datetime | None = None
    contact_attempts: int
    last_contact_at: datetime | None = None
    next_contact_at: datetime | None = None
    series: SeriesOut | None = None
    """Set when the request recurs: "weekly, 3 of 6", and when the next occurrence is due."""


class QueuePage(BaseModel):
    items: list[QueueItem]
    count: int
    """How many are on this page."""
    total: int
    """How many cases match the filters in all."""


class Colleague(BaseModel):
    id: str
    name: str


@router.get(
    "/hubs/{hub}/queue",
    response_model=QueuePage,
    summary="The hub's open cases as a team works them: by holder (mine, unassigned, a colleague), "
    "status, type, overdue; sorted by urgency, next deadline or routing time",
)
async def queue(
    hub: str,
    request: Request,
    by: Reader,
    rt: Rt,
    holder: Annotated[
        str | None, Query(max_length=200, description="mine, unassigned, or a colleague's user id")
    ] = None,
    status: Annotated[list[Annotated[str, Field(max_length=40)]] | None, Query()] = None,
    type: Annotated[str | None, Query(max_length=40)] = None,
    overdue: bool | None = None,
    follow_up: bool | None = None,
    sort: Annotated[
        Literal["urgency", "due", "routed"],
        Query(description="urgency (then the next deadline), due (the next deadline first), routed (oldest first)"),
    ] = "urgency",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
):
    service.check_hub_access(by, hub)
    await service.hub_exists(rt.uow(reading=True), hub)
    unknown = sorted(set(status or []) - {str(s) for s in Status})
    if unknown:
        raise ValidationFailed([{"field": "status", "in": "query", "reason": f"unknown status {', '.join(unknown)}"}])
    items, total = await hub_queue(
        rt.uow(reading=True),
        hub=hub,
        by=by,
        holder=holder,
        statuses=status,
        request_type=type,
        overdue=overdue,
        follow_up=follow_up,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    referral_ids = sorted({str(item["referral_id"]) for item in items})
    if referral_ids:  # the queue shows residents: one audit row per referral seen
        await rt.audit.record(
            by=by,
            action="read",
            resource="referral",
            ids=referral_ids,
            request=request,
            detail={"list": request.url.path, "hub": hub},
        )
    return {"items": items, "count": len(items), "total": total}


@router.get(
    "/hubs/{hub}/colleagues",
    response_model=list[Colleague],
    summary="The hub's workers who have held a case: whom a case can be handed to",
)
async def colleagues(hub: str, by: Reader, rt: Rt):
    service.check_hub_access(by, hub)
    await service.hub_exists(rt.uow(reading=True), hub)
    return await hub_colleagues(rt.uow(reading=True), hub=hub)


@router.get(
    "/assignments/{assignment_id}/holder",
    response_model=HolderOut,
    summary="Who holds the case, its next contact time, and every change of holder",
)
async def get_holder(assignment_id: str, by: Reader, rt: Rt):
    return await holder_of(rt.uow(reading=True), assignment_id=assignment_id, by=by)


@router.post(
    "/assignments/{assignment_id}/take",
    response_model=HolderOut,
    summary="Take the case (assign it to me)",
    responses={409: {"description": "A colleague holds it"}},
)
async def take(assignment_id: str, body: HolderIn, by: Writer, rt: Rt):
    return await change_holder(
        rt.uow(), assignment_id=assignment_id, change=TAKEN, by=by, by_name=body.by_name, topics=rt.settings.topics
    )


@router.post(
    "/assignments/{assignment_id}/hand-over",
    response_model=HolderOut,
    summary="Hand the case to a colleague",
    responses={409: {"description": "A colleague holds it"}},
)
async def hand_over(assignment_id: str, body: HandOverIn, by: Writer, rt: Rt):
    return await change_holder(
        rt.uow(),
        assignment_id=assignment_id,
        change=HANDED_OVER,
        by=by,
        by_name=body.by_name,
        to=body.to,
        to_name=body.to_name,
        topics=rt.settings.topics,
    )


@router.post(
    "/assignments/{assignment_id}/release",
    response_model=HolderOut,
    summary="Let the case go: back to the hub's unassigned cases",
    responses={409: {"description": "Nobody, or a colleague, holds it"}},
)
async def release(assignment_id: str, body: HolderIn, by: Writer, rt: Rt):
    return await change_holder(
        rt.uow(), assignment_id=assignment_id, change=RELEASED, by=by, by_name=body.by_name, topics=rt.settings.topics
    )


@router.put(
    "/assignments/{assignment_id}/next-contact",
    response_model=HolderOut,
    summary="When to call the resident next; null clears it",
)
async def next_contact(assignment_id: str, body: NextContactIn, by: Writer, rt: Rt):
    if body.at is not None and body.at.tzinfo is None:
        raise ValidationFailed([{"field": "at", "reason": "needs its zone, e.g. 2026-12-01T15:00:00Z"}])
    return await set_next_contact(rt.uow(), assignment_id=assignment_id, at=body.at, by=by, by_name=body.by_name)
