"""Contracts published by the actions service: recovery-plan actions, for reporting.

No personal data: ids, cells, themes, priorities, timescales, statuses, ratings,
dates and the public organisations the plan names. Never the named leads,
narratives or who made a change.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import ClassVar

from shared.events import TYPE_PREFIX, EventData, contract

__all__ = [
    "ActionCreatedV1",
    "ActionRevisedV1",
    "ActionStatusChangedV1",
    "ActionRagChangedV1",
    "ActionProgressUpdatedV1",
    "ActionDueDateChangedV1",
    "ActionRatedV1",
    "ActionUpdateRecordedV1",
]


class ActionEvent(EventData):
    """What every action event carries: the action as it stands after the change.

    A reporting projection can take any one event as the whole current state of
    the action, so it never depends on having seen the events before it.
    """

    topics: ClassVar[tuple[str, ...]] = ("actions",)

    action_id: uuid.UUID
    plan: str
    """The plan's slug, e.g. `krf-recovery-2020`."""
    cell: str
    """The recovery cell's slug, e.g. `infrastructure`."""
    number: int
    """The action's number within its cell, as the plan numbers it."""
    theme: str | None = None
    """The Infrastructure cell's theme ("Transport"); none in the other cells."""
    kind: str
    """`mitigate`, `opportunity` or `both`."""
    priority: str
    """`essential`, `important` or `desirable`."""
    timescale: str
    """`short` (0–6 months), `medium` (6–12) or `longer` (12+)."""
    lead_organisations: list[str] = []
    status: str
    """`not-started`, `on-track`, `at-risk`, `off-track`, `blocked`, `complete` or `cancelled`."""
    rag: str | None = None
    """`red`, `amber`, `green`, or none before the first rating."""
    progress: int
    """Per cent complete, 0–100."""
    baseline_due_date: date
    """From the timescale band and the plan's start."""
    due_date: date
    """The agreed date where one was agreed, else the baseline."""

    def subject(self) -> str:
        return str(self.action_id)


@contract
class ActionCreatedV1(ActionEvent):
    """An action of the plan was imported for the first time."""

    type: ClassVar[str] = TYPE_PREFIX + "action.created.v1"

    created_at: datetime


@contract
class ActionRevisedV1(ActionEvent):
    """A re-import changed the plan's own columns of an action (its text, priority, timescale…)."""

    type: ClassVar[str] = TYPE_PREFIX + "action.revised.v1"

    changed: list[str]
    """The plan columns that changed, e.g. `["priority", "baseline_due_date"]`."""
    changed_at: datetime


@contract
class ActionStatusChangedV1(ActionEvent):
    """The delivery status of an action changed."""

    type: ClassVar[str] = TYPE_PREFIX + "action.status-changed.v1"

    previous_status: str
    changed_at: datetime


@contract
class ActionRagChangedV1(ActionEvent):
    """The RAG rating of an action changed (its narrative stays in the service)."""

    type: ClassVar[str] = TYPE_PREFIX + "action.rag-changed.v1"

    previous_rag: str | None = None
    changed_at: datetime


@contract
class ActionProgressUpdatedV1(ActionEvent):
    """The per cent complete of an action changed."""

    type: ClassVar[str] = TYPE_PREFIX + "action.progress-updated.v1"

    previous_progress: int
    changed_at: datetime


@contract
class ActionDueDateChangedV1(ActionEvent):
    """An agreed due date was set, moved or withdrawn (back to the baseline)."""

    type: ClassVar[str] = TYPE_PREFIX + "action.due-date-changed.v1"

    previous_due_date: date
    agreed_due_date: date | None = None
    slippage_days: int
    """Days the due date now lies after the baseline (negative: brought forward)."""
    changed_at: datetime


@contract
class ActionRatedV1(ActionEvent):
    """A delivery-confidence rating was given: the lead's own, or the independent one."""

    type: ClassVar[str] = TYPE_PREFIX + "action.rated.v1"

    rating: str
    """`self` or `independent`."""
    previous_value: str | None = None
    value: str | None = None
    """`green`, `amber-green`, `amber`, `amber-red` or `red`."""
    changed_at: datetime


@contract
class ActionUpdateRecordedV1(ActionEvent):
    """A dated progress update was written for an action (its words stay in the service)."""

    type: ClassVar[str] = TYPE_PREFIX + "action.update-recorded.v1"

    update_on: date
    """The date the update speaks for."""
    recorded_at: datetime
