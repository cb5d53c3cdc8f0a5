"""Fulfilment's reads: a hub's list, one assignment with its history, the feeds, the front door's answers.

Reads only: every function opens a unit of work (a reading one is enough) and
never commits. Hub staff see their own hub's assignments; another hub's are not
there at all for them (404, not 403).
"""

from __future__ import annotations

from datetime import datetime

import orjson
from sqlalchemy import func, select

from services.fulfilment import domain
from services.fulfilment.domain import Series, Status
from services.fulfilment.hubs import Hub, RoutingOutcome, route
from services.fulfilment.models import assignment_changes, assignments, case_notes, hub_feed, hubs, referrals
from services.fulfilment.repository import (
    assignment_of,
    opened_assignment,
    opened_change,
    opened_note,
    overdue_clause,
    postcode_of,
)
from services.fulfilment.routing import Routing
from shared.auth import Principal
from shared.errors import NotFound
from shared.uow import UnitOfWork


async def list_hubs(uow: UnitOfWork) -> list[dict]:
    async with uow:
        rows = (await uow.session.execute(select(hubs).order_by(hubs.c.name))).mappings().all()
        return [dict(r) for r in rows]


async def get_hub(uow: UnitOfWork, slug: str) -> dict:
    async with uow:
        return dict(await uow.assignments.hub(slug))


def may_see(by: Principal, hub: str | None) -> bool:
    # Another hub's assignment is not there at all for hub staff: 404, not 403.
    return "assignments:admin" in by.scopes or (hub is not None and hub == by.hub)


async def get_assignment(uow: UnitOfWork, *, assignment_id: str, by: Principal) -> dict:
    """One assignment with the resident's details, its history, notes and contact attempts."""
    async with uow:
        row = (
            (await uow.session.execute(select(assignments).where(assignments.c.id == assignment_id))).mappings().first()
        )
        if row is None or not may_see(by, row["hub"]):
            raise NotFound(f"no assignment {assignment_id}")
        keyring = uow.keyring
        row = opened_assignment(row, keyring)
        referral = await uow.assignments.referral(row["referral_id"])
        history = [
            opened_change(h, keyring)
            for h in (
                await uow.session.execute(
                    select(assignment_changes)
                    .where(assignment_changes.c.assignment_id == assignment_id)
                    .order_by(assignment_changes.c.id)
                )
            ).mappings()
        ]
        notes = [
            opened_note(n, keyring)
            for n in (
                await uow.session.execute(
                    select(case_notes).where(case_notes.c.assignment_id == assignment_id).order_by(case_notes.c.id)
                )
            ).mappings()
        ]
        now = uow.now()
        schedules = await schedules_of(uow, [row])
    a = assignment_of(row)
    return {
        **summary(row, referral, now=now),
        "series": series_summary(row, schedules),
        "allowed": sorted(str(s) for s in a.allowed() if s is not Status.TRIAGE),
        "referral": {
            "id": referral["id"],
            "reference": referral["reference"],
            "channel": referral["channel"],
            "received_at": referral["received_at"],
            "consent_to_share": referral["consent_to_share"],
        },
        "resident": referral["resident"],
        "referrer": referral["referrer"],
        "history": history,
        "notes": [n for n in notes if n["kind"] == "note"],
        "contact_attempts": [n for n in notes if n["kind"] == "contact-attempt"],
    }


class Schedules:
    """The series a page of assignments belongs to, and the hubs' SLAs: what `series_summary` needs."""

    def __init__(self, series: dict[str, Series], slas: dict[str, dict]):
        self.series, self.slas = series, slas


async def schedules_of(uow: UnitOfWork, rows) -> Schedules:
    """One read for a page: the series of the rows that are occurrences (none read if none is)."""
    ids = {row["series_id"] for row in rows if row.get("series_id")}
    if not ids:
        return Schedules({}, {})
    repo = uow.assignments
    return Schedules(await repo.series(ids), {slug: hub.sla or {} for slug, hub in (await repo.hubs()).items()})


def series_summary(row, schedules: Schedules) -> dict | None:
    """Which occurrence of which series the assignment is ("weekly, 3 of 6") and when the next is due; None if one-off."""
    recurs = schedules.series.get(row.get("series_id") or "")
    occurrence = row.get("occurrence")
    if recurs is None or occurrence is None:
        return None
    sla = domain.sla_for(row["urgency"], schedules.slas.get(row["hub"] or ""))
    return {
        "id": recurs.id,
        "frequency": recurs.frequency,
        "occurrence": occurrence,
        "occurrences": recurs.occurrences,
        "ends_on": recurs.ends_on,
        "label": recurs.label(occurrence),
        # Only the newest occurrence has a next one still to come.
        "next_due_at": recurs.next_due_at(occurrence, sla) if occurrence == recurs.made else None,
        "ended_at": recurs.ended_at,
        "ended_reason": recurs.ended_reason,
    }


