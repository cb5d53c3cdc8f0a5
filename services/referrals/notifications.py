"""Telling residents: their reference when the referral is taken, and word when help is arranged.

Only a resident who agreed (`consent.to_notify`) and can be reached by a message
(`domain.message_contact`: a mobile for a text, or an email; not one who asked for
post or to be reached through their referrer). Sent through shared/notify.py:

- **Your reference** (`resident-reference-sms` / `-email`): a reaction of the unit
  of work to `referral.received` (shared/uow.py), so the message is written in the
  transaction that takes the referral: both commit or neither does.
- **Help arranged** (`resident-help-arranged-sms` / `-email`): when fulfilment says
  a hub has taken one of their requests on: `accepted`, or `in_progress` /
  `fulfilled` for a hub that skipped a step. Those are the news a resident waits
  for ("someone is going to help, and who"). `routed` and `rejected` are the
  services' own business (a request may be routed, rejected and re-routed before
  a hub takes it), `fulfilled` after `accepted` is help they have just had, and
  `unable_to_fulfil` is news a person should give, not a text. Once per request,
  whichever of the three comes first: the message's reference is the request's.
  Written in the status consumer's transaction, with its inbox row.
- **Erasure**: a reaction to `resident.erased`: the referral's messages lose
  their address and placeholders (one not sent yet is never sent), in the table
  and in the embedded default's local log.

Every message is sealed at rest with the service's data keys; its reference is
derived from what it is about, so a redelivered or republished event is the
same message, sent once. Nothing personal goes onto a topic for any of this.
Events older than `REFERRALS_NOTIFY_RECENT_HOURS` (a backfill, a replay) tell no one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import select

from services.referrals import domain
from services.referrals.models import notification_attempts, notifications
from shared.consumer import BatchHandler, Handler
from shared.events import AssignmentStatusChangedV1, CloudEvent, ReferralReceivedV1, ResidentErasedV1
from shared.notify import LocalLog, Message, Sender, delivery_log_router, enqueue, forget, reference_for
from shared.uow import Reaction, UnitOfWork

log = logging.getLogger(__name__)

TABLES = (notifications, notification_attempts)
REFERENCE = "resident-reference"
HELP_ARRANGED = "resident-help-arranged"
ARRANGED = frozenset({"accepted", "in_progress", "fulfilled"})
"""The statuses that tell a resident their help is arranged (the first of them for each request)."""
TEMPLATES = tuple(f"{name}-{channel}" for name in (REFERENCE, HELP_ARRANGED) for channel in ("sms", "email"))
"""The template names `REFERRALS_NOTIFY_TEMPLATES` maps to Notify template ids."""


def reactions(*, recent: timedelta, sender: Sender, tell: bool = True) -> dict[str, Reaction]:
    """What the referrals service's own events also write: the reference message (`tell`), and forgetting on
    erasure (always: messages sent while residents were told are forgotten all the same)."""

    async def received(uow: UnitOfWork, event: dict) -> None:
        if not event.get("consent_to_notify") or event.get("backfilled"):
            return
        data = ReferralReceivedV1.model_validate(event)
        if data.received_at < uow.now() - recent:
            return
        resident = data.resident
        contact = domain.message_contact(
            phone=resident.phone, email=resident.email, preference=resident.contact_preference
        )
        if contact is None:
            return
        channel, to = contact
        await _tell(
            uow,
            reference=reference_for("reference", data.referral_id),
            channel=channel,
            to=to,
            template=REFERENCE,
            about=str(data.referral_id),
            personalisation={"reference": data.reference, "help": _help_in_words([r.type for r in data.requests])},
        )

    async def erased(uow: UnitOfWork, event: dict) -> None:
        referral_id = str(ResidentErasedV1.model_validate(event).referral_id)
        references = set(
            await uow.session.scalars(select(notifications.c.reference).where(notifications.c.about == referral_id))
        )
        if not references:
            return
        await forget(uow, notifications, about=referral_id)
        if isinstance(sender, LocalLog):  # the embedded default's stand-in for Notify keeps no more than Notify would
            await sender.forget(references)

    return (
        {ReferralReceivedV1.type: received, ResidentErasedV1.type: erased} if tell else {ResidentErasedV1.type: erased}
    )


async def help_arranged(uow: UnitOfWork, event: AssignmentStatusChangedV1, *, recent: timedelta) -> None:
    """A hub took one of the resident's requests on: tell them, once per request (in the consumer's transaction)."""
    if event.status not in ARRANGED or event.changed_at < uow.now() - recent:
        return
    referral = await uow.referrals.of_request(str(event.request_id))
    if referral is None or referral.erased_at is not None or not referral.consent.get("to_notify"):
        return
    personal = referral.personal
    contact = domain.message_contact(
        phone=personal.get("phone"), email=personal.get("email"), preference=personal.get("contact_preference")
    )
    if contact is None:
        return
    channel, to = contact
    request = referral.request(str(event.request_id))
    await _tell(
        uow,
        reference=reference_for("help-arranged", event.request_id),
        channel=channel,
        to=to,
        template=HELP_ARRANGED,
        about=referral.id,
        personalisation={
            "reference": referral.reference,
            "help": _help_in_words([request.type]),
            "hub": f"the {event.hub.replace('-', ' ').title()} hub" if event.hub else "your district's hub",
        },
    )


def told_of_progress(handlers: Mapping[str, Handler], *, recent: timedelta) -> dict[str, Handler]:
    """The status consumer's handlers, each status event also telling the resident when their help is arranged."""
    recorded = handlers[AssignmentStatusChangedV1.type]

    async def status_changed(uow: UnitOfWork, event: CloudEvent) -> None:
        await recorded(uow, event)
        await help_arranged(uow, AssignmentStatusChangedV1.model_validate(event.data), recent=recent)

    return {**handlers, AssignmentStatusChangedV1.type: status_changed}


def told_of_progress_in_batches(batch: BatchHandler, *, recent: timedelta) -> BatchHandler:
    """The same for a batch handler of the status consumer (if it takes its events in batches)."""

    async def handle(uow: UnitOfWork, events: list[CloudEvent]) -> None:
        await batch(uow, events)
        for event in events:
            if event.type == AssignmentStatusChangedV1.type:
                await help_arranged(uow, AssignmentStatusChangedV1.model_validate(event.data), recent=recent)

    return handle


async def _tell(
    uow: UnitOfWork,
    *,
    reference: str,
    channel: str,
    to: str,
    template: str,
    about: str,
    personalisation: dict[str, str],
) -> None:
    await enqueue(
        uow,
        notifications,
        Message(
            reference=reference,
            channel="sms" if channel == "sms" else "email",
            to=to,
            template=f"{template}-{channel}",
            personalisation=personalisation,
            about=about,
        ),
        sealed=True,
    )


def _help_in_words(types: list[str]) -> str:
    labels = dict((type_id, label) for type_id, label, _ in domain.DEFAULT_REQUEST_TYPES)
    words = [labels.get(t, t.replace("-", " ")).lower() for t in dict.fromkeys(types)]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


router = delivery_log_router(
    TABLES,
    scope="referrals:admin",
    summary="The newest messages to residents (sealed: no address shown), each with every attempt to send it "
    "(administrators)",
)
