"""Fulfilment use cases: load, apply the domain rule, record the change and its events, commit once.

Event handlers' use cases (`route_referral`, `amend_referral`, `cancel_request`)
work inside the consumer's unit of work and never commit: the consumer commits,
with the inbox row. The others open their own transaction and commit once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from services.fulfilment import domain
from services.fulfilment.domain import Assignment, Change, Placement, Status
from services.fulfilment.hubs import KENT_HUBS, Hub, RoutingOutcome, route
from services.fulfilment.models import (
    assignment_changes, assignments, case_notes, escalations, feed_heads, hub_feed, hubs, referrals,
    webhook_deliveries,
)
from services.fulfilment.postcodes import PostcodeDirectory
from shared import privacy
from shared.auth import Principal
from shared.crypto import Keyring
from shared.errors import Forbidden, NotFound, ValidationFailed
from shared.events import (
    AssignedRequestV1, AssignmentAmendedV1, AssignmentEscalatedV1, AssignmentRoutedV1, AssignmentStatusChangedV1,
    AssignmentWithdrawnV1, CloudEvent, EventData, ReferralAmendedV1, ReferralReceivedV1, RequestCancelledV1,
    ResidentErasedV1, AssignmentErasedV1,
)
from shared.settings import Topics
from shared.lifecycle import StopsBetweenRounds
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

# --- routing ------------------------------------------------------------------------

class Routing:
    """Where requests go: the postcode directory held in memory, and the queues' pick-up times.

    The directory is loaded once at start-up (or given by a test) and never read
    from files per request.
    """

    def __init__(
        self, *, directory: PostcodeDirectory | None = None, triage_within: timedelta, out_of_area_within: timedelta,
        hubs_ttl_seconds: float = 5.0,
    ):
        self.directory = directory
        self.triage_within = triage_within
        self.out_of_area_within = out_of_area_within
        self.hubs_ttl_seconds = hubs_ttl_seconds
        self._hubs: dict | None = None
        self._hubs_loaded_at = 0.0

    async def hubs(self, uow: UnitOfWork) -> dict:
        """The hubs table, read at most every few seconds: routing every event need not ask again.

        An administrator's edit applies here at once, and in other instances within the TTL.
        """
        now = asyncio.get_running_loop().time()
        if self._hubs is None or now - self._hubs_loaded_at > self.hubs_ttl_seconds:
            self._hubs = await _hub_rows(uow)
            self._hubs_loaded_at = now
        return self._hubs

    def forget_hubs(self) -> None:
        self._hubs = None

    def place(self, postcode: str, *, consent_to_share: bool, hub_rows: Iterable) -> Placement:
        if self.directory is None:
            raise RuntimeError("the postcode directory is not loaded yet")
        rows = list(hub_rows)
        decision = route(self.directory.lookup(postcode), [Hub(r.slug, r.name, r.district_code) for r in rows])
        return domain.placement_for(
            decision, hub_sla={r.slug: r.sla or {} for r in rows}, triage_within=self.triage_within,
            out_of_area_within=self.out_of_area_within, consent_to_share=consent_to_share,
        )

    def hub_placement(self, hub_row, *, reason: str) -> Placement:
        """A hub named by a person (an administrator, or the hub that rejects it)."""
        return Placement(
            Status.ROUTED, reason=reason, hub=hub_row.slug, district_code=hub_row.district_code, sla=hub_row.sla or {},
        )

    def out_of_area(self, council_name: str, *, reason: str, district_code: str | None = None) -> Placement:
        return Placement(
            Status.OUT_OF_AREA, reason=reason, district_code=district_code, council_name=council_name,
            pick_up_within=self.out_of_area_within,
        )


# --- hubs ---------------------------------------------------------------------------

async def seed_hubs(uow: UnitOfWork) -> None:
    """The 12 district hubs and their feed counters, added where missing (administrators edit them)."""
    async with uow:
        now = uow.now()
        hub_rows = [
            {"slug": h.slug, "name": h.name, "district_code": h.district_code,
             "sla": {}, "updated_at": now, "updated_by": domain.SYSTEM}
            for h in KENT_HUBS
        ]
        heads = [{"hub": h.slug, "last_seq": 0} for h in KENT_HUBS]
        # ON CONFLICT DO NOTHING: two instances starting together both seed, neither fails.
        dialect_insert = postgresql.insert if uow.db.dialect == "postgresql" else sqlite.insert
        await uow.session.execute(dialect_insert(hubs).on_conflict_do_nothing(), hub_rows)
        await uow.session.execute(dialect_insert(feed_heads).on_conflict_do_nothing(), heads)
        await uow.commit()


async def list_hubs(uow: UnitOfWork) -> list[dict]:
    async with uow:
        rows = (await uow.session.execute(select(hubs).order_by(hubs.c.name))).mappings().all()
        return [dict(r) for r in rows]


async def get_hub(uow: UnitOfWork, slug: str) -> dict:
    async with uow:
        return dict(await _hub_row(uow, slug))


async def change_hub(uow: UnitOfWork, *, slug: str, values: dict, by: Principal) -> dict:
    """An administrator edits a hub's contact details, hours, webhook or SLA."""
    if "sla" in values:
        errors = domain.validate_sla_overrides(values["sla"] or {})
        if errors:
            raise ValidationFailed(errors)
        values["sla"] = values["sla"] or {}
    async with uow:
        await _hub_row(uow, slug)
        if values:
            await uow.session.execute(
                update(hubs).where(hubs.c.slug == slug).values(**values, updated_at=uow.now(), updated_by=by.subject)
            )
        row = dict(await _hub_row(uow, slug))
        if row["webhook_url"] and not row["webhook_secret"]:
            # An unsigned webhook would let anyone post "assignments" to the hub.
            raise ValidationFailed([{"field": "webhook_secret", "reason": "is required with a webhook_url"}])
        await uow.commit()
        return row


