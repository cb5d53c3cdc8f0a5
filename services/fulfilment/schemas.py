"""Request and response bodies of the fulfilment API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, Field

from services.fulfilment import domain
from shared.schemas import Patch, Strict

TransitionTo = Literal[
    "accepted",
    "in_progress",
    "fulfilled",
    "unable_to_fulfil",
    "rejected",
    "cancelled",
    "routed",
    "out_of_area",
    "passed_on",
]
ContactOutcome = Literal[domain.CONTACT_OUTCOMES]  # type: ignore[valid-type]


class TransitionIn(Strict):
    """`{"to": "accepted"}`; a rejection needs `reason`; unable_to_fulfil needs `outcome`."""

    to: TransitionTo
    reason: Annotated[str, Field(max_length=40)] | None = None
    """rejected: wrong-district, not-eligible, duplicate, other. cancelled: no-longer-needed, resident-request,
    duplicate, entered-in-error, other."""
    outcome: Annotated[str, Field(max_length=40)] | None = None
    """unable_to_fulfil (required): resident-unreachable, declined-by-resident, need-met-elsewhere, not-eligible,
    no-capacity, moved-away, other. fulfilled (optional): delivered, arranged-with-partner, signposted."""
    note: Annotated[str, Field(max_length=2000)] | None = None
    hub: Annotated[str, Field(max_length=40)] | None = None
    """routed (administrators, from a queue): the hub. rejected as wrong-district: the right hub, if known."""
    council: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """out_of_area (administrators, from triage): the council responsible."""
    at: AwareDatetime | None = None
    """When it happened, if not now (needs the `assignments:backfill` scope): not in the future, not before the
    assignment's last change. For migrating cases from a legacy system, and `kent-together demo`."""


class ChangeOut(BaseModel):
    at: datetime
    by: str
    from_status: str | None = None
    to_status: str
    from_hub: str | None = None
    to_hub: str | None = None
    reason: str | None = None
    outcome: str | None = None
    note: str | None = None


class NextOccurrence(BaseModel):
    id: str
    """The new assignment."""
    occurrence: int


class TransitionOut(BaseModel):
    """Where the assignment is now (after a rejection: where it went), and the changes made."""

    id: str
    status: str
    hub: str | None = None
    changes: list[ChangeOut]
    next_occurrence: NextOccurrence | None = None
    """A recurring request's occurrence closed: the next one, opened for the same hub in the same transaction."""


class NoteIn(Strict):
    text: Annotated[str, Field(min_length=1, max_length=4000)]


class ContactAttemptIn(Strict):
    outcome: ContactOutcome
    note: Annotated[str, Field(max_length=2000)] | None = None


class NoteOut(BaseModel):
    id: int
    assignment_id: str
    kind: str
    contact_outcome: str | None = None
    text: str | None = None
    hub: str | None = None
    at: datetime
    by: str


class AssignmentPatch(Patch):
    nullable = frozenset({"follow_up_on"})

    follow_up: bool
    follow_up_on: date | None = None
    """When to follow up, if a date is agreed."""


class SeriesOut(BaseModel):
    """The recurring request a case is one occurrence of: "weekly, 3 of 6", and when the next one is due."""

    id: str
    """The series: the recurring request's id as referrals took it."""
    frequency: str
    occurrence: int
    occurrences: int | None = None
    """How many in all, when the series is for a number of times."""
    ends_on: date | None = None
    label: str
    """"weekly, 3 of 6", "monthly, 2 (until 2027-03-31)", "fortnightly, 4" (open-ended)."""
    next_due_at: datetime | None = None
    """When the next occurrence will be due to be fulfilled (it opens when this one is closed); null: this is the last."""
    ended_at: datetime | None = None
    ended_reason: str | None = None
    """completed, cancelled, erased, or why it could not go on (unable_to_fulfil: moved-away)."""


