"""A hub is a team: who holds each case, sharing cases out, and the queue as a team works it.

A hub worker takes a case ("assign to me"), hands it to a colleague, or releases it;
each change is kept in the case's holder history and published as
`assignment.holder-changed` (no one named: reporting counts held and unheld cases).
The queue filters by holder (mine, unassigned, a colleague), status, type and
overdue; sorts by urgency, by the next deadline or by routing time; shows each
case's contact attempts and next contact time; and its `total` is the count of
every case that matches, whatever the page.

The hub's staff directory is the smallest thing that works with the council's
identity provider: each hub worker who calls fulfilment is recorded (`StaffSeen`:
subject, the token's `name`, hub, last seen), `GET /v1/hubs/{hub}/staff` lists a
hub's own, and a hand-over to anyone not in it is refused (a field error on `to`).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import case, func, insert, literal, select, update

from services.fulfilment import domain, reading, repository, residents, service
from services.fulfilment.domain import Status
from services.fulfilment.models import assignments, case_holders, case_notes, holder_changes, hub_staff, referrals
from services.fulfilment.schemas import SeriesOut
from shared.app import Runtime
from shared.auth import Principal, require
from shared.errors import Conflict, ValidationFailed
from shared.events import AssignmentHolderChangedV1
from shared.schemas import Strict
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

TAKEN, HANDED_OVER, RELEASED, NEXT_CONTACT = "taken", "handed-over", "released", "next-contact"
CARRIED_OVER = repository.CARRIED_OVER
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
    to: str | None = None,
    to_name: str | None = None,
) -> dict:
    by_name = by_name or by.name
    async with uow:
        row = await service.visible_for_change(uow, assignment_id, by=by)
        if change == HANDED_OVER and to:
            colleague = await _staff_member(uow, hub=row["hub"], subject=to)
            if colleague is None:
                raise ValidationFailed(
                    [
                        {
                            "field": "to",
                            "reason": f"is not a worker of hub {row['hub']}: choose one from "
                            f"GET /v1/hubs/{row['hub']}/staff",
                        }
                    ]
                )
            to_name = to_name or colleague["name"]
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
                key=row["referral_id"],
            )
        await uow.commit()
    return await holder_of(uow, assignment_id=assignment_id, by=by)


async def set_next_contact(
    uow: UnitOfWork, *, assignment_id: str, at: datetime | None, by: Principal, by_name: str | None
) -> dict:
    """When the resident is next to be called (after a missed call, or as agreed with them); None clears it."""
    by_name = by_name or by.name
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
    resident: str | None = None,
    sort: str = "urgency",
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict], int]:
    """A hub's open cases as the team works them, and how many match in all.

    `holder`: "mine" (the caller's), "unassigned", or a colleague's user id. `resident`: one resident's
    cases (their id, or the id of a resident merged into them: services/fulfilment/residents.py).
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
    joined = residents.with_merges(
        assignments.join(referrals, referrals.c.id == a.referral_id)
        .outerjoin(case_holders, h.assignment_id == a.id)
        .outerjoin(attempts, attempts.c.assignment_id == a.id)
    )
    resident_id = residents.resident_of_referral()
    async with uow:
        now = uow.now()
        if resident is not None:
            conditions.append(resident_id == await residents.resolved(uow, resident))
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
                resident_id.label("resident_id"),
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
                "resident_id": r["resident_id"],
                "series": reading.series_summary(r, schedules),
            }
        )
    return items, total


async def hub_staff_list(uow: UnitOfWork, *, hub: str) -> list[dict]:
    """The hub's workers fulfilment has seen (each signed-in call records its caller), by name."""
    async with uow:
        rows = (await uow.session.execute(select(hub_staff).where(hub_staff.c.hub == hub))).mappings().all()
    people = [{"id": r["subject"], "name": r["name"] or r["subject"], "last_seen_at": r["last_seen_at"]} for r in rows]
    return sorted(people, key=lambda person: (person["name"].lower(), person["id"]))


async def hub_colleagues(uow: UnitOfWork, *, hub: str) -> list[dict]:
    """Whom a case can be handed to: the hub's staff directory (`hub_staff_list`), ids and names."""
    return [{"id": p["id"], "name": p["name"]} for p in await hub_staff_list(uow, hub=hub)]


async def record_staff(uow: UnitOfWork, *, hub: str, subject: str, name: str | None) -> None:
    """This hub worker was seen now: added to the hub's directory, or their name and last-seen time updated."""
    async with uow:
        now = uow.now()
        known = await _staff_member(uow, hub=hub, subject=subject)
        if known is None:
            await uow.session.execute(
                insert(hub_staff).values(hub=hub, subject=subject, name=name, first_seen_at=now, last_seen_at=now)
            )
        else:
            values: dict[str, Any] = {"last_seen_at": now}
            if name:
                values["name"] = name
            await uow.session.execute(
                update(hub_staff).where(hub_staff.c.hub == hub, hub_staff.c.subject == subject).values(**values)
            )
        await uow.commit()