async def _hub_row(uow: UnitOfWork, slug: str):
    row = (await uow.session.execute(select(hubs).where(hubs.c.slug == slug))).mappings().first()
    if row is None:
        raise NotFound(f"no hub {slug!r}")
    return row


async def _hub_rows(uow: UnitOfWork) -> dict[str, object]:
    return {r.slug: r for r in (await uow.session.execute(select(hubs))).all()}


def check_hub_access(principal: Principal, hub: str) -> None:
    """Hub staff see their own hub only; administrators every hub."""
    if "assignments:admin" in principal.scopes:
        return
    if principal.hub != hub:
        raise Forbidden(f"your token is for hub {principal.hub!r}; this is hub {hub!r}")


# --- what events say, and where they go ---------------------------------------------

@dataclass
class Outgoing:
    """What one use case sends: events for the outbox now, and hub feed entries written just before commit."""

    topics: Topics
    hub_rows: dict | None = None
    """The hubs, if the use case has them already (their webhook URLs are needed)."""
    feed: list[tuple[str, str, CloudEvent]] = field(default_factory=list)

    def to_hub(self, uow: UnitOfWork, data: EventData, *, hub: str, key: str, assignment_id: str) -> None:
        """On the hub's topic, in its pull feed and (if it has one) to its webhook: the same event."""
        event = uow.publish(data, topic=self.topics.hub(hub), key=key)
        self.feed.append((hub, assignment_id, event))

    def status(self, uow: UnitOfWork, data: EventData, *, key: str) -> None:
        uow.publish(data, topic=self.topics.assignment_status, key=key)

    async def flush(self, uow: UnitOfWork) -> None:
        """Append the feed entries, hub by hub in slug order.

        Each hub's counter row is locked (UPDATE ... RETURNING) until the commit, so
        a hub's sequence numbers are taken in commit order: a reader who sees entry
        n has already been able to see every entry before it, and a cursor never
        skips a row that commits late. Locking in slug order keeps two transactions
        that touch the same two hubs from deadlocking; counters are always the last
        rows a transaction locks.
        """
        entries, self.feed = self.feed, []
        by_hub: dict[str, list[tuple[str, CloudEvent]]] = defaultdict(list)
        for hub, assignment_id, event in entries:
            by_hub[hub].append((assignment_id, event))
        if not by_hub:
            return
        if self.hub_rows is not None:
            webhooks = {slug: row.webhook_url for slug, row in self.hub_rows.items() if row.webhook_url}
        else:
            webhooks = dict((await uow.session.execute(
                select(hubs.c.slug, hubs.c.webhook_url).where(hubs.c.slug.in_(by_hub), hubs.c.webhook_url.is_not(None))
            )).all())
        now = uow.now()
        for hub in sorted(by_hub):
            items = by_hub[hub]
            last = await uow.session.scalar(
                update(feed_heads).where(feed_heads.c.hub == hub)
                .values(last_seq=feed_heads.c.last_seq + len(items)).returning(feed_heads.c.last_seq)
            )
            first = last - len(items) + 1
            await uow.session.execute(insert(hub_feed), [
                {"hub": hub, "seq": first + i, "event_id": str(event.id), "type": event.type,
                 "assignment_id": assignment_id, "event": uow.keyring.seal(event.to_bytes()), "created_at": now}
                for i, (assignment_id, event) in enumerate(items)
            ])
            if webhooks.get(hub):
                await uow.session.execute(insert(webhook_deliveries), [
                    {"hub": hub, "feed_seq": first + i, "event_id": str(event.id), "type": event.type,
                     "url": webhooks[hub], "status": "pending", "attempts": 0, "next_attempt_at": now,
                     "created_at": now}
                    for i, (_, event) in enumerate(items)
                ])


def _status_event(a: Assignment, change: Change, *, final: bool) -> AssignmentStatusChangedV1:
    # Times and due dates describe where the assignment rests; a passing step
    # (rejected, on its way elsewhere) carries only what happened.
    return AssignmentStatusChangedV1(
        assignment_id=a.id, request_id=a.request_id, referral_id=a.referral_id, request_type=a.request_type,
        urgency=a.urgency, status=change.to_status,
        previous_status=change.from_status, hub=change.to_hub, previous_hub=change.from_hub,
        district_code=a.district_code,
        council_code=a.council_code if final else None, council_name=a.council_name if final else None,
        reason=change.reason, outcome=change.outcome, received_at=a.received_at, changed_at=change.at,
        routed_at=a.routed_at if final else None, accepted_at=a.accepted_at if final else None,
        closed_at=a.closed_at if final else None,
        accept_due_at=a.accept_due_at if final else None, fulfil_due_at=a.fulfil_due_at if final else None,
    )


def _routed_event(a: Assignment, *, request_row, referral_row, previous_hub: str | None) -> AssignmentRoutedV1:
    return AssignmentRoutedV1(
        assignment_id=a.id, hub=a.hub, district_code=a.district_code, referral_id=a.referral_id,
        reference=referral_row["reference"], channel=referral_row["channel"], received_at=a.received_at,
        routed_at=a.routed_at, accept_due_at=a.accept_due_at, fulfil_due_at=a.fulfil_due_at, reason=a.reason,
        previous_hub=previous_hub,
        request=AssignedRequestV1(
            request_id=a.request_id, type=a.request_type, details=request_row["details"],
            needed_by=request_row["needed_by"], urgency=a.urgency, duplicate_of=request_row["duplicate_of"],
        ),
        resident=referral_row["resident"], referrer=referral_row["referrer"],
        consent_to_share=referral_row["consent_to_share"],
    )


