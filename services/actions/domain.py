"""The rules of recovery-plan actions: due dates, tracking changes, the plan's own columns. No I/O."""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.actions.plan_file import ParsedAction
from shared.errors import Forbidden, InvalidTransition, ValidationFailed

DEFAULT_PLAN = "krf-recovery-2020"
DEFAULT_PLAN_TITLE = "KRF COVID-19 Recovery Strategy: Recovery Cell Action Plans"
DEFAULT_PLAN_START = date(2020, 7, 1)
"""The recovery cells' plans were agreed in summer 2020; the plan does not state a start date."""

NOT_STARTED, ON_TRACK, AT_RISK, OFF_TRACK, BLOCKED, COMPLETE, CANCELLED = (
    "not-started",
    "on-track",
    "at-risk",
    "off-track",
    "blocked",
    "complete",
    "cancelled",
)
STATUSES = (NOT_STARTED, ON_TRACK, AT_RISK, OFF_TRACK, BLOCKED, COMPLETE, CANCELLED)
CLOSED = frozenset({COMPLETE, CANCELLED})
RAGS = ("red", "amber", "green")
DELIVERY_CONFIDENCE = ("green", "amber-green", "amber", "amber-red", "red")
"""The five-point delivery-confidence scale of the Government Major Projects Portfolio."""
PRIORITIES = ("essential", "important", "desirable")
KINDS = ("mitigate", "opportunity", "both")
TIMESCALES = ("short", "medium", "longer")

BAND_MONTHS = {"short": 6, "medium": 12, "longer": 24}
"""When each timescale band ends, in months from the plan's start.

The plan's bands are Short 0–6 months, Medium 6–12 and Longer 12+: an action is
due when its band ends. "12+" has no end, so Longer Term actions are due at 24
months, the two-year horizon of the recovery strategy; an agreed date overrides
any of them.
"""

KENT = ZoneInfo("Europe/London")


def add_months(day: date, months: int) -> date:
    """The same day `months` later; the month's last day where it is shorter (31 Aug + 6 = 28 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def baseline_due_date(*, starts_on: date, timescale: str) -> date:
    return add_months(starts_on, BAND_MONTHS[timescale])


def due_date(*, baseline: date, agreed: date | None) -> date:
    return agreed or baseline


def slippage_days(*, baseline: date, agreed: date | None) -> int:
    """How far the due date has moved from the baseline: positive is later, negative earlier."""
    return (agreed - baseline).days if agreed else 0


def is_overdue(*, due: date, status: str, today: date) -> bool:
    return due < today and status not in CLOSED


def days_overdue(*, due: date, status: str, today: date) -> int:
    return (today - due).days if is_overdue(due=due, status=status, today=today) else 0


def today_in_kent(now: datetime) -> date:
    return now.astimezone(KENT).date()


def end_of_day_in_kent(day: date) -> datetime:
    """The instant a day ends in Kent (midnight at the start of the next), in UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=KENT).astimezone(UTC)


