"""Telling hubs: each new "today" request and each missed deadline, emailed to the hub's address.

Reactions to fulfilment's own events (shared/uow.py): when a unit of work commits
`assignment.status-changed` (routed, urgency today) or `assignment.escalated`,
the message to the hub is written to the `notifications` table in that same
transaction; shared/notify.py's worker sends it through GOV.UK Notify. Its
reference is derived from what it is about (the assignment, the hub and the
routing time; or the assignment and the deadline), so the same event published
again (`kent-together republish`) is the same message and is not sent again.
The email names no resident: the request's type, when it is due and a link to
the case in the hub's queue.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from services.fulfilment.domain import Status
from services.fulfilment.models import hubs, notification_attempts, notifications
from shared.events import AssignmentEscalatedV1, AssignmentStatusChangedV1
from shared.notify import Message, delivery_log_router, enqueue, reference_for
from shared.uow import Reaction, UnitOfWork

log = logging.getLogger(__name__)

TABLES = (notifications, notification_attempts)
TODAY_REQUEST = "hub-today-request"
ESCALATION = "hub-escalation"
DEADLINES = {"accept": "accepted", "fulfil": "fulfilled", "triage": "placed", "out_of_area": "passed on"}


def reactions(*, case_url: str, recent: timedelta) -> dict[str, Reaction]:
    """`case_url` is the hub page of a case with `{id}` in it; events older than `recent` tell no one (a replay)."""

    async def status_changed(uow: UnitOfWork, event: dict) -> None:
        # Most status changes tell no one: asked of the plain data first, before building the event's model.
        if event.get("status") != Status.ROUTED or event.get("urgency") != "today" or event.get("hub") is None:
            return
        data = AssignmentStatusChangedV1.model_validate(event)
        if data.status != Status.ROUTED or data.urgency != "today" or data.hub is None:
            return
        if _stale(uow, data.changed_at, recent):
            return
        due = data.accept_due_at
        await _tell_hub(
            uow,
            data.hub,
            template=TODAY_REQUEST,
            about=str(data.assignment_id),
            reference=reference_for("routed", data.assignment_id, data.hub, data.routed_at),
            personalisation={
                "request_type": data.request_type.replace("-", " "),
                "accept_by": _kent_time(due) if due else "today",
                "case_link": case_url.format(id=data.assignment_id),
            },
        )

    async def escalated(uow: UnitOfWork, event: dict) -> None:
        data = AssignmentEscalatedV1.model_validate(event)
        if data.hub is None or _stale(uow, data.escalated_at, recent):
            return
        await _tell_hub(
            uow,
            data.hub,
            template=ESCALATION,
            about=str(data.assignment_id),
            reference=reference_for("escalated", data.assignment_id, data.deadline, data.due_at),
            personalisation={
                "request_type": data.request_type.replace("-", " "),
                "deadline": DEADLINES.get(data.deadline, data.deadline),
                "due_at": _kent_time(data.due_at),
                "case_link": case_url.format(id=data.assignment_id),
            },
        )

    return {AssignmentStatusChangedV1.type: status_changed, AssignmentEscalatedV1.type: escalated}


async def _tell_hub(
    uow: UnitOfWork, hub: str, *, template: str, reference: str, about: str, personalisation: dict[str, str]
) -> None:
    # Every hub's address, read once per transaction: a batch routes many of today's requests to a few hubs.
    emails = uow.session.info.get("hub_emails")
    if emails is None:
        emails = uow.session.info["hub_emails"] = dict(
            (await uow.session.execute(select(hubs.c.slug, hubs.c.email))).all()
        )
    email = emails.get(hub)
    if not email:
        log.info("hub %s has no email address: not told of %s", hub, about)
        return
    personalisation = {"hub": hub.replace("-", " ").title(), **personalisation}
    await enqueue(
        uow,
        notifications,
        Message(
            reference=reference,
            channel="email",
            to=email,
            template=template,
            personalisation=personalisation,
            about=about,
        ),
    )


def _stale(uow: UnitOfWork, at: datetime, recent: timedelta) -> bool:
    return at < uow.now() - recent


def _kent_time(at: datetime) -> str:
    from zoneinfo import ZoneInfo

    return at.astimezone(ZoneInfo("Europe/London")).strftime("%-d %B %Y at %H:%M")


# --- HTTP: the delivery log -------------------------------------------------------------------

router = delivery_log_router(
    TABLES,
    scope="assignments:admin",
    summary="The newest messages to hubs, each with every attempt to send it (administrators)",
)