def _announce(
    uow: UnitOfWork, out: Outgoing, *, a: Assignment, changes: list[Change], request_row, referral_row,
) -> None:
    """The status events of these changes, and what each hub involved must hear."""
    for index, change in enumerate(changes):
        out.status(uow, _status_event(a, change, final=index == len(changes) - 1), key=a.referral_id)
        left = change.from_hub is not None and (change.to_hub != change.from_hub or change.to_status is Status.CANCELLED)
        if left:
            rejected = index > 0 and changes[index - 1].to_status is Status.REJECTED
            why = "cancelled" if change.to_status is Status.CANCELLED else "rejected" if rejected else "re-routed"
            out.to_hub(uow, AssignmentWithdrawnV1(
                assignment_id=a.id, request_id=a.request_id, referral_id=a.referral_id, hub=change.from_hub,
                why=why, reason=changes[index - 1].reason if rejected else change.reason, withdrawn_at=change.at,
            ), hub=change.from_hub, key=a.referral_id, assignment_id=a.id)
        if change.to_status is Status.ROUTED and change.to_hub and change.to_hub != change.from_hub:
            out.to_hub(uow, _routed_event(
                a, request_row=request_row, referral_row=referral_row, previous_hub=change.from_hub,
            ), hub=change.to_hub, key=a.referral_id, assignment_id=a.id)


# --- rows <-> domain ------------------------------------------------------------------

def _assignment(row) -> Assignment:
    return Assignment(
        id=row["id"], request_id=row["request_id"], referral_id=row["referral_id"],
        request_type=row["request_type"], urgency=row["urgency"], received_at=row["received_at"],
        status=Status(row["status"]), reason=row["reason"], hub=row["hub"], district_code=row["district_code"],
        council_code=row["council_code"], council_name=row["council_name"], routed_at=row["routed_at"],
        accepted_at=row["accepted_at"], closed_at=row["closed_at"], outcome=row["outcome"],
        accept_due_at=row["accept_due_at"], fulfil_due_at=row["fulfil_due_at"],
        accept_escalated_at=row["accept_escalated_at"], fulfil_escalated_at=row["fulfil_escalated_at"],
        rejected_by=list(row["rejected_by"] or []),
    )


_DOMAIN_COLUMNS = (
    "status", "reason", "hub", "district_code", "council_code", "council_name", "routed_at", "accepted_at",
    "closed_at", "outcome", "accept_due_at", "fulfil_due_at", "accept_escalated_at", "fulfil_escalated_at",
)


def _values(a: Assignment) -> dict:
    values = {name: getattr(a, name) for name in _DOMAIN_COLUMNS}
    values["status"] = str(a.status)
    values["rejected_by"] = list(a.rejected_by)
    return values


async def _save(uow: UnitOfWork, a: Assignment, *, changes: list[Change]) -> None:
    if not changes:
        return
    await uow.session.execute(
        update(assignments).where(assignments.c.id == a.id)
        .values(**_values(a), updated_at=uow.now(), version=assignments.c.version + 1)
    )
    await _record(uow, a.id, changes=changes)


async def _record(uow: UnitOfWork, assignment_id: str, *, changes: list[Change]) -> None:
    await _record_many(uow, [(assignment_id, change) for change in changes])


async def _record_many(uow: UnitOfWork, changes: list[tuple[str, Change]]) -> None:
    await uow.session.execute(insert(assignment_changes), [
        {"assignment_id": assignment_id, "at": c.at, "by": c.by,
         "from_status": str(c.from_status) if c.from_status else None, "to_status": str(c.to_status),
         "from_hub": c.from_hub, "to_hub": c.to_hub, "reason": c.reason, "outcome": c.outcome,
         "sealed_note": uow.keyring.seal_text(c.note)}
        for assignment_id, c in changes
    ])


async def _locked(uow: UnitOfWork, query) -> list[dict]:
    """Assignment rows for changing, details opened: locked until commit on PostgreSQL (SQLite locks the database at BEGIN)."""
    return [_opened_assignment(r, uow.keyring) for r in (await uow.session.execute(query.with_for_update())).mappings()]


async def _referral_row(uow: UnitOfWork, referral_id: str) -> dict | None:
    row = (await uow.session.execute(select(referrals).where(referrals.c.id == referral_id))).mappings().first()
    return None if row is None else _opened_referral(row, uow.keyring)


# --- sealed at rest (shared/crypto.py): rows in clear here, sealed in the tables --------

def _sealed_referral(row: dict, keyring: Keyring) -> dict:
    """The resident and the referrer in one sealed object: one encryption per referral."""
    stored = {k: v for k, v in row.items() if k not in ("resident", "referrer")}
    stored["personal"] = keyring.seal_json({"resident": row["resident"], "referrer": row["referrer"]})
    return stored


def _opened_referral(row, keyring: Keyring) -> dict:
    return {**{k: v for k, v in row.items() if k != "personal"}, **keyring.open_json(row["personal"])}


def _sealed_assignment(row: dict, keyring: Keyring) -> dict:
    return keyring.seal_field(row, "details", into="sealed_details")


def _opened_assignment(row, keyring: Keyring) -> dict:
    return keyring.open_field(row, "sealed_details", as_="details")


def _opened_change(row, keyring: Keyring) -> dict:
    out = {k: v for k, v in row.items() if k != "sealed_note"}
    out["note"] = keyring.open_text(row["sealed_note"])
    return out


def _opened_note(row, keyring: Keyring) -> dict:
    out = {k: v for k, v in row.items() if k != "sealed_text"}
    out["text"] = keyring.open_text(row["sealed_text"])
    return out


# --- consumed events (inside the consumer's unit of work: never commit) ---------------