def summary(row, referral, *, now: datetime) -> dict:
    a = assignment_of(row)
    missed = a.overdue_deadlines(now)
    resident = referral["resident"]
    return {
        "id": row["id"],
        "request_id": row["request_id"],
        "referral_id": row["referral_id"],
        "reference": referral["reference"],
        "type": row["request_type"],
        "details": row["details"],
        "needed_by": row["needed_by"],
        "urgency": row["urgency"],
        "duplicate_of": row["duplicate_of"],
        "status": row["status"],
        "reason": row["reason"],
        "hub": row["hub"],
        "district_code": row["district_code"],
        "council_code": row["council_code"],
        "council_name": row["council_name"],
        "received_at": row["received_at"],
        "routed_at": row["routed_at"],
        "accepted_at": row["accepted_at"],
        "closed_at": row["closed_at"],
        "outcome": row["outcome"],
        "accept_due_at": row["accept_due_at"],
        "fulfil_due_at": row["fulfil_due_at"],
        "overdue": bool(missed),
        "overdue_deadlines": missed,
        "escalated_at": row["fulfil_escalated_at"] or row["accept_escalated_at"],
        "follow_up": row["follow_up"],
        "follow_up_on": row["follow_up_on"],
        "resident_name": resident.get("name"),
        "phone": resident.get("phone"),
        "postcode": (resident.get("address") or {}).get("postcode"),
        "updated_at": row["updated_at"],
    }


async def list_assignments(
    uow: UnitOfWork,
    *,
    hub: str | None = None,
    statuses: list[str] | None = None,
    request_type: str | None = None,
    overdue: bool | None = None,
    follow_up: bool | None = None,
    limit: int = 100,
    offset: int = 0,
    closed: bool = False,
    erased: bool = False,
) -> tuple[list[dict], int]:
    """A hub's assignments (or a queue's, with `hub=None` and queue statuses), oldest first; and how many match.

    Without `statuses`, only the open ones (what a hub still has to do) unless `closed`;
    cases whose resident was erased only with `erased`.
    """
    a = assignments.c
    conditions = []
    if hub is not None:
        conditions.append(a.hub == hub)
    if statuses:
        conditions.append(a.status.in_(statuses))
    elif not closed:
        conditions.append(a.status.not_in([str(s) for s in domain.CLOSED]))
    if not erased:
        conditions.append(referrals.c.erased_at.is_(None))
    if request_type:
        conditions.append(a.request_type == request_type)
    if follow_up is not None:
        conditions.append(a.follow_up == follow_up)
    async with uow:
        now = uow.now()
        if overdue is not None:
            clause = overdue_clause(now)
            conditions.append(clause if overdue else ~clause)
        joined = assignments.join(referrals, referrals.c.id == a.referral_id)
        query = select(assignments, referrals.c.personal, referrals.c.reference).select_from(joined).where(*conditions)
        rows = (
            (await uow.session.execute(query.order_by(a.routed_at, a.id).limit(limit).offset(offset))).mappings().all()
        )
        if offset == 0 and len(rows) < limit:
            total = len(rows)  # the whole list is on this page
        else:
            total = await uow.session.scalar(select(func.count()).select_from(joined).where(*conditions))
        schedules = await schedules_of(uow, rows)
    keyring = uow.keyring
    return [
        summary(
            opened_assignment(r, keyring), {**keyring.open_json(r["personal"]), "reference": r["reference"]}, now=now
        )
        | {"series": series_summary(r, schedules)}
        for r in rows
    ], total


