"""Erasure: fulfilment's copy of a resident forgotten, and every hub that held it told to forget it too."""

from __future__ import annotations

from sqlalchemy import select, update

from services.fulfilment.announcements import Outgoing
from services.fulfilment.models import assignment_changes, assignments, case_notes, hub_feed, referrals
from shared import privacy
from shared.events import AssignmentErasedV1, ResidentErasedV1
from shared.settings import Topics
from shared.uow import UnitOfWork


async def erase_resident(uow: UnitOfWork, erased: ResidentErasedV1, *, topics: Topics) -> None:
    """Erase fulfilment's copy of a resident: their details, free text about them, and the events held for hubs.

    A recurring request of theirs ends: no further occurrence opens.
    Every hub that was ever sent one of the resident's assignments is told to erase
    its copy too (`AssignmentErasedV1`, on its topic, feed and webhook).

    Kept: ids, request types, statuses, hubs, districts and times, so every count
    stays as it was. Idempotent: erasing twice changes nothing the second time.
    A consumer's handler: the consumer commits it with the event's inbox row.
    """
    referral_id = str(erased.referral_id)
    keyring = uow.keyring
    row = await uow.assignments.referral(referral_id)
    if row is None:
        return  # never routed here (or not yet): nothing held
    for recurs in await uow.assignments.series_of_referral(referral_id):
        # No occurrence opens for a resident who is forgotten.
        if recurs.end(reason="erased", at=uow.now()):
            await uow.assignments.save_series(recurs)
    await uow.session.execute(
        update(referrals)
        .where(referrals.c.id == referral_id)
        .values(
            personal=keyring.seal_json({"resident": privacy.redact(row["resident"]), "referrer": None}),
            updated_at=uow.now(),
            erased_at=uow.now(),
        )
    )
    held_assignments = (
        await uow.session.execute(
            select(assignments.c.id, assignments.c.request_id).where(assignments.c.referral_id == referral_id)
        )
    ).all()
    ids = [a.id for a in held_assignments]
    if ids:
        await uow.session.execute(update(assignments).where(assignments.c.id.in_(ids)).values(sealed_details=None))
        await uow.session.execute(
            update(assignment_changes).where(assignment_changes.c.assignment_id.in_(ids)).values(sealed_note=None)
        )
        await uow.session.execute(
            update(case_notes).where(case_notes.c.assignment_id.in_(ids)).values(sealed_text=None)
        )
        # The feed (and the webhook deliveries, which send its rows) and the outbox hold the events as sent.
        held = (
            await uow.session.execute(
                select(hub_feed.c.hub, hub_feed.c.seq, hub_feed.c.event).where(hub_feed.c.assignment_id.in_(ids))
            )
        ).all()
        for hub, seq, event in held:
            await uow.session.execute(
                update(hub_feed)
                .where(hub_feed.c.hub == hub, hub_feed.c.seq == seq)
                .values(event=privacy.redact_stored_event(event, keyring))
            )
    sent_to = (
        sorted(
            {
                (hub, assignment_id)
                for hub, assignment_id in (
                    await uow.session.execute(
                        select(hub_feed.c.hub, hub_feed.c.assignment_id).where(hub_feed.c.assignment_id.in_(ids))
                    )
                ).all()
            }
        )
        if ids
        else []
    )
    outbox = uow.outbox
    for outbox_id, payload in (
        await uow.session.execute(select(outbox.c.id, outbox.c.payload).where(outbox.c.key.in_([referral_id, *ids])))
    ).all():
        redacted = privacy.redact_stored_event(payload, keyring)
        if redacted != payload:
            await uow.session.execute(update(outbox).where(outbox.c.id == outbox_id).values(payload=redacted))
    request_of = {a.id: a.request_id for a in held_assignments}
    out = Outgoing(topics)
    for hub, assignment_id in sent_to:
        out.to_hub(
            uow,
            AssignmentErasedV1(
                assignment_id=assignment_id,
                request_id=request_of[assignment_id],
                referral_id=referral_id,
                hub=hub,
                erased_at=erased.erased_at,
            ),
            hub=hub,
            key=referral_id,
            assignment_id=assignment_id,
        )
    await out.flush(uow)