async def route_referral(uow: UnitOfWork, referral: ReferralReceivedV1, *, routing: Routing, topics: Topics) -> int:
    """One assignment for each request of the referral, placed from the resident's postcode.

    Returns how many were made: 0 for a referral seen before (a redelivery, or a
    republished copy under another event id).
    """
    request_ids = [str(r.request_id) for r in referral.requests]
    existing = set(await uow.session.scalars(
        select(assignments.c.request_id).where(assignments.c.request_id.in_(request_ids))
    ))
    fresh = [r for r in referral.requests if str(r.request_id) not in existing]
    if not fresh:
        return 0
    now = uow.now()
    # A backfilled referral (a migration, a demo) reached its hub when it was received.
    opened_at = referral.received_at if referral.backfilled else now
    referral_id = str(referral.referral_id)
    # Known already only if some of its requests are (a copy of the event that
    # carries more requests than the first): otherwise no need to look.
    referral_row = await _referral_row(uow, referral_id) if existing else None
    if referral_row is None:
        referral_row = {
            "id": referral_id, "reference": referral.reference, "channel": referral.channel,
            "received_at": referral.received_at, "resident": referral.resident.model_dump(mode="json"),
            "referrer": referral.referrer.model_dump(mode="json") if referral.referrer else None,
            "consent_to_share": referral.consent_to_share, "updated_at": now,
        }
        await uow.session.execute(insert(referrals).values(**_sealed_referral(referral_row, uow.keyring)))
    hub_rows = await routing.hubs(uow)
    placement = routing.place(
        referral.resident.address.postcode, consent_to_share=referral.consent_to_share, hub_rows=hub_rows.values(),
    )
    out = Outgoing(topics, hub_rows=hub_rows)
    rows, changes, announcements = [], [], []
    for request in fresh:
        a, change = Assignment.open(
            id=str(uuid.uuid4()), request_id=str(request.request_id), referral_id=referral_id,
            request_type=request.type, urgency=request.urgency, received_at=referral.received_at,
            placement=placement, at=opened_at,
        )
        request_row = {
            "details": request.details, "needed_by": request.needed_by,
            "duplicate_of": str(request.duplicate_of) if request.duplicate_of else None,
        }
        rows.append({
            "id": a.id, "request_id": a.request_id, "referral_id": referral_id, "request_type": a.request_type,
            **request_row, "urgency": a.urgency, "received_at": a.received_at, **_values(a),
            "follow_up": False, "created_at": now, "updated_at": now, "version": 1,
        })
        changes.append((a.id, change))
        announcements.append((a, [change], request_row))
    await uow.session.execute(insert(assignments), [_sealed_assignment(row, uow.keyring) for row in rows])
    await _record_many(uow, changes)
    for a, opened, request_row in announcements:
        _announce(uow, out, a=a, changes=opened, request_row=request_row, referral_row=referral_row)
    await out.flush(uow)
    return len(fresh)


async def amend_referral(uow: UnitOfWork, amended: ReferralAmendedV1, *, routing: Routing, topics: Topics) -> None:
    """Keep the resident's details current; re-route what no hub has taken on yet if the address moved.

    Accepted and in-progress requests stay with their hub, which hears the new
    details; if the new address is another district's, the request is flagged
    for follow-up with a note, and the hub can reject it as wrong district (it
    then goes where the new postcode says).
    """
    referral_id = str(amended.referral_id)
    current = await _referral_row(uow, referral_id)
    if current is None:
        log.warning("amendment of referral %s, which fulfilment never received; ignored", referral_id)
        return
    now = uow.now()
    resident = amended.resident.model_dump(mode="json")
    consent_changed = current["consent_to_share"] != amended.consent_to_share
    await uow.session.execute(
        update(referrals).where(referrals.c.id == referral_id).values(
            personal=uow.keyring.seal_json({"resident": resident, "referrer": current["referrer"]}),
            consent_to_share=amended.consent_to_share, updated_at=now,
        )
    )
    referral_row = {**current, "resident": resident, "consent_to_share": amended.consent_to_share}
    rows = await _locked(uow, select(assignments).where(
        assignments.c.referral_id == referral_id, assignments.c.status.in_([str(s) for s in domain.OPEN]),
    ).order_by(assignments.c.id))
    placement = None
    if amended.address_changed or consent_changed:
        placement = routing.place(
            amended.resident.address.postcode, consent_to_share=amended.consent_to_share,
            hub_rows=(await routing.hubs(uow)).values(),
        )
    out = Outgoing(topics)
    for row in rows:
        a = _assignment(row)
        changes: list[Change] = []
        if placement is not None:
            changes = a.reroute(placement, at=now, reason=f"address amended: {placement.reason}")
            await _save(uow, a, changes=changes)
            _announce(uow, out, a=a, changes=changes, request_row=row, referral_row=referral_row)
        if a.hub and not any(c.to_hub != c.from_hub for c in changes):
            # Still this hub's: it needs the details as they are now.
            out.to_hub(uow, AssignmentAmendedV1(
                assignment_id=a.id, request_id=a.request_id, referral_id=referral_id, hub=a.hub, amended_at=now,
                changed=amended.changed, address_changed=amended.address_changed, resident=amended.resident,
                consent_to_share=amended.consent_to_share,
            ), hub=a.hub, key=referral_id, assignment_id=a.id)
            moved_away = placement is not None and a.status in (Status.ACCEPTED, Status.IN_PROGRESS) \
                and placement.hub != a.hub
            if moved_away:
                where = {
                    Status.ROUTED: f"{placement.hub}'s district",
                    Status.OUT_OF_AREA: f"{placement.council_name}, outside Kent",
                }.get(placement.status, f"a place routing cannot settle ({placement.reason})")
                await uow.session.execute(
                    update(assignments).where(assignments.c.id == a.id).values(follow_up=True, updated_at=now)
                )
                await uow.session.execute(insert(case_notes).values(
                    assignment_id=a.id, kind="note", hub=a.hub, at=now, by=domain.SYSTEM,
                    sealed_text=uow.keyring.seal_text(
                        f"The resident's address changed and is now in {where}. If another hub should help, "
                        "reject this as wrong-district and it goes there."
                    ),
                ))
    await out.flush(uow)


