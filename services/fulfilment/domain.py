"""The rules of fulfilment: where a request goes, what may happen to it next, when it is due. No I/O.

One assignment per request. It is placed in a hub (routed), in the out-of-area
queue (naming the council responsible) or in triage (with the reason), and moves:

    triage ──────► routed ──► accepted ──► in_progress ──► fulfilled
      │  ▲           │           │              └────────► unable_to_fulfil (outcome code)
      │  └───────────┴─ rejected ┘  (re-routed at once: the hub named, or triage)
      └──► out_of_area ──► passed_on
    any open state ──► cancelled

`rejected` is a step, never a resting place: the same transaction re-routes it.

A recurring request (a weekly shop) is a `Series` of assignments, one per
occurrence: closing one opens the next for the same hub, with deadlines from
the series' schedule, until the series ends (its end date, its count, or a
cancellation).
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from services.fulfilment.hubs import RoutingDecision, RoutingOutcome
from shared.errors import Forbidden, InvalidTransition, ValidationFailed


class Status(StrEnum):
    TRIAGE = "triage"
    """A person must decide where it goes (unknown postcode, no consent, rejected by a hub)."""
    OUT_OF_AREA = "out_of_area"
    """Outside Kent: to be passed to the council named."""
    ROUTED = "routed"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    FULFILLED = "fulfilled"
    UNABLE_TO_FULFIL = "unable_to_fulfil"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    PASSED_ON = "passed_on"
    """Out of area, and handed to the council responsible."""


ALLOWED: Mapping[Status, frozenset[Status]] = MappingProxyType(
    {
        Status.TRIAGE: frozenset({Status.ROUTED, Status.OUT_OF_AREA, Status.CANCELLED}),
        Status.OUT_OF_AREA: frozenset({Status.PASSED_ON, Status.ROUTED, Status.CANCELLED}),
        Status.ROUTED: frozenset({Status.ACCEPTED, Status.REJECTED, Status.CANCELLED}),
        Status.ACCEPTED: frozenset({Status.IN_PROGRESS, Status.REJECTED, Status.CANCELLED}),
        Status.IN_PROGRESS: frozenset({Status.FULFILLED, Status.UNABLE_TO_FULFIL, Status.CANCELLED}),
        Status.REJECTED: frozenset({Status.ROUTED, Status.TRIAGE}),
        Status.FULFILLED: frozenset(),
        Status.UNABLE_TO_FULFIL: frozenset(),
        Status.CANCELLED: frozenset(),
        Status.PASSED_ON: frozenset(),
    }
)
CLOSED = frozenset(status for status, onward in ALLOWED.items() if not onward)
OPEN = frozenset(Status) - CLOSED - {Status.REJECTED}
QUEUES = frozenset({Status.TRIAGE, Status.OUT_OF_AREA})

# Hub staff work their own hub's requests; placing, passing on and cancelling are
# an administrator's (a resident's cancellation arrives as an event).
HUB_STAFF_MAY = frozenset(
    {
        Status.ACCEPTED,
        Status.IN_PROGRESS,
        Status.FULFILLED,
        Status.UNABLE_TO_FULFIL,
        Status.REJECTED,
    }
)
ADMIN_MAY = HUB_STAFF_MAY | {Status.ROUTED, Status.OUT_OF_AREA, Status.PASSED_ON, Status.CANCELLED}

REJECT_REASONS = ("wrong-district", "not-eligible", "duplicate", "other")
WRONG_DISTRICT = "wrong-district"
UNABLE_OUTCOMES = (
    "resident-unreachable",
    "declined-by-resident",
    "need-met-elsewhere",
    "not-eligible",
    "no-capacity",
    "moved-away",
    "other",
)
FULFILLED_OUTCOMES = ("delivered", "arranged-with-partner", "signposted")
CONTACT_OUTCOMES = ("no-answer", "wrong-number", "voicemail", "reached")
CANCEL_REASONS = ("no-longer-needed", "resident-request", "duplicate", "entered-in-error", "other")


@dataclass(frozen=True, slots=True)
class Deadline:
    """One SLA deadline: while an assignment rests in `stages`, it is missed once `due` has passed."""

    name: str
    stages: frozenset[Status]
    due: str
    """The assignment's column (and attribute) holding when it is due."""
    escalated: str
    """The column (and attribute) holding when its escalation was raised."""