class AssignmentSummary(BaseModel):
    id: str
    request_id: str
    referral_id: str
    reference: str
    type: str
    details: str | None = None
    needed_by: date | None = None
    urgency: str
    duplicate_of: str | None = None
    status: str
    reason: str
    """Why it is where it is: the district, the triage reason, the council responsible."""
    hub: str | None = None
    district_code: str | None = None
    council_code: str | None = None
    council_name: str | None = None
    received_at: datetime
    routed_at: datetime | None = None
    accepted_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: str | None = None
    accept_due_at: datetime | None = None
    fulfil_due_at: datetime | None = None
    overdue: bool
    overdue_deadlines: list[str]
    escalated_at: datetime | None = None
    follow_up: bool
    follow_up_on: date | None = None
    resident_name: str | None = None
    phone: str | None = None
    postcode: str | None = None
    updated_at: datetime
    series: SeriesOut | None = None
    """Set when the request recurs: which occurrence this is."""


class AssignmentList(BaseModel):
    items: list[AssignmentSummary]
    """This page (`limit`, `offset`)."""
    count: int
    """How many match, on every page: a hub's true total."""


class WhereNow(BaseModel):
    status: str
    hub: str | None = None
    """The hub that has it now; none while it is in a queue (triage, out of area)."""
    council_name: str | None = None
    since: datetime


class RejectedCase(BaseModel):
    id: str
    request_id: str
    referral_id: str
    reference: str
    type: str
    rejected_at: datetime
    reason: str | None = None
    now: WhereNow


class RejectedList(BaseModel):
    items: list[RejectedCase]
    count: int


class ReferralOut(BaseModel):
    id: str
    reference: str
    channel: str
    received_at: datetime
    consent_to_share: bool


class AssignmentOut(AssignmentSummary):
    allowed: list[str]
    """What it can become next."""
    referral: ReferralOut
    resident: dict[str, Any]
    referrer: dict[str, Any] | None = None
    history: list[ChangeOut]
    notes: list[NoteOut]
    contact_attempts: list[NoteOut]


class SlaHours(Strict):
    accept_hours: Annotated[float, Field(gt=0, le=24 * 90)] | None = None
    fulfil_hours: Annotated[float, Field(gt=0, le=24 * 180)] | None = None


class HubOut(BaseModel):
    slug: str
    name: str
    district_code: str
    email: str | None = None
    phone: str | None = None
    hours: str | None = None
    webhook_url: str | None = None
    has_webhook_secret: bool
    sla: dict[str, dict[str, float]]
    """This hub's SLA hours by urgency, its own where set, the county's otherwise."""
    updated_at: datetime


class HubPatch(Patch):
    """Only the fields given change; `sla` replaces the hub's own SLA hours (urgencies left out use the default)."""

    nullable = frozenset({"email", "phone", "hours", "webhook_url", "webhook_secret", "sla"})

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    phone: Annotated[str, Field(max_length=40)] | None = None
    hours: Annotated[str, Field(max_length=200)] | None = None
    webhook_url: AnyHttpUrl | None = None
    webhook_secret: Annotated[str, Field(min_length=16, max_length=200)] | None = None
    sla: dict[Literal[domain.URGENCIES], SlaHours] | None = None  # type: ignore[valid-type]


class FeedItem(BaseModel):
    seq: int
    event: dict[str, Any]
    """The CloudEvent, as on the hub's topic."""


class FeedPage(BaseModel):
    hub: str
    items: list[FeedItem]
    next_cursor: int
    """Ask with `cursor=` this next time; the same when nothing is new."""


class DeliveryOut(BaseModel):
    id: int
    feed_seq: int
    event_id: str
    type: str
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    created_at: datetime


class AreaOut(BaseModel):
    """Who helps at a postcode."""

    postcode: str
    outcome: str
    """hub (a Kent district hub), out_of_area (the council named helps) or triage (a person decides)."""
    in_kent: bool
    hub: str | None = None
    hub_name: str | None = None
    council_code: str | None = None
    council_name: str | None = None


class RequestStatus(BaseModel):
    type: str
    status: str
    hub: str | None = None
    hub_name: str | None = None
    council_name: str | None = None
    """Out of area: the council responsible."""
    updated_at: datetime


class RequestStatusList(BaseModel):
    items: list[RequestStatus]
    count: int
