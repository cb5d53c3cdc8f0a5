"""Fulfilment use cases: load, apply the domain rule, record the change and its events, commit once.

Event handlers' use cases (`route_referrals`, `amend_referral`, `cancel_request`,
`erase_resident`) work inside the consumer's unit of work and never commit: the
consumer commits, with the inbox rows. The others open their own transaction and
commit once. The rooms around this one: `routing` (where a request goes, and the
referrals routed in batches), `repository` (rows, SQL and sealing),
`announcements` (what the events say and where they go), `reading`, `sla`, `erasure`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, or_, select, update

from services.fulfilment import domain
from services.fulfilment.announcements import Outgoing, announce, publish_state_page
from services.fulfilment.domain import Assignment, Change, Series, Status
from services.fulfilment.erasure import erase_resident
from services.fulfilment.hubs import KENT_HUBS
from services.fulfilment.models import assignment_changes, assignments, case_notes, hubs
from services.fulfilment.reading import (
    area_of,
    get_assignment,
    get_hub,
    hub_exists,
    list_assignments,
    list_hubs,
    may_see,
    read_feed,
    rejected_by_hub,
    request_status,
)
from services.fulfilment.repository import CARRIED_OVER, assignment_of, new_assignment_row
from services.fulfilment.routing import Routing, route_referral, route_referrals
from services.fulfilment.sla import EscalationScheduler, escalate_overdue
from shared.auth import Principal
from shared.db import new_id
from shared.errors import Forbidden, NotFound, ValidationFailed
from shared.events import AssignmentAmendedV1, AssignmentHolderChangedV1, ReferralAmendedV1, RequestCancelledV1
from shared.settings import Topics
from shared.uow import UnitOfWork

__all__ = [  # the use cases by their old names: api.py, app.py, the CLI and the tests call them here
    "EscalationScheduler",
    "Routing",
    "TransitionRequest",
    "add_case_note",
    "amend_referral",
    "area_of",
    "cancel_request",
    "change_hub",
    "check_hub_access",
    "erase_resident",
    "escalate_overdue",
    "get_assignment",
    "get_hub",
    "hub_exists",
    "list_assignments",
    "list_hubs",
    "publish_state_page",
    "read_feed",
    "rejected_by_hub",
    "request_status",
    "route_referral",
    "route_referrals",
    "seed_hubs",
    "set_follow_up",
    "transition",
]

log = logging.getLogger(__name__)


# --- hubs ---------------------------------------------------------------------------


async def seed_hubs(uow: UnitOfWork) -> None:
    """The 12 district hubs and their feed counters, added where missing (administrators edit them)."""
    async with uow:
        now = uow.now()
        await uow.assignments.seed_hubs(
            [
                {
                    "slug": h.slug,
                    "name": h.name,
                    "district_code": h.district_code,
                    "sla": {},
                    "updated_at": now,
                    "updated_by": domain.SYSTEM,
                }
                for h in KENT_HUBS
            ],
            [{"hub": h.slug, "last_seq": 0} for h in KENT_HUBS],
        )
        await uow.commit()


async def change_hub(uow: UnitOfWork, *, slug: str, values: dict, by: Principal) -> dict:
    """An administrator edits a hub's contact details, hours, webhook or SLA."""
    if "sla" in values:
        errors = domain.validate_sla_overrides(values["sla"] or {})
        if errors:
            raise ValidationFailed(errors)
        values["sla"] = values["sla"] or {}
    async with uow:
        await uow.assignments.hub(slug)
        if values:
            await uow.session.execute(
                update(hubs).where(hubs.c.slug == slug).values(**values, updated_at=uow.now(), updated_by=by.subject)
            )
        row = dict(await uow.assignments.hub(slug))
        if row["webhook_url"] and not row["webhook_secret"]:
            # An unsigned webhook would let anyone post "assignments" to the hub.
            raise ValidationFailed([{"field": "webhook_secret", "reason": "is required with a webhook_url"}])
        await uow.commit()
        return row


def check_hub_access(principal: Principal, hub: str) -> None:
    """Hub staff see their own hub only; administrators every hub."""
    if "assignments:admin" in principal.scopes:
        return
    if principal.hub != hub:
        raise Forbidden(f"your token is for hub {principal.hub!r}; this is hub {hub!r}")