def slug(text: str) -> str:
    """'Digital and ICT Infrastructure' -> 'digital-and-ict-infrastructure'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("&", " and ")).strip("-")


# --- the plan's own columns ---------------------------------------------------------------

PLAN_COLUMNS = (
    "theme",
    "title",
    "description",
    "ongoing",
    "kind",
    "kind_text",
    "priority",
    "timescale",
    "timescale_text",
    "lead_organisations",
    "lead_organisation_text",
    "named_leads",
    "named_lead_text",
    "resources",
    "cross_references",
    "baseline_due_date",
)
"""What an import may write. Everything else on an action is tracking, and an import never touches it."""


def plan_columns(action: ParsedAction, *, starts_on: date) -> dict[str, Any]:
    """An action's plan columns as stored, from the plan's row."""
    return {
        "theme": action.theme,
        "title": action.title,
        "description": action.description,
        "ongoing": action.ongoing,
        "kind": action.kind,
        "kind_text": action.kind_text,
        "priority": action.priority.lower(),
        "timescale": action.timescale,
        "timescale_text": action.timescale_text,
        "lead_organisations": list(action.lead_organisations),
        "lead_organisation_text": action.lead_organisation_text,
        "named_leads": list(action.named_leads),
        "named_lead_text": action.named_lead_text,
        "resources": action.resources,
        "cross_references": [[ref.cell, ref.number] for ref in action.cross_references],
        "baseline_due_date": baseline_due_date(starts_on=starts_on, timescale=action.timescale),
    }


def changed_plan_columns(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """The plan columns whose value in the file differs from the stored one."""
    return [column for column in PLAN_COLUMNS if _comparable(stored[column]) != _comparable(given[column])]


def _comparable(value: Any) -> Any:
    # JSON columns come back as lists of lists; the file gives tuples.
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    return value


# --- tracking -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    """One field of an action changed: kept in its history, and the source of its events."""

    field: str
    old: Any
    new: Any
    narrative: str | None = None


TRACKED_FIELDS = (
    "status",
    "blocked_reason",
    "rag",
    "rag_narrative",
    "self_rating",
    "self_rating_commentary",
    "independent_rating",
    "independent_rating_commentary",
    "progress",
    "agreed_due_date",
)
DATE_FIELDS = frozenset({"agreed_due_date", "baseline_due_date"})


def tracking_changes(
    current: Mapping[str, Any],
    given: Mapping[str, Any],
    *,
    plan_starts_on: date,
    may_rate_independently: bool,
) -> list[FieldChange]:
    """The changes a recovery lead asks for, checked against the rules; only what really changes.

    `given` holds only the fields the caller sent (None clears a field where that
    is allowed). Raises ValidationFailed naming every field that breaks a rule,
    InvalidTransition for a status change the lifecycle forbids, and Forbidden
    for an independent rating given by someone who is not independent.
    """
    errors: list[dict[str, str]] = []
    note = given.get("note")
    new = {name: current[name] for name in TRACKED_FIELDS}
    for name in TRACKED_FIELDS:
        if name in given:
            new[name] = given[name]

    if ("independent_rating" in given or "independent_rating_commentary" in given) and not may_rate_independently:
        raise Forbidden("the independent rating is given by an administrator (actions:admin), not the action's lead")

    for name in ("status", "progress"):
        if name in given and given[name] is None:
            errors.append({"field": name, "reason": "cannot be empty"})

    status = new["status"]
    if "status" in given and given["status"] is not None:
        if status == NOT_STARTED and current["status"] != NOT_STARTED:
            raise InvalidTransition(f"the action is {current['status']}: once started it cannot be not-started again")
        if status == BLOCKED and current["status"] != BLOCKED and not given.get("blocked_reason"):
            errors.append({"field": "blocked_reason", "reason": "is required when the status is blocked"})
        if status == COMPLETE and current["status"] != COMPLETE:
            if "progress" in given and given["progress"] is not None and given["progress"] != 100:
                errors.append({"field": "progress", "reason": "must be 100 when the action is complete"})
            elif "progress" not in given:
                new["progress"] = 100  # completing an action completes its progress
    if status != BLOCKED:
        if given.get("blocked_reason"):
            errors.append({"field": "blocked_reason", "reason": "is only kept while the status is blocked"})
        new["blocked_reason"] = None  # unblocked: the reason is history now
    elif "blocked_reason" in given and not given["blocked_reason"]:
        errors.append({"field": "blocked_reason", "reason": "cannot be empty while the action is blocked"})

    if "rag" in given:
        if given["rag"] is None:
            errors.append({"field": "rag", "reason": "cannot be withdrawn; give red, amber or green"})
        elif not given.get("rag_narrative"):
            errors.append(
                {"field": "rag_narrative", "reason": "is required with a RAG rating: say why it is " + given["rag"]}
            )
    elif "rag_narrative" in given:
        if current["rag"] is None:
            errors.append({"field": "rag_narrative", "reason": "needs a RAG rating to explain: give rag too"})
        elif not given["rag_narrative"]:
            errors.append({"field": "rag_narrative", "reason": "cannot be empty while the action has a RAG rating"})

    for rating in ("self_rating", "independent_rating"):
        commentary = f"{rating}_commentary"
        if commentary in given and given[commentary] and new[rating] is None:
            errors.append({"field": commentary, "reason": f"needs a {rating.replace('_', ' ')} to comment on"})
        if rating in given and given[rating] is None and commentary not in given:
            new[commentary] = None

    agreed = given.get("agreed_due_date")
    if agreed is not None and agreed < plan_starts_on:
        errors.append(
            {"field": "agreed_due_date", "reason": f"is before the plan starts ({plan_starts_on.isoformat()})"}
        )

    if errors:
        raise ValidationFailed(errors)

    narratives = {
        "rag": new["rag_narrative"],
        "status": new["blocked_reason"] if status == BLOCKED else note,
    }
    return [
        FieldChange(name, current[name], new[name], narratives.get(name, note))
        for name in TRACKED_FIELDS
        if new[name] != current[name]
    ]


def completed_at_after(changes: list[FieldChange], *, current: datetime | None, now: datetime) -> datetime | None:
    """When the action was completed: set as it completes, cleared if it is reopened."""
    for change in changes:
        if change.field == "status":
            return now if change.new == COMPLETE else None
    return current


# --- links --------------------------------------------------------------------------------


def check_link(*, from_action: Mapping[str, Any], to_action: Mapping[str, Any]) -> None:
    if from_action["id"] == to_action["id"]:
        raise ValidationFailed([{"field": "to", "reason": "an action cannot be linked to itself"}])
    if from_action["plan"] != to_action["plan"]:
        raise ValidationFailed(
            [
                {
                    "field": "to",
                    "reason": f"is in plan {to_action['plan']!r}; links stay within one plan ({from_action['plan']!r})",
                }
            ]
        )


# --- an action as at a date ---------------------------------------------------------------


def state_as_at(current: Mapping[str, Any], later_changes: list[Mapping[str, Any]]) -> dict[str, Any]:
    """An action as it stood before `later_changes` (its history after the date, newest first)."""
    state = dict(current)
    for change in later_changes:
        name = change["field"]
        if name in state:
            state[name] = from_history(name, change["old"])
    return state


def to_history(value: Any) -> Any:
    """A field's value as kept in the history (JSON)."""
    return value.isoformat() if isinstance(value, date) else value


