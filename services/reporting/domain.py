"""The rules of reporting: how events fold into a request's facts, and facts into counts. No I/O.

A request's facts come from two topics that do not wait for each other: the
referrals service's `request.received` (type, channel, when) and fulfilment's
status events (district, hub, status, times). Each event fills what it knows,
in any order; a later status change never loses to an earlier one.

Every fact contributes +1 to a handful of count keys (day, district, dimension,
value), for its own district and for `*` (all districts). When a fact changes,
the projection subtracts its old keys and adds its new ones, so counts always
equal the facts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.kent import KENT_DISTRICTS as KENT_DISTRICT_TABLE

if TYPE_CHECKING:
    from shared.events import AssignmentEscalatedV1, AssignmentStatusChangedV1, RequestCancelledV1, RequestReceivedV1

ALL_DISTRICTS = "*"
UNKNOWN = "unknown"
OUT_OF_AREA = "out-of-area"

# ONS district codes of the 12 Kent hubs (the public ids are the slugs): shared/kent.py's table.
KENT_DISTRICTS: dict[str, str] = {district.code: district.slug for district in KENT_DISTRICT_TABLE}
DISTRICTS = (*sorted(KENT_DISTRICTS.values()), OUT_OF_AREA, UNKNOWN)

RECEIVED = "received"
"""Known to referrals, not yet placed by fulfilment."""
CLOSED = frozenset({"fulfilled", "unable_to_fulfil", "cancelled", "passed_on"})
STATUSES = (
    RECEIVED,
    "triage",
    "out_of_area",
    "routed",
    "accepted",
    "in_progress",
    "rejected",
    "fulfilled",
    "unable_to_fulfil",
    "cancelled",
    "passed_on",
)

# The dimensions counted for each request; `group_by` names map onto them.
DIMENSIONS = ("type", "channel", "status", "hub", "urgency", "queue", "breach", "recurring", "series")
SERIES_DIMENSION, RECURRING_DIMENSION = "series", "recurring"
"""A recurring request's facts add, by frequency: `recurring` once per occurrence, `series` once per series
(its first occurrence). Every other dimension counts occurrences as requests."""
REFERRAL_DIMENSION = "referral"
FREQUENCIES = ("weekly", "fortnightly", "monthly")


def district_of(district_code: str | None, *, status: str | None = None) -> str:
    """The public district id: a Kent hub's slug, `out-of-area`, or `unknown`."""
    if district_code in KENT_DISTRICTS:
        return KENT_DISTRICTS[district_code]
    if status in ("out_of_area", "passed_on") or district_code:
        return OUT_OF_AREA
    return UNKNOWN


def new_request_fact(request_id: str, referral_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "referral_id": referral_id,
        "request_type": None,
        "channel": None,
        "urgency": None,
        "postcode_district": None,
        "district": UNKNOWN,
        "district_code": None,
        "hub": None,
        "status": RECEIVED,
        "outcome": None,
        "cancel_reason": None,
        "council_code": None,
        "possible_duplicate": False,
        "out_of_area": False,
        "triaged": False,
        "accept_breached": False,
        "fulfil_breached": False,
        "received_at": None,
        "received_day": None,
        "routed_at": None,
        "accepted_at": None,
        "closed_at": None,
        "accept_due_at": None,
        "fulfil_due_at": None,
        "status_changed_at": None,
        "series_id": None,
        "occurrence": None,
        "frequency": None,
    }


def new_referral_fact(referral_id: str) -> dict[str, Any]:
    return {"referral_id": referral_id, "channel": None, "district": UNKNOWN, "received_at": None, "received_day": None}


def _received(fact: dict[str, Any], received_at: datetime) -> None:
    fact["received_at"] = received_at
    fact["received_day"] = received_at.date()


def apply_request_received(fact: dict[str, Any], data: RequestReceivedV1) -> None:
    """`request.received`: what the referral said; never moves the status back."""
    fact.update(
        request_type=data.request_type,
        channel=data.channel,
        urgency=data.urgency,
        postcode_district=data.postcode_district[:4],
        possible_duplicate=data.possible_duplicate,
    )
    _received(fact, data.received_at)


def apply_request_cancelled(fact: dict[str, Any], data: RequestCancelledV1) -> None:
    """`request.cancelled` from referrals: closes an open request (fulfilment says so too, later or earlier)."""
    fact["request_type"] = fact["request_type"] or data.request_type
    fact["cancel_reason"] = data.reason
    if fact["status"] not in CLOSED:
        fact["status"] = "cancelled"
        fact["closed_at"] = data.cancelled_at
        fact["status_changed_at"] = data.cancelled_at