DEADLINES: tuple[Deadline, ...] = (
    # 'accept': a hub to accept it, or (for a queue) a person to pick it up.
    Deadline("accept", frozenset({Status.ROUTED, *QUEUES}), "accept_due_at", "accept_escalated_at"),
    Deadline(
        "fulfil",
        frozenset({Status.ROUTED, Status.ACCEPTED, Status.IN_PROGRESS}),
        "fulfil_due_at",
        "fulfil_escalated_at",
    ),
)
"""The stage rule, once: `Assignment.overdue_deadlines` and the repository's SQL both read it."""
DEADLINE = {d.name: d for d in DEADLINES}

SYSTEM = "fulfilment"
"""Who did it, when no person did: routing, re-routing, escalation."""


# --- SLA ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sla:
    """How long a hub has to accept a request, and to fulfil it, from when it was routed."""

    accept: timedelta
    fulfil: timedelta


URGENCIES = ("today", "within-48-hours", "this-week", "routine")
DEFAULT_SLA: Mapping[str, Sla] = MappingProxyType(
    {
        "today": Sla(accept=timedelta(hours=4), fulfil=timedelta(hours=24)),
        "within-48-hours": Sla(accept=timedelta(hours=24), fulfil=timedelta(hours=48)),
        "this-week": Sla(accept=timedelta(hours=72), fulfil=timedelta(days=7)),
        "routine": Sla(accept=timedelta(days=5), fulfil=timedelta(days=14)),
    }
)


def sla_for(urgency: str, overrides: Mapping[str, Mapping[str, float]] | None = None) -> Sla:
    """The hub's SLA for an urgency: its own hours where set, the county default otherwise.

    `overrides` is the hub's setting: {"today": {"accept_hours": 2, "fulfil_hours": 12}}.
    An urgency we do not know is treated as routine rather than never due.
    """
    base = DEFAULT_SLA.get(urgency, DEFAULT_SLA["routine"])
    own = (overrides or {}).get(urgency) or {}
    accept, fulfil = own.get("accept_hours"), own.get("fulfil_hours")
    return Sla(
        accept=timedelta(hours=accept) if accept is not None else base.accept,
        fulfil=timedelta(hours=fulfil) if fulfil is not None else base.fulfil,
    )


# --- placement --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request goes: a hub (with its SLA), the out-of-area queue naming the council, or triage."""

    status: Status
    reason: str
    hub: str | None = None
    district_code: str | None = None
    council_code: str | None = None
    council_name: str | None = None
    sla: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """The hub's SLA overrides, by urgency."""
    pick_up_within: timedelta | None = None
    """A queue: how soon a person must act on it."""

    def __post_init__(self) -> None:
        if self.status not in (Status.ROUTED, Status.TRIAGE, Status.OUT_OF_AREA):
            raise ValueError(f"a request is placed in a hub or a queue, not {self.status}")
        if (self.status is Status.ROUTED) != (self.hub is not None):
            raise ValueError("a hub placement, and only a hub placement, names a hub")


