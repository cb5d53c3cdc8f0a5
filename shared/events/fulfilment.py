"""Contracts published by the fulfilment service.

Two audiences. A hub's own topic (`Topics.hub(slug)`, and the same events in the
hub's pull feed and webhooks) carries what that hub needs to act, the resident's
contact details included. The status topic carries ids, types, districts, times
and codes only, for reporting: never a name, phone, address or free-text note.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, ClassVar

from pydantic import BaseModel

from shared.events import PERSONAL, TYPE_PREFIX, EventData, contract
from shared.events.referrals import ReferrerV1, ResidentV1

__all__ = [
    "AssignedRequestV1",
    "AssignmentRoutedV1",
    "AssignmentWithdrawnV1",
    "AssignmentErasedV1",
    "AssignmentAmendedV1",
    "AssignmentStatusChangedV1",
    "AssignmentEscalatedV1",
    "AssignmentHolderChangedV1",
    "AssignmentSeriesV1",
]


class AssignedRequestV1(BaseModel):
    """The request a hub is asked to meet."""

    request_id: uuid.UUID
    type: str
    details: Annotated[str | None, PERSONAL] = None
    needed_by: date | None = None
    urgency: str
    duplicate_of: uuid.UUID | None = None


class AssignmentSeriesV1(BaseModel):
    """Which occurrence of a recurring request this assignment is: "weekly, 3 of 6"."""

    series_id: uuid.UUID
    """The recurring request's id, as referrals took it (the first occurrence's `request_id`)."""
    occurrence: int
    """1 for the first, 2 for the next…"""
    frequency: str
    occurrences: int | None = None
    """How many in all, when the series is for a number of times."""
    ends_on: date | None = None
    """The last date an occurrence may be due, when the series has an end date."""


@contract
class AssignmentRoutedV1(EventData):
    """A request was routed to this hub: who the resident is, how to reach them, what they need, by when."""

    type: ClassVar[str] = TYPE_PREFIX + "assignment.routed.v1"
    topics: ClassVar[tuple[str, ...]] = ("hubs",)

    assignment_id: uuid.UUID
    hub: str
    district_code: str | None = None
    referral_id: uuid.UUID
    reference: str
    """The reference the resident quotes."""
    channel: str
    received_at: datetime
    routed_at: datetime
    accept_due_at: datetime | None = None
    fulfil_due_at: datetime | None = None
    reason: str
    """Why this hub: "in Thanet (E07000114)", or who sent it on."""
    previous_hub: str | None = None
    request: AssignedRequestV1
    resident: ResidentV1
    referrer: Annotated[ReferrerV1 | None, PERSONAL] = None
    consent_to_share: bool
    series: AssignmentSeriesV1 | None = None
    """Set when the request recurs: this is one occurrence of the series, with its own deadlines."""

    def subject(self) -> str:
        return str(self.assignment_id)


@contract
class AssignmentWithdrawnV1(EventData):
    """A request is no longer this hub's to act on: cancelled, or moved to another hub or a queue."""

    type: ClassVar[str] = TYPE_PREFIX + "assignment.withdrawn.v1"
    topics: ClassVar[tuple[str, ...]] = ("hubs",)

    assignment_id: uuid.UUID
    request_id: uuid.UUID
    referral_id: uuid.UUID
    hub: str
    why: str
    """`cancelled`, `rejected` (by this hub) or `re-routed` (the address changed)."""
    reason: str | None = None
    """The code behind it: the cancellation reason, the rejection reason."""
    withdrawn_at: datetime

    def subject(self) -> str:
        return str(self.assignment_id)


@contract
class AssignmentErasedV1(EventData):
    """The resident's personal data was erased (on their request, or at the end of retention): erase your copy.

    Sent to every hub that was ever sent this assignment. No personal data.
    """

    type: ClassVar[str] = TYPE_PREFIX + "assignment.erased.v1"
    topics: ClassVar[tuple[str, ...]] = ("hubs",)

    assignment_id: uuid.UUID
    request_id: uuid.UUID
    referral_id: uuid.UUID
    hub: str
    erased_at: datetime

    def subject(self) -> str:
        return str(self.assignment_id)


