"""Residents as fulfilment knows them: the id on each referral's copy, and two residents recorded twice merged.

Referrals names the resident of each referral (`referral.received.v1`'s
`resident_id`) and, when an administrator merges two residents recorded twice,
publishes `residents.merged.v1` (ids only). Fulfilment follows it in the
consumer's transaction (its inbox makes a redelivery harmless; the change is
idempotent besides):

- every referral copy of the merged resident names the kept one;
- the merge is kept in `resident_merges`, flat (a later merge of the kept
  resident re-points it), so a referral that reaches fulfilment after its
  merge (the two events travel on different keys) still resolves to the one
  resident, and a merge of a resident already merged away lands on the end of
  the chain;
- an open request of the merged resident with an open request of the same type
  for the kept one is flagged `duplicate_of` it, as intake would have flagged it
  had it known they were one person.

A hub's case list then shows one resident's cases together (`GET
/v1/hubs/{hub}/queue?resident=<id>`, either id).
"""

from __future__ import annotations

import logging

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from services.fulfilment import domain
from services.fulfilment.models import assignments, referrals, resident_merges
from shared.events import ResidentsMergedV1
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


def resident_of_referral() -> ColumnElement:
    """The resident a referral copy is about now (outer-join `resident_merges` on `referrals.resident_id`)."""
    return func.coalesce(resident_merges.c.into_id, referrals.c.resident_id)


def with_merges(joined):
    """`joined` (which holds `referrals`) with the merges its residents went through."""
    return joined.outerjoin(resident_merges, resident_merges.c.merged_id == referrals.c.resident_id)


async def resolved(uow: UnitOfWork, resident_id: str) -> str:
    """The resident `resident_id` names now: itself, or the one it was merged into."""
    into = await uow.session.scalar(select(resident_merges.c.into_id).where(resident_merges.c.merged_id == resident_id))
    return into or resident_id


async def follow_merge(uow: UnitOfWork, merged: ResidentsMergedV1) -> None:
    """`merged_resident_id` is `resident_id` from now on (in the consumer's unit of work: never commits)."""
    gone = str(merged.merged_resident_id)
    into = await resolved(uow, str(merged.resident_id))
    if into == gone:
        log.warning("residents.merged of %s into itself (through earlier merges); ignored", gone)
        return
    session = uow.session
    # Every id that named `gone` (itself, and those merged into it before) names `into` from now on.
    named = [gone, *await session.scalars(select(resident_merges.c.merged_id).where(resident_merges.c.into_id == gone))]
    await session.execute(update(resident_merges).where(resident_merges.c.into_id == gone).values(into_id=into))
    if await session.scalar(select(resident_merges.c.merged_id).where(resident_merges.c.merged_id == gone)):
        await session.execute(
            update(resident_merges)
            .where(resident_merges.c.merged_id == gone)
            .values(into_id=into, merged_at=merged.merged_at)
        )
    else:
        await session.execute(insert(resident_merges).values(merged_id=gone, into_id=into, merged_at=merged.merged_at))
    moved_ids = [str(r) for r in merged.referral_ids]
    condition = referrals.c.resident_id.in_(named)
    if moved_ids:
        condition = or_(condition, referrals.c.id.in_(moved_ids))
    moved = list(await session.scalars(select(referrals.c.id).where(condition)))
    if moved:
        await session.execute(update(referrals).where(referrals.c.id.in_(moved)).values(resident_id=into))
    await _flag_duplicates(uow, into=into, moved=set(moved))


async def _flag_duplicates(uow: UnitOfWork, *, into: str, moved: set[str]) -> None:
    """The merged resident's open requests that repeat an open one of the kept resident's: duplicates of it."""
    if not moved:
        return
    a = assignments.c
    rows = (
        await uow.session.execute(
            select(a.id, a.request_id, a.referral_id, a.request_type, a.duplicate_of, a.received_at)
            .select_from(with_merges(assignments.join(referrals, referrals.c.id == a.referral_id)))
            .where(resident_of_referral() == into, a.status.in_([str(s) for s in domain.OPEN]))
            .order_by(a.received_at, a.id)
        )
    ).all()
    kept_first: dict[str, str] = {}
    for row in rows:
        if row.referral_id not in moved:
            kept_first.setdefault(row.request_type, row.request_id)
    now = uow.now()
    for row in rows:
        original = kept_first.get(row.request_type)
        if row.referral_id in moved and row.duplicate_of is None and original is not None:
            await uow.session.execute(
                update(assignments).where(a.id == row.id).values(duplicate_of=original, updated_at=now)
            )