def placement_for(
    decision: RoutingDecision,
    *,
    hub_sla: Mapping[str, Mapping[str, Mapping[str, float]]],
    triage_within: timedelta,
    out_of_area_within: timedelta,
    consent_to_share: bool = True,
) -> Placement:
    """Routing's decision as a placement, with the hub's SLA or the queue's pick-up time.

    A resident who has not agreed to their details going to the district goes to
    triage whatever the postcode: someone must ask them, or decide in their best
    interests, before a hub sees their details.
    """
    district = decision.district.code if decision.district else None
    if not consent_to_share:
        return Placement(
            Status.TRIAGE,
            reason="no consent to share the resident's details with a district hub",
            district_code=district,
            pick_up_within=triage_within,
        )
    if decision.outcome is RoutingOutcome.HUB:
        assert decision.hub is not None  # route() names a hub with every HUB decision
        return Placement(
            Status.ROUTED,
            reason=decision.reason,
            hub=decision.hub.slug,
            district_code=district,
            sla=hub_sla.get(decision.hub.slug, {}),
        )
    if decision.outcome is RoutingOutcome.OUT_OF_AREA:
        assert decision.council is not None  # route() names the council with every OUT_OF_AREA decision
        return Placement(
            Status.OUT_OF_AREA,
            reason=decision.reason,
            district_code=district,
            council_code=decision.council.code,
            council_name=decision.council.name,
            pick_up_within=out_of_area_within,
        )
    return Placement(Status.TRIAGE, reason=decision.reason, district_code=district, pick_up_within=triage_within)


# --- the assignment -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded transition: who, when, from, to, why."""

    at: datetime
    by: str
    from_status: Status | None
    to_status: Status
    from_hub: str | None = None
    to_hub: str | None = None
    reason: str | None = None
    """A code, or routing's own words (never personal data)."""
    outcome: str | None = None
    note: str | None = None
    """What the person wrote (may name the resident: stays in this service)."""