# --- consumed events (inside the consumer's unit of work: never commit) ---------------


async def amend_referral(uow: UnitOfWork, amended: ReferralAmendedV1, *, routing: Routing, topics: Topics) -> None:
    """Keep the resident's details current; re-route what no hub has taken on yet if the address moved.

    Accepted and in-progress requests stay with their hub, which hears the new
    details; if the new address is another district's, the request is flagged
    for follow-up with a note, and the hub can reject it as wrong district (it
    then goes where the new postcode says).
    """
    referral_id = str(amended.referral_id)
    repo = uow.assignments
    current = await repo.referral(referral_id)
    if current is None:
        log.warning("amendment of referral %s, which fulfilment never received; ignored", referral_id)
        return
    now = uow.now()
    resident = amended.resident.model_dump(mode="json")
    consent_changed = current["consent_to_share"] != amended.consent_to_share
    await repo.set_personal(
        referral_id,
        resident=resident,
        referrer=current["referrer"],
        consent_to_share=amended.consent_to_share,
        updated_at=now,
    )
    referral_row = {**current, "resident": resident, "consent_to_share": amended.consent_to_share}
    rows = await repo.locked(
        assignments.c.referral_id == referral_id,
        assignments.c.status.in_([str(s) for s in domain.OPEN]),
        order_by=assignments.c.id,
    )
    placement = None
    if amended.address_changed or consent_changed:
        placement = routing.place(
            amended.resident.address.postcode,
            consent_to_share=amended.consent_to_share,
            hub_rows=await routing.hubs(uow),
        )
    out = Outgoing(topics)
    schedules = await repo.series(r["series_id"] for r in rows if r["series_id"])
    for row in rows:
        a = assignment_of(row)
        changes: list[Change] = []
        if placement is not None:
            changes = a.reroute(placement, at=now, reason=f"address amended: {placement.reason}")
            await repo.save(a, changes=changes)
            announce(
                uow,
                out,
                a=a,
                changes=changes,
                request_row=row,
                referral_row=referral_row,
                series=schedules.get(a.series_id) if a.series_id else None,
            )
        if a.hub and not any(c.to_hub != c.from_hub for c in changes):
            # Still this hub's: it needs the details as they are now.
            out.to_hub(
                uow,
                AssignmentAmendedV1(
                    assignment_id=a.id,
                    request_id=a.request_id,
                    referral_id=referral_id,
                    hub=a.hub,
                    amended_at=now,
                    changed=amended.changed,
                    address_changed=amended.address_changed,
                    resident=amended.resident,
                    consent_to_share=amended.consent_to_share,
                ),
                hub=a.hub,
                key=referral_id,
                assignment_id=a.id,
            )
            moved_away = (
                placement is not None and a.status in (Status.ACCEPTED, Status.IN_PROGRESS) and placement.hub != a.hub
            )
            if moved_away:
                where = {
                    Status.ROUTED: f"{placement.hub}'s district",
                    Status.OUT_OF_AREA: f"{placement.council_name}, outside Kent",
                }.get(placement.status, f"a place routing cannot settle ({placement.reason})")
                await uow.session.execute(
                    update(assignments).where(assignments.c.id == a.id).values(follow_up=True, updated_at=now)
                )
                await uow.session.execute(
                    insert(case_notes).values(
                        assignment_id=a.id,
                        kind="note",
                        hub=a.hub,
                        at=now,
                        by=domain.SYSTEM,
                        sealed_text=uow.keyring.seal_text(
                            f"The resident's address changed and is now in {where}. If another hub should help, "
                            "reject this as wrong-district and it goes there."
                        ),
                    )
                )
    await out.flush(uow)


