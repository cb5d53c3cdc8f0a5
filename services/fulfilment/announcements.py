"""What fulfilment's events say, and where they go: the hub's topic, its pull feed and webhook; the status topic."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from services.fulfilment.domain import CLOSED, Assignment, Change, Series, Status
from services.fulfilment.models import assignment_changes, assignments, escalations, referrals
from shared import tracing
from shared.events import (
    AssignmentEscalatedV1,
    AssignmentRoutedV1,
    AssignmentStatusChangedV1,
    AssignmentWithdrawnV1,
    CloudEvent,
    EventData,
)
from shared.settings import Topics
from shared.uow import EncodedEvent, UnitOfWork

Trace = tuple[str | None, str | None]


@dataclass(frozen=True)
class Plain:
    """An event's `data` as its contract's `model_dump()` gives it, built without the model (`uow.publish_data`).

    For what routing sends for every request (the status and routed events): building
    and dumping the two contracts was a fifth of routing's CPU. Its subject is
    `data["assignment_id"]`, as both contracts' `subject()` says.
    tests/unit/fulfilment/test_announcements.py checks each against its contract.
    """

    contract: type[EventData]
    data: dict[str, Any]


@dataclass
class Outgoing:
    """What one use case (or one fetched batch) sends: events for the outbox now, and hub feed entries just before commit."""

    topics: Topics
    hub_rows: dict | None = None
    """The hubs, if the use case has them already (their webhook URLs are needed)."""
    feed: list[tuple[str, str, CloudEvent | EncodedEvent]] = field(default_factory=list)

    def to_hub(
        self,
        uow: UnitOfWork,
        data: EventData | Plain,
        *,
        hub: str,
        key: str,
        assignment_id: str,
        trace: Trace | None = None,
    ) -> None:
        """On the hub's topic, in its pull feed and (if it has one) to its webhook: the same event.

        `trace`: the (traceparent, tracestate) it carries, for work done for another caller
        (a fetched batch's referrals); else the current trace's.
        """
        event = _publish(uow, data, topic=self.topics.hub(hub), key=key, trace=trace)
        self.feed.append((hub, assignment_id, event))

    def status(self, uow: UnitOfWork, data: EventData | Plain, *, key: str, trace: Trace | None = None) -> None:
        _publish(uow, data, topic=self.topics.assignment_status, key=key, trace=trace)

    async def flush(self, uow: UnitOfWork) -> None:
        """Append the feed entries (see `Assignments.append_to_feeds`): the last rows the transaction locks."""
        entries, self.feed = self.feed, []
        await uow.assignments.append_to_feeds(entries, hub_rows=self.hub_rows)


def _publish(
    uow: UnitOfWork, data: EventData | Plain, *, topic: str, key: str, trace: Trace | None
) -> CloudEvent | EncodedEvent:
    if isinstance(data, Plain):
        fields = data.data
        return uow.publish_data(
            data.contract.type, subject=fields["assignment_id"], data=fields, topic=topic, key=key, trace=trace
        )
    with tracing.continued(*trace) if trace is not None else contextlib.nullcontext():
        return uow.publish(data, topic=topic, key=key)


def status_event(
    a: Assignment, change: Change, *, final: bool, series: Series | None = None, channel: str | None = None
) -> Plain:
    """`assignment.status-changed` for one change of `a` (a Plain `AssignmentStatusChangedV1`)."""
    # Times and due dates describe where the assignment rests; a passing step
    # (rejected, on its way elsewhere) carries only what happened.
    return Plain(
        AssignmentStatusChangedV1,
        {
            "assignment_id": a.id,
            "request_id": a.request_id,
            "referral_id": a.referral_id,
            "request_type": a.request_type,
            "urgency": a.urgency,
            "status": change.to_status.value,
            "previous_status": change.from_status.value if change.from_status is not None else None,
            "hub": change.to_hub,
            "previous_hub": change.from_hub,
            "district_code": a.district_code,
            "council_code": a.council_code if final else None,
            "council_name": a.council_name if final else None,
            "reason": change.reason,
            "outcome": change.outcome,
            "received_at": a.received_at,
            "changed_at": change.at,
            "routed_at": a.routed_at if final else None,
            "accepted_at": a.accepted_at if final else None,
            "closed_at": a.closed_at if final else None,
            "accept_due_at": a.accept_due_at if final else None,
            "fulfil_due_at": a.fulfil_due_at if final else None,
            "series_id": a.series_id,
            "occurrence": a.occurrence,
            "frequency": series.frequency if series else None,
            "series_continues": (
                series.continues_after(a.occurrence)
                if series is not None and a.occurrence is not None and change.to_status in CLOSED
                else None
            ),
            "channel": channel if a.occurrence and a.occurrence > 1 else None,
        },
    )


def series_part(a: Assignment, series: Series | None) -> dict[str, Any] | None:
    """Which occurrence of which series `a` is, for the hub (`AssignmentSeriesV1`); None for a one-off request."""
    if series is None or a.occurrence is None:
        return None
    return {
        "series_id": series.id,
        "occurrence": a.occurrence,
        "frequency": series.frequency,
        "occurrences": series.occurrences,
        "ends_on": series.ends_on,
    }


def routed_event(
    a: Assignment, *, request_row, referral_row, previous_hub: str | None, series: Series | None = None
) -> Plain:
    """`assignment.routed` for the hub `a` is at now (a Plain `AssignmentRoutedV1`).

    `referral_row["resident"]` and `["referrer"]` are stored as their contracts dump them.
    """
    return Plain(
        AssignmentRoutedV1,
        {
            "assignment_id": a.id,
            "hub": a.hub,
            "district_code": a.district_code,
            "referral_id": a.referral_id,
            "reference": referral_row["reference"],
            "channel": referral_row["channel"],
            "received_at": a.received_at,
            "routed_at": a.routed_at,
            "accept_due_at": a.accept_due_at,
            "fulfil_due_at": a.fulfil_due_at,
            "reason": a.reason,
            "previous_hub": previous_hub,
            "request": {
                "request_id": a.request_id,
                "type": a.request_type,
                "details": request_row["details"],
                "needed_by": request_row["needed_by"],
                "urgency": a.urgency,
                "duplicate_of": request_row["duplicate_of"],
            },
            "resident": referral_row["resident"],
            "referrer": referral_row["referrer"],
            "consent_to_share": referral_row["consent_to_share"],
            "series": series_part(a, series),
        },
    )


def announce(
    uow: UnitOfWork,
    out: Outgoing,
    *,
    a: Assignment,
    changes: list[Change],
    request_row,
    referral_row,
    series: Series | None = None,
    trace: Trace | None = None,
) -> None:
    """The status events of these changes, and what each hub involved must hear.

    `series`: the series `a` is an occurrence of, if it is one (the events say which, and whether more follow).
    `trace`: the (traceparent, tracestate) the events carry, if not the current trace's (see `Outgoing.to_hub`).
    """
    for index, change in enumerate(changes):
        out.status(
            uow,
            status_event(
                a,
                change,
                final=index == len(changes) - 1,
                series=series,
                channel=referral_row["channel"] if referral_row else None,
            ),
            key=a.referral_id,
            trace=trace,
        )
        left = change.from_hub is not None and (
            change.to_hub != change.from_hub or change.to_status is Status.CANCELLED
        )
        if left:
            rejected = index > 0 and changes[index - 1].to_status is Status.REJECTED
            why = "cancelled" if change.to_status is Status.CANCELLED else "rejected" if rejected else "re-routed"
            out.to_hub(
                uow,
                AssignmentWithdrawnV1(
                    assignment_id=a.id,
                    request_id=a.request_id,
                    referral_id=a.referral_id,
                    hub=change.from_hub,
                    why=why,
                    reason=changes[index - 1].reason if rejected else change.reason,
                    withdrawn_at=change.at,
                ),
                hub=change.from_hub,
                key=a.referral_id,
                assignment_id=a.id,
                trace=trace,
            )
        if change.to_status is Status.ROUTED and change.to_hub and change.to_hub != change.from_hub:
            out.to_hub(
                uow,
                routed_event(
                    a,
                    request_row=request_row,
                    referral_row=referral_row,
                    previous_hub=change.from_hub,
                    series=series,
                ),
                hub=change.to_hub,
                key=a.referral_id,
                assignment_id=a.id,
                trace=trace,
            )


def escalated_event(row, *, deadline: str, due_at, escalated_at, status: str, hub: str | None) -> AssignmentEscalatedV1:
    return AssignmentEscalatedV1(
        assignment_id=row["id"],
        request_id=row["request_id"],
        referral_id=row["referral_id"],
        request_type=row["request_type"],
        urgency=row["urgency"],
        status=status,
        hub=hub,
        district_code=row["district_code"],
        deadline=deadline,
        due_at=due_at,
        escalated_at=escalated_at,
    )


async def publish_state_page(
    uow: UnitOfWork, after: str | None, limit: int, *, topics: Topics
) -> tuple[str | None, int]:
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
    last_change = (
        dict(
            (
                await uow.session.execute(
                    select(assignment_changes.c.assignment_id, func.max(assignment_changes.c.at))
                    .where(assignment_changes.c.assignment_id.in_(ids))
                    .group_by(assignment_changes.c.assignment_id)
                )
            ).all()
        )
        if ids
        else {}
    )
    missed = (
        (
            await uow.session.execute(
                select(escalations).where(escalations.c.assignment_id.in_(ids)).order_by(escalations.c.id)
            )
        )
        .mappings()
        .all()
        if ids
        else []
    )
    schedules = await uow.assignments.series(row["series_id"] for row in rows if row["series_id"])
    later = {row["referral_id"] for row in rows if (row["occurrence"] or 0) > 1}
    channels = (
        dict(
            (
                await uow.session.execute(select(referrals.c.id, referrals.c.channel).where(referrals.c.id.in_(later)))
            ).all()
        )
        if later
        else {}
    )
    out = Outgoing(topics)
    for row in rows:
        recurs = schedules.get(row["series_id"]) if row["series_id"] else None
        out.status(
            uow,
            AssignmentStatusChangedV1(
                assignment_id=row["id"],
                request_id=row["request_id"],
                referral_id=row["referral_id"],
                request_type=row["request_type"],
                urgency=row["urgency"],
                status=row["status"],
                hub=row["hub"],
                district_code=row["district_code"],
                council_code=row["council_code"],
                council_name=row["council_name"],
                reason=None,
                outcome=row["outcome"],
                received_at=row["received_at"],
                changed_at=last_change.get(row["id"]) or row["updated_at"],
                routed_at=row["routed_at"],
                accepted_at=row["accepted_at"],
                closed_at=row["closed_at"],
                accept_due_at=row["accept_due_at"],
                fulfil_due_at=row["fulfil_due_at"],
                series_id=row["series_id"],
                occurrence=row["occurrence"],
                frequency=recurs.frequency if recurs else None,
                series_continues=(
                    recurs.continues_after(row["occurrence"])
                    if recurs is not None and row["status"] in CLOSED
                    else None
                ),
                channel=channels.get(row["referral_id"]) if (row["occurrence"] or 0) > 1 else None,
            ),
            key=row["referral_id"],
        )
    by_id = {row["id"]: row for row in rows}
    for escalation in missed:
        row = by_id[escalation["assignment_id"]]
        out.status(
            uow,
            escalated_event(
                row,
                deadline=escalation["deadline"],
                due_at=escalation["due_at"],
                escalated_at=escalation["escalated_at"],
                status=escalation["status"],
                hub=escalation["hub"],
            ),
            key=row["referral_id"],
        )
    await out.flush(uow)
    return (ids[-1] if ids else after), len(ids)