async def cancel_request(uow: UnitOfWork, cancelled: RequestCancelledV1, *, topics: Topics) -> None:
    """The resident's request was cancelled: close its assignment, and tell the hub that held it."""
    rows = await _locked(uow, select(assignments).where(assignments.c.request_id == str(cancelled.request_id)))
    if not rows:
        log.warning("cancellation of request %s, which fulfilment never received; ignored", cancelled.request_id)
        return
    row = rows[0]
    a = _assignment(row)
    changes = a.cancel(reason=cancelled.reason, by="referrals", at=uow.now())
    await _save(uow, a, changes=changes)
    out = Outgoing(topics)
    _announce(uow, out, a=a, changes=changes, request_row=row, referral_row=await _referral_row(uow, a.referral_id))
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
    uow: UnitOfWork, *, assignment_id: str, request: TransitionRequest, by: Principal, routing: Routing,
    topics: Topics,
) -> tuple[dict, list[Change]]:
    """Move an assignment on; a rejection re-routes it in the same transaction."""
    is_admin = "assignments:admin" in by.scopes
    domain.check_actor_may(request.to, role_is_admin=is_admin)
    async with uow:
        row = await _visible_for_change(uow, assignment_id, by=by)
        a = _assignment(row)
        now = uow.now()
        if request.at is not None:
            last_change = await uow.session.scalar(
                select(func.max(assignment_changes.c.at)).where(assignment_changes.c.assignment_id == a.id)
            )
            domain.check_backdated(request.at, scopes=by.scopes, last_change=last_change, now=now)
            now = request.at
        hub_rows = await _hub_rows(uow)
        named = None
        if request.hub is not None:
            if request.hub not in hub_rows:
                raise ValidationFailed([{"field": "hub", "reason": f"no hub {request.hub!r}"}])
            named = routing.hub_placement(hub_rows[request.hub], reason="placed by an administrator")
        referral_row = await _referral_row(uow, a.referral_id)
        if request.to is Status.REJECTED:
            by_postcode = routing.place(
                referral_row["resident"]["address"]["postcode"], consent_to_share=referral_row["consent_to_share"],
                hub_rows=hub_rows.values(),
            )
            changes = a.reject(
                reason=request.reason, by=by.subject, at=now, note=request.note, named=named,
                by_postcode=by_postcode, triage_within=routing.triage_within,
            )
        else:
            placement = named
            if request.to is Status.OUT_OF_AREA:
                if not request.council:
                    raise ValidationFailed([{"field": "council", "reason": "is required: the council responsible"}])
                placement = routing.out_of_area(
                    request.council, reason=f"out of area: {request.council} is responsible",
                    district_code=a.district_code,
                )
            changes = a.move(
                request.to, by=by.subject, at=now, reason=request.reason, outcome=request.outcome,
                note=request.note, placement=placement,
            )
        await _save(uow, a, changes=changes)
        out = Outgoing(topics)
        _announce(uow, out, a=a, changes=changes, request_row=row, referral_row=referral_row)
        await out.flush(uow)
        await uow.commit()
        return {"id": a.id, "status": str(a.status), "hub": a.hub}, changes


async def add_case_note(
    uow: UnitOfWork, *, assignment_id: str, by: Principal, kind: str, text: str | None,
    contact_outcome: str | None = None,
) -> dict:
    """A case note, or a contact attempt with its outcome."""
    if kind == "contact-attempt" and contact_outcome not in domain.CONTACT_OUTCOMES:
        raise ValidationFailed([{"field": "outcome", "reason": f"one of {', '.join(domain.CONTACT_OUTCOMES)}"}])
    async with uow:
        row = await _visible_for_change(uow, assignment_id, by=by)
        values = {"assignment_id": assignment_id, "kind": kind, "contact_outcome": contact_outcome, "text": text,
                  "hub": row["hub"], "at": uow.now(), "by": by.subject}
        stored = {**{k: v for k, v in values.items() if k != "text"}, "sealed_text": uow.keyring.seal_text(text)}
        note_id = (await uow.session.execute(insert(case_notes).values(**stored).returning(case_notes.c.id))).scalar_one()
        await uow.session.execute(
            update(assignments).where(assignments.c.id == assignment_id).values(updated_at=values["at"])
        )
        await uow.commit()
        return {"id": note_id, **values}


async def set_follow_up(uow: UnitOfWork, *, assignment_id: str, by: Principal, follow_up: bool, on=None) -> dict:
    async with uow:
        await _visible_for_change(uow, assignment_id, by=by)
        await uow.session.execute(
            update(assignments).where(assignments.c.id == assignment_id)
            .values(follow_up=follow_up, follow_up_on=on if follow_up else None, updated_at=uow.now())
        )
        await uow.commit()
    return await get_assignment(uow, assignment_id=assignment_id, by=by)


async def _visible_for_change(uow: UnitOfWork, assignment_id: str, *, by: Principal):
    rows = await _locked(uow, select(assignments).where(assignments.c.id == assignment_id))
    if not rows or not _may_see(by, rows[0]["hub"]):
        raise NotFound(f"no assignment {assignment_id}")
    return rows[0]


def _may_see(by: Principal, hub: str | None) -> bool:
    # Another hub's assignment is not there at all for hub staff: 404, not 403.
    return "assignments:admin" in by.scopes or (hub is not None and hub == by.hub)


# --- reading ------------------------------------------------------------------------

