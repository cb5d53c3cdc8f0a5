"""Fulfilment's persistence: assignments, their history, the referrals' copy, hubs and feeds, in and out of rows.

The use cases ask it for `Assignment` aggregates and give them back with their
changes; it does the SQL, the dialects, and all sealing and opening of personal
fields (shared/crypto.py): rows are in clear above it, sealed in the tables.
Every method works in the caller's unit of work and never commits.

Writes take many rows at once: a fetched batch of referral events is one
insert per table (COPY on PostgreSQL), not one per event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, case, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from services.fulfilment.domain import DEADLINES, Assignment, Change, Series, Status
from services.fulfilment.models import (
    assignment_changes,
    assignments,
    case_holders,
    feed_heads,
    holder_changes,
    hub_feed,
    hubs,
    referrals,
    series,
    tables,
    webhook_deliveries,
)
from shared.errors import NotFound
from shared.events import CloudEvent
from shared.uow import EncodedEvent, UnitOfWork

DOMAIN_COLUMNS = (
    "status",
    "reason",
    "hub",
    "district_code",
    "council_code",
    "council_name",
    "routed_at",
    "accepted_at",
    "closed_at",
    "outcome",
    "accept_due_at",
    "fulfil_due_at",
    "accept_escalated_at",
    "fulfil_escalated_at",
    "series_id",
    "occurrence",
)
"""The columns the `Assignment` aggregate owns (the rest are the request as received, and bookkeeping)."""

CARRIED_OVER = "carried-over"
"""A holder change: a recurring request's next occurrence opened held by whoever held the one before."""