async def cancel_request(uow: UnitOfWork, cancelled: RequestCancelledV1, *, topics: Topics) -> None:
    """The resident's request was cancelled: close its assignment, and tell the hub that held it.

    A recurring request's cancellation closes its open occurrence and ends the series: no further one opens.
    """
    repo = uow.assignments
    request_id = str(cancelled.request_id)
    rows = await repo.locked(
        or_(assignments.c.request_id == request_id, assignments.c.series_id == request_id), order_by=assignments.c.id
    )
    if not rows:
        log.warning("cancellation of request %s, which fulfilment never received; ignored", cancelled.request_id)
        return
    now = uow.now()
    recurs = (await repo.series([request_id], lock=True)).get(request_id)
    if recurs is not None and recurs.end(reason="cancelled", at=now):
        await repo.save_series(recurs)
    out = Outgoing(topics)
    referral_row = await repo.referral(rows[0]["referral_id"])
    for row in rows if recurs is not None else rows[:1]:
        a = assignment_of(row)
        changes = a.cancel(reason=cancelled.reason, by="referrals", at=now)
        await repo.save(a, changes=changes)
        announce(uow, out, a=a, changes=changes, request_row=row, referral_row=referral_row, series=recurs)
    await out.flush(uow)


# --- hub staff and administrators ---------------------------------------------------


@dataclass(frozen=True)
class TransitionRequest:
    to: Status
    reason: str | None = None
    outcome: str | None = None
    note: str | None = None
    hub: str | None = None
    council: str | None = None
    at: datetime | None = None
    """When it happened, if not now: see `domain.check_backdated`."""


async def transition(
    uow: UnitOfWork,
    *,
    assignment_id: str,
    request: TransitionRequest,
    by: Principal,
    routing: Routing,
    topics: Topics,
) -> tuple[dict, list[Change]]:
    """Move an assignment on; a rejection re-routes it in the same transaction."""
    is_admin = "assignments:admin" in by.scopes
    domain.check_actor_may(request.to, role_is_admin=is_admin)
    async with uow:
        repo = uow.assignments
        row = await visible_for_change(uow, assignment_id, by=by)
        a = assignment_of(row)
        now = uow.now()
        if request.at is not None:
            last_change = await uow.session.scalar(
                select(func.max(assignment_changes.c.at)).where(assignment_changes.c.assignment_id == a.id)
            )
            domain.check_backdated(request.at, scopes=by.scopes, last_change=last_change, now=now)
            now = request.at
        hub_rows = await repo.hubs()
        recurs = (await repo.series([a.series_id], lock=True)).get(a.series_id) if a.series_id else None
        named = None
        if request.hub is not None:
            if request.hub not in hub_rows:
                raise ValidationFailed([{"field": "hub", "reason": f"no hub {request.hub!r}"}])
            named = routing.hub_placement(hub_rows[request.hub], reason="placed by an administrator")
        referral_row = await repo.referral(a.referral_id)
        if request.to is Status.REJECTED:
            by_postcode = routing.place(
                referral_row["resident"]["address"]["postcode"],
                consent_to_share=referral_row["consent_to_share"],
                hub_rows=hub_rows,
            )
            changes = a.reject(
                reason=request.reason,
                by=by.subject,
                at=now,
                note=request.note,
                named=named,
                by_postcode=by_postcode,
                triage_within=routing.triage_within,
            )
        else:
            placement = named
            if request.to is Status.OUT_OF_AREA:
                if not request.council:
                    raise ValidationFailed([{"field": "council", "reason": "is required: the council responsible"}])
                placement = routing.out_of_area(
                    request.council,
                    reason=f"out of area: {request.council} is responsible",
                    district_code=a.district_code,
                )
            changes = a.move(
                request.to,
                by=by.subject,
                at=now,
                reason=request.reason,
                outcome=request.outcome,
                note=request.note,
                placement=placement,
            )
        await repo.save(a, changes=changes)
        out = Outgoing(topics)
        following = None
        if recurs is not None and a.status in domain.CLOSED:
            following = await open_next_occurrence(uow, recurs, after=a, after_row=row, routing=routing, at=now)
        announce(uow, out, a=a, changes=changes, request_row=row, referral_row=referral_row, series=recurs)
        if following is not None:
            opened, opened_change, opened_row = following
            if await repo.carry_holder(from_id=a.id, to_id=opened.id, hub=opened.hub or "", at=now, by=by.subject):
                uow.publish(
                    AssignmentHolderChangedV1(
                        assignment_id=opened.id,
                        request_id=opened.request_id,
                        referral_id=opened.referral_id,
                        request_type=opened.request_type,
                        urgency=opened.urgency,
                        status=str(opened.status),
                        hub=opened.hub or "",
                        change=CARRIED_OVER,
                        held=True,
                        changed_at=now,
                    ),
                    key=opened.referral_id,
                )
            announce(
                uow,
                out,
                a=opened,
                changes=[opened_change],
                request_row=opened_row,
                referral_row=referral_row,
                series=recurs,
            )
        await out.flush(uow)
        await uow.commit()
        result = {"id": a.id, "status": str(a.status), "hub": a.hub}
        if following is not None:
            result["next_occurrence"] = {"id": following[0].id, "occurrence": following[0].occurrence}
        return result, changes