async def get_assignment(uow: UnitOfWork, *, assignment_id: str, by: Principal) -> dict:
    """One assignment with the resident's details, its history, notes and contact attempts."""
    async with uow:
        row = (await uow.session.execute(select(assignments).where(assignments.c.id == assignment_id))).mappings().first()
        if row is None or not _may_see(by, row["hub"]):
            raise NotFound(f"no assignment {assignment_id}")
        keyring = uow.keyring
        row = _opened_assignment(row, keyring)
        referral = await _referral_row(uow, row["referral_id"])
        history = [_opened_change(h, keyring) for h in (await uow.session.execute(
            select(assignment_changes).where(assignment_changes.c.assignment_id == assignment_id)
            .order_by(assignment_changes.c.id)
        )).mappings()]
        notes = [_opened_note(n, keyring) for n in (await uow.session.execute(
            select(case_notes).where(case_notes.c.assignment_id == assignment_id).order_by(case_notes.c.id)
        )).mappings()]
        now = uow.now()
    a = _assignment(row)
    return {
        **_summary(row, referral, now=now),
        "allowed": sorted(str(s) for s in a.allowed() if s is not Status.TRIAGE),
        "referral": {
            "id": referral["id"], "reference": referral["reference"], "channel": referral["channel"],
            "received_at": referral["received_at"], "consent_to_share": referral["consent_to_share"],
        },
        "resident": referral["resident"],
        "referrer": referral["referrer"],
        "history": history,
        "notes": [n for n in notes if n["kind"] == "note"],
        "contact_attempts": [n for n in notes if n["kind"] == "contact-attempt"],
    }


def _summary(row, referral, *, now: datetime) -> dict:
    a = _assignment(row)
    missed = a.overdue_deadlines(now)
    resident = referral["resident"]
    return {
        "id": row["id"], "request_id": row["request_id"], "referral_id": row["referral_id"],
        "reference": referral["reference"],
        "type": row["request_type"], "details": row["details"], "needed_by": row["needed_by"],
        "urgency": row["urgency"], "duplicate_of": row["duplicate_of"],
        "status": row["status"], "reason": row["reason"], "hub": row["hub"], "district_code": row["district_code"],
        "council_code": row["council_code"], "council_name": row["council_name"],
        "received_at": row["received_at"], "routed_at": row["routed_at"], "accepted_at": row["accepted_at"],
        "closed_at": row["closed_at"], "outcome": row["outcome"],
        "accept_due_at": row["accept_due_at"], "fulfil_due_at": row["fulfil_due_at"],
        "overdue": bool(missed), "overdue_deadlines": missed,
        "escalated_at": row["fulfil_escalated_at"] or row["accept_escalated_at"],
        "follow_up": row["follow_up"], "follow_up_on": row["follow_up_on"],
        "resident_name": resident.get("name"), "phone": resident.get("phone"),
        "postcode": (resident.get("address") or {}).get("postcode"),
        "updated_at": row["updated_at"],
    }


def _overdue_clause(now: datetime):
    a = assignments.c
    accept_stage = [str(Status.ROUTED), str(Status.TRIAGE), str(Status.OUT_OF_AREA)]
    fulfil_stage = [str(Status.ROUTED), str(Status.ACCEPTED), str(Status.IN_PROGRESS)]
    return or_(
        and_(a.status.in_(accept_stage), a.accept_due_at <= now),
        and_(a.status.in_(fulfil_stage), a.fulfil_due_at <= now),
    )