@dataclass(slots=True)
class Assignment:
    """One request's journey to the help it needs."""

    id: str
    request_id: str
    referral_id: str
    request_type: str
    urgency: str
    received_at: datetime
    status: Status
    reason: str
    hub: str | None = None
    district_code: str | None = None
    council_code: str | None = None
    council_name: str | None = None
    routed_at: datetime | None = None
    """When it reached its current hub or queue: the SLA clock starts here."""
    accepted_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: str | None = None
    accept_due_at: datetime | None = None
    fulfil_due_at: datetime | None = None
    accept_escalated_at: datetime | None = None
    fulfil_escalated_at: datetime | None = None
    rejected_by: list[str] = field(default_factory=list)
    """Hubs that turned it down: never routed back to them automatically."""
    series_id: str | None = None
    """A recurring request's occurrence: its series (the request as referrals took it)."""
    occurrence: int | None = None

    @classmethod
    def open(
        cls,
        *,
        id: str,
        request_id: str,
        referral_id: str,
        request_type: str,
        urgency: str,
        received_at: datetime,
        placement: Placement,
        at: datetime,
        series_id: str | None = None,
        occurrence: int | None = None,
    ) -> tuple[Assignment, Change]:
        """A new assignment, placed where routing says."""
        assignment = cls(
            id=id,
            request_id=request_id,
            referral_id=referral_id,
            request_type=request_type,
            urgency=urgency,
            received_at=received_at,
            status=placement.status,
            reason=placement.reason,
            series_id=series_id,
            occurrence=occurrence,
        )
        assignment._place(placement, at=at)
        return assignment, Change(
            at=at,
            by=SYSTEM,
            from_status=None,
            to_status=placement.status,
            to_hub=placement.hub,
            reason=placement.reason,
        )

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def allowed(self) -> frozenset[Status]:
        return ALLOWED[self.status]

    # -- what people do --

    def move(
        self,
        to: Status,
        *,
        by: str,
        at: datetime,
        reason: str | None = None,
        outcome: str | None = None,
        note: str | None = None,
        placement: Placement | None = None,
    ) -> list[Change]:
        """Accept, start, fulfil, mark unable to fulfil, pass on, cancel, or place from a queue.

        Rejection has its own rule (`reject`), since it re-routes.
        """
        self._check_allowed(to)
        if to is Status.REJECTED:
            raise ValueError("use reject(): a rejection re-routes")
        if to is Status.UNABLE_TO_FULFIL:
            _require_code("outcome", outcome, codes=UNABLE_OUTCOMES, required=True)
        elif to is Status.FULFILLED:
            _require_code("outcome", outcome, codes=FULFILLED_OUTCOMES, required=False)
        elif outcome is not None:
            raise ValidationFailed(
                [{"field": "outcome", "reason": f"is only for fulfilled or unable_to_fulfil, not {to}"}]
            )
        if to is Status.CANCELLED:
            _require_code("reason", reason, codes=CANCEL_REASONS, required=True)
        elif reason is not None:
            # Reasons are codes and travel to reporting; people's words go in the note.
            raise ValidationFailed([{"field": "reason", "reason": f"is for rejected or cancelled, not {to}: use note"}])
        if to in (Status.ROUTED, Status.OUT_OF_AREA):
            if placement is None or placement.status is not to:
                field_name = "hub" if to is Status.ROUTED else "council"
                raise ValidationFailed([{"field": field_name, "reason": f"is required to move it to {to}"}])
            return [self._replace(placement, by=by, at=at, reason=placement.reason, note=note)]

        change = Change(
            at=at,
            by=by,
            from_status=self.status,
            to_status=to,
            from_hub=self.hub,
            to_hub=self.hub,
            reason=reason,
            outcome=outcome,
            note=note,
        )
        self.status = to
        if to is Status.ACCEPTED:
            self.accepted_at = at
        if to in CLOSED:
            self.closed_at = at
            self.outcome = outcome
        return [change]

    def reject(
        self,
        *,
        reason: str,
        by: str,
        at: datetime,
        note: str | None = None,
        named: Placement | None = None,
        by_postcode: Placement | None = None,
        triage_within: timedelta,
    ) -> list[Change]:
        """The hub turns it down; it moves on in the same breath.

        Wrong district goes to the hub the rejecting hub names, else to the hub the
        resident's postcode now names if that is another hub; anything else, and any
        hub that has already turned it down, goes to triage so a person decides.
        """
        self._check_allowed(Status.REJECTED)
        _require_code("reason", reason, codes=REJECT_REASONS, required=True)
        if reason == "other" and not (note and note.strip()):
            raise ValidationFailed([{"field": "note", "reason": "is required when the reason is 'other'"}])
        if named is not None:
            if reason != WRONG_DISTRICT:
                raise ValidationFailed(
                    [{"field": "hub", "reason": "names the right hub, so only for 'wrong-district'"}]
                )
            if named.hub == self.hub:
                raise ValidationFailed([{"field": "hub", "reason": "is the hub rejecting it"}])
        rejecting = self.hub
        changes = [
            Change(
                at=at,
                by=by,
                from_status=self.status,
                to_status=Status.REJECTED,
                from_hub=rejecting,
                to_hub=rejecting,
                reason=reason,
                note=note,
            )
        ]
        self.status = Status.REJECTED
        if rejecting and rejecting not in self.rejected_by:
            self.rejected_by.append(rejecting)

        onward = None
        if reason == WRONG_DISTRICT:
            onward = next(
                (
                    p
                    for p in (named, by_postcode)
                    if p is not None and p.status is Status.ROUTED and p.hub not in self.rejected_by
                ),
                None,
            )
        if onward is not None:
            onward = replace(onward, reason=f"sent on by {rejecting}: wrong district")
        else:
            onward = Placement(
                Status.TRIAGE,
                reason=f"rejected by {rejecting}: {reason}",
                district_code=self.district_code,
                pick_up_within=triage_within,
            )
        changes.append(self._replace(onward, by=SYSTEM, at=at, reason=onward.reason))
        return changes

    # -- what the system does --

    def reroute(self, placement: Placement, *, at: datetime, reason: str) -> list[Change]:
        """Move a request nobody has taken on yet to where its new address says; [] if nothing changes.

        Once a hub has accepted it, the hub decides (it may reject it as wrong district):
        it has likely spoken to the resident already.
        """
        if self.status not in (Status.ROUTED, Status.TRIAGE, Status.OUT_OF_AREA):
            return []
        if placement.hub in self.rejected_by:
            placement = Placement(
                Status.TRIAGE,
                reason=f"the new address is {placement.hub}'s, which rejected it before",
                district_code=placement.district_code,
                pick_up_within=placement.pick_up_within,
            )
        same = (placement.status, placement.hub, placement.council_code) == (self.status, self.hub, self.council_code)
        if same:
            return []
        return [self._replace(placement, by=SYSTEM, at=at, reason=reason)]

    def cancel(self, *, reason: str, by: str, at: datetime) -> list[Change]:
        """The resident's request was cancelled: close it if it is open; [] if it is closed already."""
        if not self.is_open:
            return []
        return self.move(Status.CANCELLED, by=by, at=at, reason=reason)

    # -- SLA --

    def overdue_deadlines(self, now: datetime) -> list[str]:
        """Deadlines missed: 'accept' (for a queue: picked up) and 'fulfil'."""
        return [
            d.name
            for d in DEADLINES
            if self.status in d.stages and (due := getattr(self, d.due)) is not None and due <= now
        ]

    def is_overdue(self, now: datetime) -> bool:
        return bool(self.overdue_deadlines(now))

    # -- inside --

    def _check_allowed(self, to: Status) -> None:
        if to not in self.allowed():
            allowed = sorted(self.allowed())
            raise InvalidTransition(
                f"an assignment that is {self.status} cannot become {to}; "
                + (f"it can become: {', '.join(allowed)}" if allowed else "it is closed"),
                **{"from": str(self.status), "to": str(to), "allowed": [str(s) for s in allowed]},
            )

    def _replace(self, placement: Placement, *, by: str, at: datetime, reason: str, note: str | None = None) -> Change:
        change = Change(
            at=at,
            by=by,
            from_status=self.status,
            to_status=placement.status,
            from_hub=self.hub,
            to_hub=placement.hub,
            reason=reason,
            note=note,
        )
        self._place(replace(placement, reason=reason), at=at)
        return change

    def _place(self, placement: Placement, *, at: datetime) -> None:
        self.status = placement.status
        self.reason = placement.reason
        self.hub = placement.hub
        # A queue's placement may not know the district (an invalid postcode): keep what we knew.
        self.district_code = placement.district_code or self.district_code
        self.council_code = placement.council_code
        self.council_name = placement.council_name
        self.routed_at = at
        self.accepted_at = None
        self.accept_escalated_at = None
        self.fulfil_escalated_at = None
        if placement.status is Status.ROUTED:
            sla = sla_for(self.urgency, placement.sla)
            self.accept_due_at, self.fulfil_due_at = at + sla.accept, at + sla.fulfil
        else:
            self.accept_due_at = at + placement.pick_up_within if placement.pick_up_within else None
            self.fulfil_due_at = None