async def open_next_occurrence(
    uow: UnitOfWork, recurs: Series, *, after: Assignment, after_row, routing: Routing, at: datetime
) -> tuple[Assignment, Change, dict] | None:
    """Occurrence `after` of `recurs` has closed: open the next for the same hub, or end the series.

    In the caller's transaction, with the closing change: the next occurrence is never
    lost, and the unique (series, occurrence) makes a second one impossible.
    Returns the new assignment, its first change and its row, or None.
    """
    repo = uow.assignments
    number = recurs.after_closed(after, at=at)
    if number is None or after.hub is None:
        if number is not None:
            recurs.end(reason="no hub to send it to", at=at)
        await repo.save_series(recurs)
        return None
    hub_row = (await repo.hubs())[after.hub]
    a, change = recurs.open_occurrence(
        number,
        after=after,
        placement=routing.hub_placement(hub_row, reason="the same hub"),
        id=new_id(),
        at=at,
    )
    first_needed_by = after_row["needed_by"]
    shift = recurs.scheduled_at(number).date() - recurs.scheduled_at(after.occurrence or 1).date()
    request_row = {
        "details": after_row["details"],
        "needed_by": first_needed_by + shift if first_needed_by else None,
        "duplicate_of": None,
    }
    await repo.add([new_assignment_row(a, request_row=request_row, now=uow.now())])
    await repo.record([(a.id, change)])
    await repo.save_series(recurs)
    return a, change, request_row


async def add_case_note(
    uow: UnitOfWork,
    *,
    assignment_id: str,
    by: Principal,
    kind: str,
    text: str | None,
    contact_outcome: str | None = None,
) -> dict:
    """A case note, or a contact attempt with its outcome."""
    if kind == "contact-attempt" and contact_outcome not in domain.CONTACT_OUTCOMES:
        raise ValidationFailed([{"field": "outcome", "reason": f"one of {', '.join(domain.CONTACT_OUTCOMES)}"}])
    async with uow:
        row = await visible_for_change(uow, assignment_id, by=by)
        values = {
            "assignment_id": assignment_id,
            "kind": kind,
            "contact_outcome": contact_outcome,
            "text": text,
            "hub": row["hub"],
            "at": uow.now(),
            "by": by.subject,
        }
        stored = {**{k: v for k, v in values.items() if k != "text"}, "sealed_text": uow.keyring.seal_text(text)}
        note_id = (
            await uow.session.execute(insert(case_notes).values(**stored).returning(case_notes.c.id))
        ).scalar_one()
        await uow.session.execute(
            update(assignments).where(assignments.c.id == assignment_id).values(updated_at=values["at"])
        )
        await uow.commit()
        return {"id": note_id, **values}


async def set_follow_up(uow: UnitOfWork, *, assignment_id: str, by: Principal, follow_up: bool, on=None) -> dict:
    async with uow:
        await visible_for_change(uow, assignment_id, by=by)
        await uow.session.execute(
            update(assignments)
            .where(assignments.c.id == assignment_id)
            .values(follow_up=follow_up, follow_up_on=on if follow_up else None, updated_at=uow.now())
        )
        await uow.commit()
    return await get_assignment(uow, assignment_id=assignment_id, by=by)


async def visible_for_change(uow: UnitOfWork, assignment_id: str, *, by: Principal):
    rows = await uow.assignments.locked(assignments.c.id == assignment_id)
    if not rows or not may_see(by, rows[0]["hub"]):
        raise NotFound(f"no assignment {assignment_id}")
    return rows[0]