async def list_assignments(
    uow: UnitOfWork, *, hub: str | None = None, statuses: list[str] | None = None, request_type: str | None = None,
    overdue: bool | None = None, follow_up: bool | None = None, limit: int = 100, offset: int = 0,
    closed: bool = False, erased: bool = False,
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
            clause = _overdue_clause(now)
            conditions.append(clause if overdue else ~clause)
        joined = assignments.join(referrals, referrals.c.id == a.referral_id)
        query = select(assignments, referrals.c.personal, referrals.c.reference).select_from(joined).where(*conditions)
        rows = (await uow.session.execute(query.order_by(a.routed_at, a.id).limit(limit).offset(offset))).mappings().all()
        if offset == 0 and len(rows) < limit:
            total = len(rows)  # the whole list is on this page
        else:
            total = await uow.session.scalar(select(func.count()).select_from(joined).where(*conditions))
    keyring = uow.keyring
    return [
        _summary(_opened_assignment(r, keyring), {**keyring.open_json(r["personal"]), "reference": r["reference"]},
                 now=now)
        for r in rows
    ], total


async def rejected_by_hub(uow: UnitOfWork, *, hub: str, limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    """The cases this hub rejected, newest first, and where each is now: no resident's details (no longer theirs)."""
    c = assignment_changes.c
    rejections = (select(c.assignment_id, func.max(c.at).label("rejected_at"))
                  .where(c.from_hub == hub, c.to_status == str(Status.REJECTED)).group_by(c.assignment_id).subquery())
    query = (select(assignments.c.id, assignments.c.request_id, assignments.c.referral_id, assignments.c.request_type,
                    assignments.c.status, assignments.c.hub, assignments.c.council_name, assignments.c.updated_at,
                    referrals.c.reference, rejections.c.rejected_at)
             .join(rejections, rejections.c.assignment_id == assignments.c.id)
             .join(referrals, referrals.c.id == assignments.c.referral_id))
    async with uow:
        rows = (await uow.session.execute(
            query.order_by(rejections.c.rejected_at.desc(), assignments.c.id).limit(limit).offset(offset))).all()
        total = await uow.session.scalar(select(func.count()).select_from(rejections))
        reasons = dict((await uow.session.execute(
            select(c.assignment_id, c.reason).where(c.from_hub == hub, c.to_status == str(Status.REJECTED),
                                                    c.assignment_id.in_([r.id for r in rows]))
            .order_by(c.id))).all()) if rows else {}
    return [
        {"id": r.id, "request_id": r.request_id, "referral_id": r.referral_id, "reference": r.reference,
         "type": r.request_type, "rejected_at": r.rejected_at, "reason": reasons.get(r.id),
         "now": {"status": r.status, "hub": r.hub, "council_name": r.council_name, "since": r.updated_at}}
        for r in rows
    ], total


async def hub_exists(uow: UnitOfWork, slug: str) -> None:
    async with uow:
        await _hub_row(uow, slug)


async def read_feed(uow: UnitOfWork, *, hub: str, cursor: int, limit: int) -> dict:
    """A hub's feed after `cursor`, in order; `next_cursor` is where to ask from next time."""
    async with uow:
        await _hub_row(uow, hub)
        rows = (await uow.session.execute(
            select(hub_feed.c.seq, hub_feed.c.event).where(hub_feed.c.hub == hub, hub_feed.c.seq > cursor)
            .order_by(hub_feed.c.seq).limit(limit)
        )).all()
    items = [{"seq": r.seq, "event": orjson.loads(uow.keyring.open(r.event))} for r in rows]
    return {"hub": hub, "items": items, "next_cursor": rows[-1].seq if rows else cursor}


# --- SLA escalation -------------------------------------------------------------------

async def escalate_overdue(uow: UnitOfWork, *, topics: Topics, batch: int = 200) -> int:
    """Raise one escalation for each missed deadline not escalated yet; return how many.

    Safe with several schedulers: each claim is a conditional UPDATE (... WHERE
    escalated_at IS NULL) whose row count says whether this instance won it, so
    a deadline is escalated once however many instances look. On PostgreSQL the
    candidates are also taken with SKIP LOCKED, so instances share the work.
    """
    a = assignments.c
    async with uow:
        now = uow.now()
        accept_stage = [str(Status.ROUTED), str(Status.TRIAGE), str(Status.OUT_OF_AREA)]
        fulfil_stage = [str(Status.ROUTED), str(Status.ACCEPTED), str(Status.IN_PROGRESS)]
        due = {
            "accept": (a.accept_due_at, a.accept_escalated_at, accept_stage),
            "fulfil": (a.fulfil_due_at, a.fulfil_escalated_at, fulfil_stage),
        }
        # A deadline that had passed before the assignment was recorded (a backfilled case
        # from a migration or a demo) is history, not an alert: it shows as overdue only.
        query = select(assignments).where(or_(*[
            and_(escalated.is_(None), due_at <= now, due_at > a.created_at, a.status.in_(stage))
            for due_at, escalated, stage in due.values()
        ])).order_by(a.id).limit(batch)
        if uow.db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = (await uow.session.execute(query)).mappings().all()
        out = Outgoing(topics)
        raised = 0
        for row in rows:
            for deadline in _assignment(row).overdue_deadlines(now):
                due_at, escalated, stage = due[deadline]
                if row[escalated.name] is not None or row[due_at.name] <= row["created_at"]:
                    continue
                claimed = await uow.session.execute(
                    update(assignments)
                    .where(a.id == row["id"], escalated.is_(None), due_at <= now, a.status.in_(stage))
                    .values({escalated.name: now})
                )
                if claimed.rowcount != 1:
                    continue  # another instance escalated it, or it moved on meanwhile
                raised += 1
                await uow.session.execute(insert(escalations).values(
                    assignment_id=row["id"], deadline=deadline, due_at=row[due_at.name], escalated_at=now,
                    status=row["status"], hub=row["hub"],
                ))
                event = AssignmentEscalatedV1(
                    assignment_id=row["id"], request_id=row["request_id"], referral_id=row["referral_id"],
                    request_type=row["request_type"], urgency=row["urgency"], status=row["status"], hub=row["hub"],
                    district_code=row["district_code"], deadline=deadline, due_at=row[due_at.name], escalated_at=now,
                )
                out.status(uow, event, key=row["referral_id"])
                if row["hub"]:
                    out.to_hub(uow, event, hub=row["hub"], key=row["referral_id"], assignment_id=row["id"])
        await out.flush(uow)
        await uow.commit()
        return raised


async def publish_state_page(uow: UnitOfWork, after: str | None, limit: int, *, topics: Topics) -> tuple[str | None, int]:
    """`kent-together republish fulfilment`: each assignment as it is now, for reporting (no personal data).

    One status event per assignment (its status, hub, times and due dates, dated by
    its last change) and one escalation event per deadline it missed, in assignment
    id order after `after`; returns the last id and how many assignments.
    """
    query = select(assignments).order_by(assignments.c.id).limit(limit)
    if after is not None:
        query = query.where(assignments.c.id > after)
    rows = (await uow.session.execute(query)).mappings().all()
    ids = [row["id"] for row in rows]
    last_change = dict((await uow.session.execute(
        select(assignment_changes.c.assignment_id, func.max(assignment_changes.c.at))
        .where(assignment_changes.c.assignment_id.in_(ids)).group_by(assignment_changes.c.assignment_id)
    )).all()) if ids else {}
    missed = (await uow.session.execute(
        select(escalations).where(escalations.c.assignment_id.in_(ids)).order_by(escalations.c.id)
    )).mappings().all() if ids else []
    out = Outgoing(topics)
    for row in rows:
        out.status(uow, AssignmentStatusChangedV1(
            assignment_id=row["id"], request_id=row["request_id"], referral_id=row["referral_id"],
            request_type=row["request_type"], urgency=row["urgency"], status=row["status"], hub=row["hub"],
            district_code=row["district_code"], council_code=row["council_code"], council_name=row["council_name"],
            reason=None, outcome=row["outcome"], received_at=row["received_at"],
            changed_at=last_change.get(row["id"]) or row["updated_at"], routed_at=row["routed_at"],
            accepted_at=row["accepted_at"], closed_at=row["closed_at"], accept_due_at=row["accept_due_at"],
            fulfil_due_at=row["fulfil_due_at"],
        ), key=row["referral_id"])
    by_id = {row["id"]: row for row in rows}
    for escalation in missed:
        row = by_id[escalation["assignment_id"]]
        out.status(uow, AssignmentEscalatedV1(
            assignment_id=row["id"], request_id=row["request_id"], referral_id=row["referral_id"],
            request_type=row["request_type"], urgency=row["urgency"], status=escalation["status"],
            hub=escalation["hub"], district_code=row["district_code"], deadline=escalation["deadline"],
            due_at=escalation["due_at"], escalated_at=escalation["escalated_at"],
        ), key=row["referral_id"])
    await out.flush(uow)
    return (ids[-1] if ids else after), len(ids)


class EscalationScheduler(StopsBetweenRounds):
    """Looks for missed deadlines every `poll_seconds`, in every instance; the claim makes it fire once.

    Its state is the assignments' own columns, so a restart picks up where it left off.
    """

    def __init__(self, *, uow_factory, topics: Topics, poll_seconds: float = 30.0):
        self.uow_factory = uow_factory
        self.topics = topics
        self.poll_seconds = poll_seconds
        self.escalated_total = 0

    async def run(self) -> None:
        self.started()
        while True:
            try:
                with self.working():
                    self.escalated_total += await escalate_overdue(self.uow_factory(), topics=self.topics)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database blip: the next round tries again
                if asyncio.current_task().cancelling():
                    raise  # a cancellation the driver turned into another error: stop all the same
                log.warning("escalation round failed", exc_info=True)
            await asyncio.sleep(self.poll_seconds)


# --- erasure ---------------------------------------------------------------------------

async def erase_resident(uow: UnitOfWork, erased: ResidentErasedV1, *, topics: Topics) -> None:
    """Erase fulfilment's copy of a resident: their details, free text about them, and the events held for hubs.

    Every hub that was ever sent one of the resident's assignments is told to erase
    its copy too (`AssignmentErasedV1`, on its topic, feed and webhook).

    Kept: ids, request types, statuses, hubs, districts and times, so every count
    stays as it was. Idempotent: erasing twice changes nothing the second time.
    A consumer's handler: the consumer commits it with the event's inbox row.
    """
    referral_id = str(erased.referral_id)
    keyring = uow.keyring
    row = await _referral_row(uow, referral_id)
    if row is None:
        return  # never routed here (or not yet): nothing held
    await uow.session.execute(
        update(referrals).where(referrals.c.id == referral_id).values(
            personal=keyring.seal_json({"resident": privacy.redact(row["resident"]), "referrer": None}),
            updated_at=uow.now(), erased_at=uow.now(),
        )
    )
    held_assignments = (await uow.session.execute(
        select(assignments.c.id, assignments.c.request_id).where(assignments.c.referral_id == referral_id)
    )).all()
    ids = [a.id for a in held_assignments]
    if ids:
        await uow.session.execute(
            update(assignments).where(assignments.c.id.in_(ids)).values(sealed_details=None)
        )
        await uow.session.execute(
            update(assignment_changes).where(assignment_changes.c.assignment_id.in_(ids)).values(sealed_note=None)
        )
        await uow.session.execute(
            update(case_notes).where(case_notes.c.assignment_id.in_(ids)).values(sealed_text=None)
        )
        # The feed (and the webhook deliveries, which send its rows) and the outbox hold the events as sent.
        held = (await uow.session.execute(
            select(hub_feed.c.hub, hub_feed.c.seq, hub_feed.c.event).where(hub_feed.c.assignment_id.in_(ids))
        )).all()
        for hub, seq, event in held:
            await uow.session.execute(
                update(hub_feed).where(hub_feed.c.hub == hub, hub_feed.c.seq == seq)
                .values(event=privacy.redact_stored_event(event, keyring))
            )
    sent_to = sorted({(hub, assignment_id) for hub, assignment_id in (await uow.session.execute(
        select(hub_feed.c.hub, hub_feed.c.assignment_id).where(hub_feed.c.assignment_id.in_(ids))
    )).all()}) if ids else []
    outbox = uow.outbox
    for outbox_id, payload in (await uow.session.execute(
        select(outbox.c.id, outbox.c.payload).where(outbox.c.key.in_([referral_id, *ids]))
    )).all():
        redacted = privacy.redact_stored_event(payload, keyring)
        if redacted != payload:
            await uow.session.execute(update(outbox).where(outbox.c.id == outbox_id).values(payload=redacted))
    request_of = {a.id: a.request_id for a in held_assignments}
    out = Outgoing(topics)
    for hub, assignment_id in sent_to:
        out.to_hub(uow, AssignmentErasedV1(
            assignment_id=assignment_id, request_id=request_of[assignment_id], referral_id=referral_id, hub=hub,
            erased_at=erased.erased_at,
        ), hub=hub, key=referral_id, assignment_id=assignment_id)
    await out.flush(uow)


# --- for residents and the front door: where help comes from, and where a request is -------

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
        found = [r for r in (await uow.session.execute(
            select(referrals.c.id, referrals.c.personal).where(referrals.c.reference == reference)
        )).mappings() if _postcode_of(keyring.open_json(r["personal"])) == postcode]
        if not found:
            return []
        rows = (await uow.session.execute(
            select(assignments.c.request_type, assignments.c.status, assignments.c.hub, assignments.c.council_name,
                   assignments.c.updated_at, hubs.c.name.label("hub_name"))
            .select_from(assignments.outerjoin(hubs, hubs.c.slug == assignments.c.hub))
            .where(assignments.c.referral_id == found[0]["id"]).order_by(assignments.c.created_at)
        )).mappings().all()
    return [{"type": r["request_type"], "status": r["status"], "hub": r["hub"], "hub_name": r["hub_name"],
             "council_name": r["council_name"], "updated_at": r["updated_at"]} for r in rows]


def _postcode_of(personal: dict) -> str | None:
    address = (personal.get("resident") or {}).get("address") or {}
    return address.get("postcode")