def check_actor_may(to: Status, *, role_is_admin: bool) -> None:
    """Hub staff accept, work, close and reject; placing, passing on and cancelling are an administrator's."""
    allowed = ADMIN_MAY if role_is_admin else HUB_STAFF_MAY
    if to not in allowed:
        raise Forbidden(f"moving an assignment to {to} is for administrators")


BACKFILL_SCOPE = "assignments:backfill"


def check_backdated(at: datetime, *, scopes: frozenset[str], last_change: datetime | None, now: datetime) -> None:
    """A transition dated `at` rather than now: for recording what really happened, in order, in the past."""
    if BACKFILL_SCOPE not in scopes:
        raise Forbidden(
            f"dating a transition ('at') needs the {BACKFILL_SCOPE!r} scope (administrators, "
            "migrating cases from a legacy system)",
            field="at",
        )
    if at > now:
        raise ValidationFailed([{"field": "at", "reason": "is in the future"}])
    if last_change is not None and at < last_change:
        raise ValidationFailed(
            [
                {
                    "field": "at",
                    "reason": f"is before the assignment's last change, at "
                    f"{last_change.isoformat()}: transitions are recorded in order",
                }
            ]
        )


def _require_code(name: str, value: str | None, *, codes: tuple[str, ...], required: bool) -> None:
    if value is None:
        if required:
            raise ValidationFailed([{"field": name, "reason": f"is required: one of {', '.join(codes)}"}])
        return
    if value not in codes:
        raise ValidationFailed([{"field": name, "reason": f"unknown {name} {value!r}: one of {', '.join(codes)}"}])