def from_history(name: str, value: Any) -> Any:
    if name in DATE_FIELDS and value is not None:
        return date.fromisoformat(value)
    return value


# --- tracking from a spreadsheet ----------------------------------------------------------


def tracking_state_problems(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, reason) for each way a row's whole tracking breaks the rules.

    A spreadsheet row states the action's tracking as it should be, not a change:
    it must hold together on its own, so that importing it twice reads the same.
    """
    problems = []
    if state.get("status") is None:
        problems.append(("status", "cannot be empty: give one of " + ", ".join(STATUSES)))
    if state.get("progress") is None:
        problems.append(("progress", "cannot be empty: give a whole number from 0 to 100"))
    if state.get("status") == BLOCKED and not state.get("blocked_reason"):
        problems.append(("blocked_reason", "is required when the status is blocked"))
    if state.get("status") != BLOCKED and state.get("blocked_reason"):
        problems.append(("blocked_reason", "is only kept while the status is blocked: clear the cell"))
    if state.get("status") == COMPLETE and state.get("progress") not in (None, 100):
        problems.append(("progress", "must be 100 when the action is complete"))
    if state.get("rag") and not state.get("rag_narrative"):
        problems.append(("rag_narrative", f"is required with a RAG rating: say why it is {state['rag']}"))
    if state.get("rag_narrative") and not state.get("rag"):
        problems.append(("rag_narrative", "needs a RAG rating to explain: give the RAG too"))
    for rating in ("self_rating", "independent_rating"):
        if state.get(f"{rating}_commentary") and not state.get(rating):
            problems.append((f"{rating}_commentary", f"needs a {rating.replace('_', ' ')} to comment on"))
    return problems


def same_tracking(stored: Any, given: Any) -> bool:
    """A spreadsheet cell says the same as the stored value: text compared without the spaces around it."""
    if isinstance(stored, str) and isinstance(given, str):
        return stored.strip().replace("\r\n", "\n") == given.strip()
    same: bool = stored == given
    return same


# --- progress rolled up -------------------------------------------------------------------


def rollup(rows: Sequence[Any], *, today: date) -> dict[str, Any]:
    """Figures for a group of actions: how many, by status and RAG, overdue, and their progress.

    `progress` is the mean of the actions' progress, cancelled actions left out (they will never
    be delivered, and counting them at 0% or 100% would both mislead); None when none is left.
    """
    by_status = {status: 0 for status in STATUSES}
    by_rag = {rag: 0 for rag in (*RAGS, "none")}
    overdue, counted = 0, []
    for row in rows:
        by_status[row.status] += 1
        by_rag[row.rag or "none"] += 1
        due = due_date(baseline=row.baseline_due_date, agreed=row.agreed_due_date)
        overdue += is_overdue(due=due, status=row.status, today=today)
        if row.status != CANCELLED:
            counted.append(row.progress)
    return {
        "actions": len(rows),
        "complete": by_status[COMPLETE],
        "overdue": overdue,
        "progress": round(sum(counted) / len(counted), 1) if counted else None,
        "by_status": by_status,
        "by_rag": by_rag,
    }