async def rejected_by_hub(uow: UnitOfWork, *, hub: str, limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    """The cases this hub rejected, newest first, and where each is now: no resident's details (no longer theirs)."""
    c = assignment_changes.c
    rejections = (
        select(c.assignment_id, func.max(c.at).label("rejected_at"))
        .where(c.from_hub == hub, c.to_status == str(Status.REJECTED))
        .group_by(c.assignment_id)
        .subquery()
    )
    query = (
        select(
            assignments.c.id,
            assignments.c.request_id,
            assignments.c.referral_id,
            assignments.c.request_type,
            assignments.c.status,
            assignments.c.hub,
            assignments.c.council_name,
            assignments.c.updated_at,
            referrals.c.reference,
            rejections.c.rejected_at,
        )
        .join(rejections, rejections.c.assignment_id == assignments.c.id)
        .join(referrals, referrals.c.id == assignments.c.referral_id)
    )
    async with uow:
        rows = (
            await uow.session.execute(
                query.order_by(rejections.c.rejected_at.desc(), assignments.c.id).limit(limit).offset(offset)
            )
        ).all()
        total = await uow.session.scalar(select(func.count()).select_from(rejections))
        reasons = (
            dict(
                (
                    await uow.session.execute(
                        select(c.assignment_id, c.reason)
                        .where(
                            c.from_hub == hub,
                            c.to_status == str(Status.REJECTED),
                            c.assignment_id.in_([r.id for r in rows]),
                        )
                        .order_by(c.id)
                    )
                ).all()
            )
            if rows
            else {}
        )
    return [
        {
            "id": r.id,
            "request_id": r.request_id,
            "referral_id": r.referral_id,
            "reference": r.reference,
            "type": r.request_type,
            "rejected_at": r.rejected_at,
            "reason": reasons.get(r.id),
            "now": {"status": r.status, "hub": r.hub, "council_name": r.council_name, "since": r.updated_at},
        }
        for r in rows
    ], total


async def hub_exists(uow: UnitOfWork, slug: str) -> None:
    async with uow:
        await uow.assignments.hub(slug)


async def read_feed(uow: UnitOfWork, *, hub: str, cursor: int, limit: int) -> dict:
    """A hub's feed after `cursor`, in order; `next_cursor` is where to ask from next time."""
    async with uow:
        await uow.assignments.hub(hub)
        rows = (
            await uow.session.execute(
                select(hub_feed.c.seq, hub_feed.c.event)
                .where(hub_feed.c.hub == hub, hub_feed.c.seq > cursor)
                .order_by(hub_feed.c.seq)
                .limit(limit)
            )
        ).all()
    items = [{"seq": r.seq, "event": orjson.loads(uow.keyring.open(r.event))} for r in rows]
    return {"hub": hub, "items": items, "next_cursor": rows[-1].seq if rows else cursor}


async def area_of(uow: UnitOfWork, *, postcode: str, routing: Routing) -> dict:
    """Who helps at a postcode: the district hub in Kent, the council responsible elsewhere, or nobody known."""
    if routing.directory is None:
        raise RuntimeError("the postcode directory is not loaded yet")
    async with uow:
        rows = list((await routing.hubs(uow)).values())
    decision = route(routing.directory.lookup(postcode), [Hub(r.slug, r.name, r.district_code) for r in rows])
    council = decision.council or decision.district
    return {
        "postcode": decision.postcode or postcode,
        "outcome": str(decision.outcome),
        "in_kent": decision.outcome is not RoutingOutcome.OUT_OF_AREA,
        "hub": decision.hub.slug if decision.hub else None,
        "hub_name": decision.hub.name if decision.hub else None,
        "council_code": council.code if council else None,
        "council_name": council.name if council else None,
    }


async def request_status(uow: UnitOfWork, *, reference: str, postcode: str) -> list[dict]:
    """Each request of the referral with this reference, if the resident's postcode matches: type, status, who helps.

    Nothing else: a reference and a postcode are all a resident has, so the answer
    carries no name, address or detail. A wrong pair finds nothing, as an unknown one.
    """
    keyring = uow.keyring
    async with uow:
        found = [
            r
            for r in (
                await uow.session.execute(
                    select(referrals.c.id, referrals.c.personal).where(referrals.c.reference == reference)
                )
            ).mappings()
            if postcode_of(keyring.open_json(r["personal"])) == postcode
        ]
        if not found:
            return []
        rows = (
            (
                await uow.session.execute(
                    select(
                        assignments.c.request_type,
                        assignments.c.status,
                        assignments.c.hub,
                        assignments.c.council_name,
                        assignments.c.updated_at,
                        hubs.c.name.label("hub_name"),
                    )
                    .select_from(assignments.outerjoin(hubs, hubs.c.slug == assignments.c.hub))
                    .where(assignments.c.referral_id == found[0]["id"])
                    .order_by(assignments.c.created_at)
                )
            )
            .mappings()
            .all()
        )
    return [
        {
            "type": r["request_type"],
            "status": r["status"],
            "hub": r["hub"],
            "hub_name": r["hub_name"],
            "council_name": r["council_name"],
            "updated_at": r["updated_at"],
        }
        for r in rows
    ]