def validate_sla_overrides(value: Mapping[str, Mapping[str, float]]) -> list[dict[str, str]]:
    """Field errors in a hub's SLA setting; [] if it is sound."""
    errors = []
    for urgency, hours in value.items():
        if urgency not in URGENCIES:
            errors.append({"field": f"sla.{urgency}", "reason": f"unknown urgency: one of {', '.join(URGENCIES)}"})
            continue
        for key, number in hours.items():
            if key not in ("accept_hours", "fulfil_hours"):
                errors.append(
                    {"field": f"sla.{urgency}.{key}", "reason": "unknown field: accept_hours or fulfil_hours"}
                )
            elif not isinstance(number, (int, float)) or number <= 0:
                errors.append({"field": f"sla.{urgency}.{key}", "reason": "must be a number of hours above 0"})
        sla = sla_for(urgency, value)
        if sla.fulfil < sla.accept:
            errors.append({"field": f"sla.{urgency}", "reason": "fulfil_hours must not be shorter than accept_hours"})
    return errors


# --- recurring requests -------------------------------------------------------------

FREQUENCIES = ("weekly", "fortnightly", "monthly")
"""As the referrals contract has them (`shared.events.FREQUENCIES`)."""
SERIES_ENDING_OUTCOMES = frozenset({"declined-by-resident", "need-met-elsewhere", "not-eligible", "moved-away"})
"""Unable to fulfil for one of these: the need itself has gone, so no further occurrence opens.

The others (`resident-unreachable`, `no-capacity`, `other`) close this week's
occurrence only: the resident still needs next week's shop."""


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or that month's last day (31 January + 1 month: 28 or 29 February)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


def occurrence_request_id(series_id: str, occurrence: int) -> str:
    """The request id of a series' occurrence: the series' own for the first, derived (and so repeatable) after."""
    if occurrence == 1:
        return series_id
    return str(uuid.uuid5(uuid.UUID(series_id), f"occurrence-{occurrence}"))