@contract
class AssignmentAmendedV1(EventData):
    """The resident's details changed while this hub holds the request: the details as they are now."""

    type: ClassVar[str] = TYPE_PREFIX + "assignment.amended.v1"
    topics: ClassVar[tuple[str, ...]] = ("hubs",)

    assignment_id: uuid.UUID
    request_id: uuid.UUID
    referral_id: uuid.UUID
    hub: str
    amended_at: datetime
    changed: list[str]
    address_changed: bool
    resident: ResidentV1
    consent_to_share: bool

    def subject(self) -> str:
        return str(self.assignment_id)


@contract
class AssignmentStatusChangedV1(EventData):
    """An assignment was routed, queued or moved on in its lifecycle. No personal data."""

    type: ClassVar[str] = TYPE_PREFIX + "assignment.status-changed.v1"
    topics: ClassVar[tuple[str, ...]] = ("assignment_status",)

    assignment_id: uuid.UUID
    request_id: uuid.UUID
    referral_id: uuid.UUID
    request_type: str
    urgency: str
    status: str
    """routed, triage, out_of_area, accepted, in_progress, fulfilled, unable_to_fulfil, rejected,
    cancelled, passed_on."""
    previous_status: str | None = None
    hub: str | None = None
    previous_hub: str | None = None
    district_code: str | None = None
    """The resident's district council (ONS code), when the postcode names one."""
    council_code: str | None = None
    """Out of area: the council responsible."""
    council_name: str | None = None
    reason: str | None = None
    """A code (rejection or cancellation reason) or routing's own words; never a person's note."""
    outcome: str | None = None
    received_at: datetime
    changed_at: datetime
    routed_at: datetime | None = None
    accepted_at: datetime | None = None
    closed_at: datetime | None = None
    accept_due_at: datetime | None = None
    fulfil_due_at: datetime | None = None
    series_id: uuid.UUID | None = None
    """A recurring request's occurrence: the series (the request as referrals took it). Each occurrence has its
    own `request_id` and `assignment_id`; reporting counts occurrences as requests and series apart."""
    occurrence: int | None = None
    """Which occurrence of the series (1, 2, …)."""
    frequency: str | None = None
    """The series' `weekly`, `fortnightly` or `monthly`."""
    series_continues: bool | None = None
    """On an occurrence's closing status: whether another occurrence follows (false: the series has ended)."""
    channel: str | None = None
    """An occurrence after the first: how its referral came in (reporting has no `request.received` for it)."""

    def subject(self) -> str:
        return str(self.assignment_id)


@contract
class AssignmentEscalatedV1(EventData):
    """An assignment missed a deadline: not picked up, accepted or fulfilled in time. No personal data."""

    type: ClassVar[str] = TYPE_PREFIX + "assignment.escalated.v1"
    topics: ClassVar[tuple[str, ...]] = ("assignment_status", "hubs")

    assignment_id: uuid.UUID
    request_id: uuid.UUID
    referral_id: uuid.UUID
    request_type: str
    urgency: str
    status: str
    hub: str | None = None
    district_code: str | None = None
    deadline: str
    """`accept` (for a queue: picked up) or `fulfil`."""
    due_at: datetime
    escalated_at: datetime

    def subject(self) -> str:
        return str(self.assignment_id)


@contract
class AssignmentHolderChangedV1(EventData):
    """A hub worker took a case, handed it to a colleague, or let it go; or a recurring request's next occurrence
    opened held by the same worker. No one named: who holds it is the hub's."""

    type: ClassVar[str] = TYPE_PREFIX + "assignment.holder-changed.v1"
    topics: ClassVar[tuple[str, ...]] = ("assignment_status",)

    assignment_id: uuid.UUID
    request_id: uuid.UUID
    referral_id: uuid.UUID
    request_type: str
    urgency: str
    status: str
    hub: str
    change: str
    """`taken`, `handed-over` or `released`; `carried-over` when a recurring request's next occurrence opens
    held by whoever held the one before."""
    held: bool
    """Someone in the hub holds the case after the change."""
    changed_at: datetime

    def subject(self) -> str:
        return str(self.assignment_id)