class Assignments:
    """The repository behind a unit of work: `uow.assignments`, used inside its transaction."""

    def __init__(self, uow: UnitOfWork):
        self.uow = uow

    @property
    def session(self):
        return self.uow.session

    # --- hubs -------------------------------------------------------------------------

    async def hub(self, slug: str):
        row = (await self.session.execute(select(hubs).where(hubs.c.slug == slug))).mappings().first()
        if row is None:
            raise NotFound(f"no hub {slug!r}")
        return row

    async def hubs(self) -> dict[str, object]:
        return {r.slug: r for r in (await self.session.execute(select(hubs))).all()}

    async def seed_hubs(self, hub_rows: list[dict], heads: list[dict]) -> None:
        # ON CONFLICT DO NOTHING: two instances starting together both seed, neither fails.
        dialect_insert = postgresql.insert if self.uow.db.dialect == "postgresql" else sqlite.insert
        await self.session.execute(dialect_insert(hubs).on_conflict_do_nothing(), hub_rows)
        await self.session.execute(dialect_insert(feed_heads).on_conflict_do_nothing(), heads)

    # --- the referrals' copy ----------------------------------------------------------

    async def referral(self, referral_id: str) -> dict | None:
        return (await self.referrals([referral_id])).get(referral_id)

    async def referrals(self, referral_ids: Iterable[str]) -> dict[str, dict]:
        ids = list(referral_ids)
        if not ids:
            return {}
        keyring = self.uow.keyring
        rows = (await self.session.execute(select(referrals).where(referrals.c.id.in_(ids)))).mappings()
        return {row["id"]: opened_referral(row, keyring) for row in rows}

    async def add_referrals(self, rows: list[dict]) -> None:
        """New referrals, in clear: the resident and the referrer sealed together, one encryption each."""
        keyring = self.uow.keyring
        stored = []
        for row in rows:
            kept = {k: v for k, v in row.items() if k not in ("resident", "referrer")}
            kept["personal"] = keyring.seal_json({"resident": row["resident"], "referrer": row["referrer"]})
            stored.append(kept)
        await self.uow.insert_rows(referrals, stored)

    async def set_personal(self, referral_id: str, *, resident: dict, referrer: dict | None, **values) -> None:
        await self.session.execute(
            update(referrals)
            .where(referrals.c.id == referral_id)
            .values(
                personal=self.uow.keyring.seal_json({"resident": resident, "referrer": referrer}),
                **values,
            )
        )

    # --- assignments ------------------------------------------------------------------

    async def known_requests(self, request_ids: list[str]) -> set[str]:
        """Which of these requests have an assignment already."""
        if not request_ids:
            return set()
        return set(
            await self.session.scalars(
                select(assignments.c.request_id).where(assignments.c.request_id.in_(request_ids))
            )
        )

    async def add(self, rows: list[dict]) -> None:
        """New assignments, in clear (the request's `details` sealed here)."""
        keyring = self.uow.keyring
        await self.uow.insert_rows(
            assignments, [keyring.seal_field(row, "details", into="sealed_details") for row in rows]
        )

    async def locked(self, *conditions, order_by=None) -> list[dict]:
        """Assignment rows for changing, details opened: locked until commit on PostgreSQL (SQLite locks the database at BEGIN)."""
        query = select(assignments).where(*conditions)
        if order_by is not None:
            query = query.order_by(order_by)
        keyring = self.uow.keyring
        return [opened_assignment(r, keyring) for r in (await self.session.execute(query.with_for_update())).mappings()]

    async def save(self, a: Assignment, *, changes: list[Change]) -> None:
        if not changes:
            return
        await self.session.execute(
            update(assignments)
            .where(assignments.c.id == a.id)
            .values(**values_of(a), updated_at=self.uow.now(), version=assignments.c.version + 1)
        )
        await self.record([(a.id, change) for change in changes])

    async def record(self, changes: list[tuple[str, Change]]) -> None:
        """The history rows of these changes (each change's note sealed)."""
        if not changes:
            return
        keyring = self.uow.keyring
        await self.uow.insert_rows(
            assignment_changes,
            [
                {
                    "assignment_id": assignment_id,
                    "at": c.at,
                    "by": c.by,
                    "from_status": str(c.from_status) if c.from_status else None,
                    "to_status": str(c.to_status),
                    "from_hub": c.from_hub,
                    "to_hub": c.to_hub,
                    "reason": c.reason,
                    "outcome": c.outcome,
                    "sealed_note": keyring.seal_text(c.note),
                }
                for assignment_id, c in changes
            ],
        )

    # --- recurring requests ------------------------------------------------------------

    async def add_series(self, new: list[Series]) -> None:
        now = self.uow.now()
        await self.uow.insert_rows(series, [{**series_values(s), "created_at": now, "updated_at": now} for s in new])

    async def series(self, series_ids: Iterable[str], *, lock: bool = False) -> dict[str, Series]:
        """The series with these ids (locked for changing with `lock`)."""
        ids = sorted(set(series_ids))
        if not ids:
            return {}
        query = select(series).where(series.c.id.in_(ids)).order_by(series.c.id)
        if lock:
            query = query.with_for_update()
        return {row["id"]: series_of(row) for row in (await self.session.execute(query)).mappings()}

    async def series_of_referral(self, referral_id: str) -> list[Series]:
        query = select(series).where(series.c.referral_id == referral_id).order_by(series.c.id).with_for_update()
        return [series_of(row) for row in (await self.session.execute(query)).mappings()]

    async def save_series(self, s: Series) -> None:
        await self.session.execute(
            update(series).where(series.c.id == s.id).values(**series_values(s), updated_at=self.uow.now())
        )

    async def carry_holder(self, *, from_id: str, to_id: str, hub: str, at: datetime, by: str) -> str | None:
        """The worker who held occurrence `from_id` holds `to_id`, the next one, from `at`; returns them (None: nobody).

        Margaret's weekly shop stays with the worker who did last week's: the hub
        need not share it out again each week. Kept in the new case's holder history
        as `carried-over`, by whoever closed the last occurrence.
        """
        held = (
            await self.session.execute(
                select(case_holders.c.holder, case_holders.c.holder_name).where(
                    case_holders.c.assignment_id == from_id, case_holders.c.holder.is_not(None)
                )
            )
        ).first()
        if held is None:
            return None
        await self.session.execute(
            insert(case_holders).values(
                assignment_id=to_id,
                hub=hub,
                holder=held.holder,
                holder_name=held.holder_name,
                held_since=at,
                updated_at=at,
            )
        )
        await self.session.execute(
            insert(holder_changes).values(
                assignment_id=to_id,
                at=at,
                by=by,
                change=CARRIED_OVER,
                to_holder=held.holder,
                to_name=held.holder_name,
            )
        )
        holder: str = held.holder
        return holder

    # --- the hubs' feeds --------------------------------------------------------------

    async def append_to_feeds(
        self, entries: list[tuple[str, str, CloudEvent | EncodedEvent]], *, hub_rows: dict | None
    ) -> None:
        """Append feed entries (hub, assignment id, event), hub by hub in slug order, with their webhook deliveries.

        Each hub's counter row is locked (UPDATE ... RETURNING) until the commit, so
        a hub's sequence numbers are taken in commit order: a reader who sees entry
        n has already been able to see every entry before it, and a cursor never
        skips a row that commits late. On PostgreSQL the counters are first locked
        in slug order (SELECT ... FOR UPDATE), which keeps two transactions that
        touch the same two hubs from deadlocking; SQLite has one writer at a time.
        Counters are always the last rows a transaction locks. One counter update
        for every hub at once and one insert, however many entries: on SQLite each
        statement was a round trip through a busy event loop with the write lock
        held, twelve of them for a batch that reached every hub.
        """
        by_hub: dict[str, list[tuple[str, CloudEvent]]] = defaultdict(list)
        for hub, assignment_id, event in entries:
            by_hub[hub].append((assignment_id, event))
        if not by_hub:
            return
        if hub_rows is not None:
            webhooks = {slug: row.webhook_url for slug, row in hub_rows.items() if row.webhook_url}
        else:
            webhooks = dict(
                (
                    await self.session.execute(
                        select(hubs.c.slug, hubs.c.webhook_url).where(
                            hubs.c.slug.in_(by_hub), hubs.c.webhook_url.is_not(None)
                        )
                    )
                ).all()
            )
        uow = self.uow
        now = uow.now()
        feed_rows, deliveries = [], []
        slugs = sorted(by_hub)
        if uow.db.dialect == "postgresql":  # the counters locked in slug order, then all moved in one statement
            await self.session.execute(
                select(feed_heads.c.hub).where(feed_heads.c.hub.in_(slugs)).order_by(feed_heads.c.hub).with_for_update()
            )
        heads = dict(
            (
                await self.session.execute(
                    update(feed_heads)
                    .where(feed_heads.c.hub.in_(slugs))
                    .values(
                        last_seq=feed_heads.c.last_seq
                        + case({hub: len(by_hub[hub]) for hub in slugs}, value=feed_heads.c.hub)
                    )
                    .returning(feed_heads.c.hub, feed_heads.c.last_seq)
                )
            ).all()
        )
        for hub in slugs:
            items = by_hub[hub]
            last = heads[hub]
            first = last - len(items) + 1
            feed_rows += [
                {
                    "hub": hub,
                    "seq": first + i,
                    "event_id": str(event.id),
                    "type": event.type,
                    "assignment_id": assignment_id,
                    "event": uow.keyring.seal(event.to_bytes()),
                    "created_at": now,
                }
                for i, (assignment_id, event) in enumerate(items)
            ]
            if webhooks.get(hub):
                deliveries += [
                    {
                        "hub": hub,
                        "feed_seq": first + i,
                        "event_id": str(event.id),
                        "type": event.type,
                        "url": webhooks[hub],
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                    for i, (_, event) in enumerate(items)
                ]
        await uow.insert_rows(hub_feed, feed_rows)
        await uow.insert_rows(webhook_deliveries, deliveries)


# --- rows <-> domain ------------------------------------------------------------------


def assignment_of(row) -> Assignment:
    return Assignment(
        id=row["id"],
        request_id=row["request_id"],
        referral_id=row["referral_id"],
        request_type=row["request_type"],
        urgency=row["urgency"],
        received_at=row["received_at"],
        status=Status(row["status"]),
        reason=row["reason"],
        hub=row["hub"],
        district_code=row["district_code"],
        council_code=row["council_code"],
        council_name=row["council_name"],
        routed_at=row["routed_at"],
        accepted_at=row["accepted_at"],
        closed_at=row["closed_at"],
        outcome=row["outcome"],
        accept_due_at=row["accept_due_at"],
        fulfil_due_at=row["fulfil_due_at"],
        accept_escalated_at=row["accept_escalated_at"],
        fulfil_escalated_at=row["fulfil_escalated_at"],
        rejected_by=list(row["rejected_by"] or []),
        series_id=row.get("series_id"),
        occurrence=row.get("occurrence"),
    )


def series_of(row) -> Series:
    return Series(
        id=row["id"],
        referral_id=row["referral_id"],
        frequency=row["frequency"],
        starts_at=row["starts_at"],
        ends_on=row["ends_on"],
        occurrences=row["occurrences"],
        made=row["made"],
        ended_at=row["ended_at"],
        ended_reason=row["ended_reason"],
    )


def series_values(s: Series) -> dict:
    return {
        "id": s.id,
        "referral_id": s.referral_id,
        "frequency": s.frequency,
        "starts_at": s.starts_at,
        "ends_on": s.ends_on,
        "occurrences": s.occurrences,
        "made": s.made,
        "ended_at": s.ended_at,
        "ended_reason": s.ended_reason,
    }


def new_assignment_row(a: Assignment, *, request_row: dict, now: datetime) -> dict:
    """A new assignment's row, in clear: the request as received (`details`, `needed_by`, `duplicate_of`) and `a`."""
    return {
        "id": a.id,
        "request_id": a.request_id,
        "referral_id": a.referral_id,
        "request_type": a.request_type,
        **request_row,
        "urgency": a.urgency,
        "received_at": a.received_at,
        **values_of(a),
        "follow_up": False,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }


def values_of(a: Assignment) -> dict:
    values = {name: getattr(a, name) for name in DOMAIN_COLUMNS}
    values["status"] = str(a.status)
    values["rejected_by"] = list(a.rejected_by)
    return values


# --- the stage rule in SQL (domain.DEADLINES) -------------------------------------------


def overdue_clause(now: datetime, *, deadlines=DEADLINES):
    """Assignments that have missed one of `deadlines` by `now`: the SQL of `Assignment.overdue_deadlines`."""
    c = assignments.c
    return or_(*[and_(c.status.in_([str(s) for s in d.stages]), c[d.due] <= now) for d in deadlines])


def unescalated_clause(now: datetime, deadline):
    """A missed deadline not escalated yet, that was still ahead when the assignment was recorded.

    (One already past then, a backfilled case from a migration or a demo, is history,
    not an alert: it shows as overdue only.)
    """
    c = assignments.c
    return and_(
        c[deadline.escalated].is_(None),
        c[deadline.due] <= now,
        c[deadline.due] > c.created_at,
        c.status.in_([str(s) for s in deadline.stages]),
    )


# --- sealed at rest (shared/crypto.py) ---------------------------------------------------


def opened_referral(row, keyring) -> dict:
    return {**{k: v for k, v in row.items() if k != "personal"}, **keyring.open_json(row["personal"])}


def opened_assignment(row, keyring) -> dict:
    return keyring.open_field(row, "sealed_details", as_="details")


def opened_change(row, keyring) -> dict:
    out = {k: v for k, v in row.items() if k != "sealed_note"}
    out["note"] = keyring.open_text(row["sealed_note"])
    return out


def opened_note(row, keyring) -> dict:
    out = {k: v for k, v in row.items() if k != "sealed_text"}
    out["text"] = keyring.open_text(row["sealed_text"])
    return out


def seal_text(uow: UnitOfWork, text: str | None):
    return uow.keyring.seal_text(text)


def postcode_of(personal: dict) -> str | None:
    address = (personal.get("resident") or {}).get("address") or {}
    return address.get("postcode")


# `uow.assignments` in every unit of work of this service.
tables.repositories.update(assignments=Assignments)