@dataclass(slots=True)
class Series:
    """A recurring request: its schedule, how many occurrences were opened, and whether it has ended."""

    id: str
    """The recurring request's id, as referrals took it: the first occurrence's request id."""
    referral_id: str
    frequency: str
    starts_at: datetime
    """When the first occurrence was placed. Occurrence n is scheduled at this plus n-1 weeks (fortnights,
    months): its SLA counts from there, never from when the one before was closed."""
    ends_on: date | None = None
    occurrences: int | None = None
    """How many in all (the first included); neither this nor `ends_on`: until cancelled."""
    made: int = 1
    """How many occurrences have been opened: the open (or last) one is occurrence `made`."""
    ended_at: datetime | None = None
    ended_reason: str | None = None
    """`completed` (its end date or count reached), `cancelled`, `erased`, or `unable to fulfil: <outcome>`."""

    def __post_init__(self) -> None:
        if self.frequency not in FREQUENCIES:
            raise ValueError(f"unknown frequency {self.frequency!r}")

    @property
    def is_open(self) -> bool:
        return self.ended_at is None

    def scheduled_at(self, occurrence: int) -> datetime:
        """When occurrence `occurrence` (1, 2, …) starts in the schedule."""
        if occurrence < 1:
            raise ValueError("occurrences count from 1")
        steps = occurrence - 1
        if self.frequency == "weekly":
            return self.starts_at + timedelta(weeks=steps)
        if self.frequency == "fortnightly":
            return self.starts_at + timedelta(weeks=2 * steps)
        day = add_months(self.starts_at.date(), steps)  # from the first each time: 31 Jan, 28 Feb, 31 Mar
        return self.starts_at.replace(year=day.year, month=day.month, day=day.day)

    def includes(self, occurrence: int) -> bool:
        """Whether the schedule has this occurrence at all (within its count and its end date)."""
        if self.occurrences is not None and occurrence > self.occurrences:
            return False
        return self.ends_on is None or self.scheduled_at(occurrence).date() <= self.ends_on

    def next_occurrence(self) -> int | None:
        """The occurrence that would follow the last one opened; None if the series has ended or has no more."""
        following = self.made + 1
        return following if self.is_open and self.includes(following) else None

    def continues_after(self, occurrence: int) -> bool:
        """Another occurrence follows this one (what the status event's `series_continues` says)."""
        return self.is_open and occurrence < self.made

    def label(self, occurrence: int) -> str:
        """How the hub sees it: "weekly, 3 of 6", "monthly, 2 (until 2027-03-31)", "fortnightly, 4"."""
        if self.occurrences is not None:
            return f"{self.frequency}, {occurrence} of {self.occurrences}"
        if self.ends_on is not None:
            return f"{self.frequency}, {occurrence} (until {self.ends_on.isoformat()})"
        return f"{self.frequency}, {occurrence}"

    def next_due_at(self, occurrence: int, sla: Sla) -> datetime | None:
        """When the occurrence after `occurrence` will be due to be fulfilled; None if there is none."""
        if not self.is_open or not self.includes(occurrence + 1):
            return None
        return self.scheduled_at(occurrence + 1) + sla.fulfil

    def end(self, *, reason: str, at: datetime) -> bool:
        """Stop the series (no further occurrence opens); False if it had ended already."""
        if not self.is_open:
            return False
        self.ended_at, self.ended_reason = at, reason
        return True

    def after_closed(self, a: Assignment, *, at: datetime) -> int | None:
        """Occurrence `a` has just closed: the number of the occurrence to open now, or None (the series may end).

        Fulfilled, or unable to fulfil for a reason that passes (nobody answered, no
        volunteer this week): the next occurrence, if the schedule has one. Cancelled,
        or unable to fulfil because the need has gone: the series ends.
        """
        if a.series_id != self.id or a.status not in CLOSED or not self.is_open:
            return None
        if a.occurrence != self.made:
            return None  # an older occurrence (the newest is already open): nothing more to open
        if a.status is Status.CANCELLED:
            self.end(reason="cancelled", at=at)
            return None
        if a.status is Status.PASSED_ON or (
            a.status is Status.UNABLE_TO_FULFIL and a.outcome in SERIES_ENDING_OUTCOMES
        ):
            self.end(reason=f"{a.status}: {a.outcome}" if a.outcome else str(a.status), at=at)
            return None
        following = self.next_occurrence()
        if following is None:
            self.end(reason="completed", at=at)
            return None
        self.made = following
        return following

    def open_occurrence(
        self, occurrence: int, *, after: Assignment, placement: Placement, id: str, at: datetime
    ) -> tuple[Assignment, Change]:
        """Occurrence `occurrence`, for the hub that closed the one before, with deadlines from the schedule.

        It reaches the hub now (`routed_at`), but its SLA counts from its place in the
        schedule: opened early (last week's shop done on day 2), it is not due any
        sooner; opened late, it is as overdue as the schedule says.
        """
        if placement.status is not Status.ROUTED:
            raise ValueError("an occurrence is opened in a hub")
        a, change = Assignment.open(
            id=id,
            request_id=occurrence_request_id(self.id, occurrence),
            referral_id=after.referral_id,
            request_type=after.request_type,
            urgency=after.urgency,
            received_at=at,  # an occurrence comes in when it opens: reporting counts it on that day
            placement=replace(
                placement, reason=f"{self.label(occurrence)}: the same hub as occurrence {occurrence - 1}"
            ),
            at=at,
            series_id=self.id,
            occurrence=occurrence,
        )
        sla = sla_for(a.urgency, placement.sla)
        scheduled = self.scheduled_at(occurrence)
        a.accept_due_at, a.fulfil_due_at = scheduled + sla.accept, scheduled + sla.fulfil
        return a, change