async def _staff_member(uow: UnitOfWork, *, hub: str, subject: str):
    return (
        (await uow.session.execute(select(hub_staff).where(hub_staff.c.hub == hub, hub_staff.c.subject == subject)))
        .mappings()
        .first()
    )


class StaffSeen:
    """ASGI middleware: each hub worker who calls fulfilment is recorded in their hub's directory.

    The caller is the one the route's bearer token named (`request.state.principal`, set by
    `shared.auth`); recorded before the response starts, so a colleague is in the directory by the
    time their first call has answered. Once per person per `every_seconds` (and whenever their
    name changes), so a busy worker's calls cost no write each.
    """

    def __init__(self, app, *, uow_factory, every_seconds: float = 300.0) -> None:
        self.app = app
        self.uow_factory = uow_factory
        self.every_seconds = every_seconds
        self._recorded: dict[tuple[str, str], tuple[str | None, float]] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})  # one dict for every copy of the scope below, where auth writes

        async def recording_send(message) -> None:
            if message["type"] == "http.response.start":
                await self._seen(state.get("principal"))
            await send(message)

        await self.app(scope, receive, recording_send)

    async def _seen(self, principal: Principal | None) -> None:
        if principal is None or not principal.hub or "hub" not in principal.role.split("+"):
            return
        key, now = (principal.hub, principal.subject), time.monotonic()
        name, at = self._recorded.get(key, (None, float("-inf")))
        if now - at < self.every_seconds and name == principal.name:
            return
        try:
            await record_staff(self.uow_factory(), hub=principal.hub, subject=principal.subject, name=principal.name)
        except Exception:  # the directory must never cost a worker their answer
            log.warning("could not record hub worker %s of %s", principal.subject, principal.hub, exc_info=True)
            return
        if len(self._recorded) > 50_000:
            self._recorded.clear()
        self._recorded[key] = (principal.name, now)


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
    """The colleague's user id, one of the hub's staff (`GET /v1/hubs/{hub}/staff`)."""
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
    change: Literal["taken", "handed-over", "released", "next-contact", "carried-over"]
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
    resident_id: str | None = None
    """The resident the case is about (merges followed): `?resident=` lists all of theirs."""
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


class StaffMember(BaseModel):
    id: str
    """Their user id (the token's subject): what `hand-over` takes as `to`."""
    name: str
    """Their name from the identity provider (the token's `name` claim), else their user id."""
    last_seen_at: datetime


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
    resident: Annotated[str | None, Query(max_length=36, description="one resident's cases (merges followed)")] = None,
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
        resident=resident,
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
    "/hubs/{hub}/staff",
    response_model=list[StaffMember],
    summary="The hub's workers (each recorded when they first call with a hub token), by name: "
    "whom a case can be handed to",
)
async def staff(hub: str, by: Reader, rt: Rt):
    service.check_hub_access(by, hub)
    await service.hub_exists(rt.uow(reading=True), hub)
    return await hub_staff_list(rt.uow(reading=True), hub=hub)


@router.get(
    "/hubs/{hub}/colleagues",
    response_model=list[Colleague],
    summary="The hub's staff, ids and names only (as `/staff`; kept for the clients that read it)",
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
    return await change_holder(rt.uow(), assignment_id=assignment_id, change=TAKEN, by=by, by_name=body.by_name)


@router.post(
    "/assignments/{assignment_id}/hand-over",
    response_model=HolderOut,
    summary="Hand the case to a colleague (one of the hub's staff: anyone else is a 422 on `to`)",
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
    )


@router.post(
    "/assignments/{assignment_id}/release",
    response_model=HolderOut,
    summary="Let the case go: back to the hub's unassigned cases",
    responses={409: {"description": "Nobody, or a colleague, holds it"}},
)
async def release(assignment_id: str, body: HolderIn, by: Writer, rt: Rt):
    return await change_holder(rt.uow(), assignment_id=assignment_id, change=RELEASED, by=by, by_name=body.by_name)


@router.put(
    "/assignments/{assignment_id}/next-contact",
    response_model=HolderOut,
    summary="When to call the resident next; null clears it",
)
async def next_contact(assignment_id: str, body: NextContactIn, by: Writer, rt: Rt):
    if body.at is not None and body.at.tzinfo is None:
        raise ValidationFailed([{"field": "at", "reason": "needs its zone, e.g. 2026-12-01T15:00:00Z"}])
    return await set_next_contact(rt.uow(), assignment_id=assignment_id, at=body.at, by=by, by_name=body.by_name)