def apply_status_changed(fact: dict[str, Any], data: AssignmentStatusChangedV1) -> None:
    """An assignment status event: the latest change (by its time) sets status, place and times."""
    fact["request_type"] = fact["request_type"] or data.request_type
    fact["urgency"] = fact["urgency"] or data.urgency
    fact["channel"] = fact["channel"] or data.channel
    if data.series_id is not None:
        fact["series_id"], fact["occurrence"] = str(data.series_id), data.occurrence
        fact["frequency"] = fact["frequency"] or data.frequency
    if fact["received_at"] is None:
        _received(fact, data.received_at)
    if data.status == "out_of_area":
        fact["out_of_area"] = True
    if data.status == "triage":
        fact["triaged"] = True
    if fact["district"] == UNKNOWN and (data.district_code or data.status in ("out_of_area", "passed_on")):
        fact["district_code"] = data.district_code
        fact["district"] = district_of(data.district_code, status=data.status)
    if fact["hub"] is None and data.hub:
        fact["hub"] = data.hub
    for name in ("routed_at", "accepted_at", "closed_at"):  # history: the first time it happened
        value = getattr(data, name)
        if value is not None and fact[name] is None:
            fact[name] = value
    previous = fact["status_changed_at"]
    if previous is not None and data.changed_at < previous:
        return  # an older change arriving late: what it adds above still counts
    if fact["status"] == "cancelled" and data.status != "cancelled" and fact["cancel_reason"]:
        return  # the resident cancelled; fulfilment's own word of it is on its way
    fact["status"] = data.status
    fact["status_changed_at"] = data.changed_at
    if data.status == "rejected":
        return  # a step, not a resting place: the re-routing that follows carries the place
    fact["hub"] = data.hub
    if data.district_code is not None or data.status in ("out_of_area", "passed_on"):
        fact["district_code"] = data.district_code
        fact["district"] = district_of(data.district_code, status=data.status)
    if data.council_code:
        fact["council_code"] = data.council_code
    if data.outcome:
        fact["outcome"] = data.outcome
    for name in ("accept_due_at", "fulfil_due_at"):
        value = getattr(data, name)
        if value is not None:
            fact[name] = value


def apply_escalated(fact: dict[str, Any], data: AssignmentEscalatedV1) -> None:
    """An SLA breach: the deadline missed stays counted, whatever happens next."""
    fact["request_type"] = fact["request_type"] or data.request_type
    fact["urgency"] = fact["urgency"] or data.urgency
    fact[f"{'accept' if data.deadline == 'accept' else 'fulfil'}_breached"] = True
    if fact["district"] == UNKNOWN and data.district_code:
        fact["district_code"] = data.district_code
        fact["district"] = district_of(data.district_code)


def request_keys(fact: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    """The count keys (day, district, dimension, value) this request adds 1 to."""
    if fact is None or fact.get("received_day") is None:
        return []
    values = [
        ("type", fact["request_type"] or UNKNOWN),
        ("channel", fact["channel"] or UNKNOWN),
        ("status", fact["status"]),
        ("hub", fact["hub"] or "none"),
        ("urgency", fact["urgency"] or UNKNOWN),
    ]
    if fact["out_of_area"]:
        values.append(("queue", "out_of_area"))
    if fact["triaged"]:
        values.append(("queue", "triage"))
    if fact["accept_breached"]:
        values.append(("breach", "accept"))
    if fact["fulfil_breached"]:
        values.append(("breach", "fulfil"))
    if fact.get("series_id"):
        frequency = fact.get("frequency") or UNKNOWN
        values.append((RECURRING_DIMENSION, frequency))
        if fact.get("occurrence") == 1:
            values.append((SERIES_DIMENSION, frequency))
    day = fact["received_day"]
    return [
        (day, district, dimension, value)
        for district in (fact["district"], ALL_DISTRICTS)
        for dimension, value in values
    ]


def referral_keys(fact: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    """A referral counts once, by its channel, on the day it came in."""
    if fact is None or fact.get("received_day") is None:
        return []
    return [
        (fact["received_day"], district, REFERRAL_DIMENSION, fact["channel"] or UNKNOWN)
        for district in (fact["district"], ALL_DISTRICTS)
    ]


def count_changes(
    before: Iterable[tuple[Any, ...]], after: Iterable[tuple[Any, ...]], into: Counter[tuple[Any, ...]]
) -> None:
    """Add the difference between a fact's old and new keys to `into`."""
    for key in before:
        into[key] -= 1
    for key in after:
        into[key] += 1


# Figures


def week_of(day: date) -> date:
    """The Monday starting the ISO week `day` is in."""
    return day - timedelta(days=day.weekday())


def shares(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's share of the total (0..1, 4 places); 0 when there is nothing."""
    total = sum(row["count"] for row in rows)
    for row in rows:
        row["share"] = round(row["count"] / total, 4) if total else 0.0
    return rows


SUPPRESSED = "<5"


def suppress(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Small-number suppression for published figures: counts 1–4 become "<5", their shares null."""
    for row in rows:
        for column in COUNT_COLUMNS:
            if isinstance(row.get(column), int) and 1 <= row[column] <= 4:
                row[column] = SUPPRESSED
                if column == "count" and "share" in row:
                    row["share"] = None
    return rows


COUNT_COLUMNS = ("count", "overdue_now", "series", "occurrences")
"""The columns of a figure that count people's requests: what suppression hides when small."""


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


BACKLOG_AGES = (
    (timedelta(days=1), "under 1 day"),
    (timedelta(days=3), "1-3 days"),
    (timedelta(days=7), "3-7 days"),
    (None, "7 days or more"),
)


def age_band(age: timedelta) -> str:
    for limit, label in BACKLOG_AGES:
        if limit is None or age < limit:
            return label
    raise AssertionError("unreachable")


ACTION_CLOSED = frozenset({"complete", "cancelled"})


def action_is_overdue(action: dict[str, Any], today: date) -> bool:
    return action["status"] not in ACTION_CLOSED and action["due_date"] < today


@dataclass(frozen=True)
class DateRange:
    """`from` inclusive, `to` exclusive: the shape Power BI's RangeStart/RangeEnd expect."""

    start: date | None = None
    end: date | None = None
