"""Request and response bodies of the actions API."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from shared.schemas import Patch, Strict

Status = Literal["not-started", "on-track", "at-risk", "off-track", "blocked", "complete", "cancelled"]
Rag = Literal["red", "amber", "green"]
Confidence = Literal["green", "amber-green", "amber", "amber-red", "red"]
Priority = Literal["essential", "important", "desirable"]
Timescale = Literal["short", "medium", "longer"]
Kind = Literal["mitigate", "opportunity", "both"]
PlanSlug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,59}$")]
Narrative = Annotated[str, Field(min_length=1, max_length=4000)]
Commentary = Annotated[str, Field(max_length=4000)]


def _not_far_off(value: date | None) -> date | None:
    if value is not None and value.year > 2100:
        raise ValueError("is too far ahead")
    return value


class ActionPatch(Patch):
    """Only the fields given change. Each change is kept in the action's history."""

    nullable = frozenset(
        {
            "blocked_reason",
            "rag",
            "rag_narrative",
            "self_rating",
            "self_rating_commentary",
            "independent_rating",
            "independent_rating_commentary",
            "agreed_due_date",
            "note",
            "version",
        }
    )

    status: Status | None = None
    blocked_reason: Commentary | None = None
    """Required to block an action; cleared when it is unblocked."""
    rag: Rag | None = None
    rag_narrative: Commentary | None = None
    """Required with every RAG rating: why it is red, amber or green."""
    self_rating: Confidence | None = None
    """The action lead's own delivery confidence."""
    self_rating_commentary: Commentary | None = None
    independent_rating: Confidence | None = None
    """Delivery confidence as assessed independently (administrators only)."""
    independent_rating_commentary: Commentary | None = None
    progress: Annotated[int, Field(ge=0, le=100)] | None = None
    agreed_due_date: date | None = None
    """Overrides the due date derived from the timescale band; null goes back to it."""
    note: Commentary | None = None
    """Why, kept with the change in the history."""
    version: int | None = None
    """The version you read: if the action has changed since, nothing changes and the answer is 409."""

    _not_far_off = field_validator("agreed_due_date")(_not_far_off)

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class ProgressUpdateIn(Strict):
    narrative: Narrative
    """What has happened since the last update."""
    on: date | None = None
    """The date the update speaks for; today if not given."""

    @field_validator("on")
    @classmethod
    def _not_in_future(cls, value: date | None) -> date | None:
        if value is not None and value > datetime.now(UTC).date() + timedelta(days=1):
            raise ValueError("is in the future")
        return value


class LinkIn(Strict):
    """A dependency on another action of the same plan: by its id, or by its cell and number."""

    to: Annotated[str, Field(max_length=36)] | None = None
    cell: Annotated[str, Field(max_length=60)] | None = None
    number: Annotated[int, Field(ge=1)] | None = None
    note: Commentary | None = None

    @model_validator(mode="after")
    def _one_way_to_name_it(self) -> LinkIn:
        if self.to is None and (self.cell is None or self.number is None):
            raise ValueError("give `to` (an action id), or `cell` and `number`")
        if self.to is not None and (self.cell is not None or self.number is not None):
            raise ValueError("give `to`, or `cell` and `number`, not both")
        return self


class PlanPatch(Patch):
    title: Annotated[str, Field(min_length=1, max_length=300)] | None = None
    starts_on: date | None = None
    """Moving the start moves every action's baseline due date with it (agreed dates stay)."""


# --- out ------------------------------------------------------------------------------------


class LinkOut(BaseModel):
    id: int
    action_id: str
    """The action at the other end."""
    cell: str
    cell_name: str
    number: int
    title: str
    status: str
    source: Literal["plan", "manual"]
    """plan: a cross reference in the plan's text; manual: added through the API."""
    note: str | None = None


class HistoryEntry(BaseModel):
    at: datetime
    by: str
    by_role: str
    kind: Literal["created", "revised", "changed", "update", "linked", "unlinked"]
    field: str | None = None
    old: Any = None
    new: Any = None
    narrative: str | None = None
    update_on: date | None = None


class LatestUpdate(BaseModel):
    on: date
    narrative: str
    at: datetime


class ActionView(BaseModel):
    """An action as a list shows it."""

    id: str
    plan: str
    cell: str
    cell_name: str
    number: int
    theme: str | None = None
    title: str
    description: str
    ongoing: bool
    kind: Kind
    kind_text: str
    """As the plan words it, e.g. 'Mitigate / Opportunity'."""
    priority: Priority
    timescale: Timescale
    timescale_text: str
    lead_organisations: list[str]
    lead_organisation_text: str
    named_leads: list[str]
    named_lead_text: str
    resources: str
    status: Status
    blocked_reason: str | None = None
    rag: Rag | None = None
    rag_narrative: str | None = None
    self_rating: Confidence | None = None
    self_rating_commentary: str | None = None
    independent_rating: Confidence | None = None
    independent_rating_commentary: str | None = None
    progress: int
    baseline_due_date: date
    """When the action's timescale band ends, counted from the plan's start."""
    agreed_due_date: date | None = None
    due_date: date
    slippage_days: int
    """Days the due date lies after the baseline (negative: brought forward)."""
    overdue: bool
    days_overdue: int
    completed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    version: int
    links_to: list[LinkOut] = []
    """Actions this one depends on or refers to."""
    linked_from: list[LinkOut] = []
    """Actions that depend on or refer to this one."""
    latest_update: LatestUpdate | None = None


class ActionOut(ActionView):
    """One action, with its whole history."""

    history: list[HistoryEntry] = []
    """Every change, oldest first: who, when, the field, old and new, and why."""


class ActionList(BaseModel):
    count: int
    actions: list[ActionView]


class RowReport(BaseModel):
    row: int
    """The line of the plan's text, or the row of the spreadsheet, the action is on."""
    cell: str | None = None
    number: int | None = None
    outcome: Literal["created", "updated", "unchanged", "rejected"]
    action_id: str | None = None
    changed: list[str] = []
    reason: str | None = None


class ImportCounts(BaseModel):
    created: int
    updated: int
    unchanged: int
    rejected: int


class LinkReport(BaseModel):
    created: int
    removed: int
    unresolved: list[str]
    """Cross references to actions that are not in the plan, e.g. 'economy 1 -> infrastructure 99'."""


class ImportReport(BaseModel):
    plan: str
    filename: str | None = None
    format: Literal["plan-text", "csv", "xlsx"]
    dry_run: bool
    applied: bool
    counts: ImportCounts
    rows: list[RowReport]
    links: LinkReport
    not_in_file: int
    """Actions of the plan that the file does not mention: left as they are."""
    rebaselined: int
    """Actions outside the file whose baseline moved with the plan's start."""


class CellOut(BaseModel):
    slug: str
    name: str
    actions: int


class PlanOut(BaseModel):
    slug: str
    title: str
    starts_on: date
    action_count: int
    cells: list[CellOut]
    created_at: datetime
    updated_at: datetime


class SnapshotAction(BaseModel):
    id: str
    cell: str
    cell_name: str
    number: int
    theme: str | None = None
    title: str
    kind: Kind
    priority: Priority
    timescale: Timescale
    lead_organisations: list[str]
    status: Status
    blocked_reason: str | None = None
    rag: Rag | None = None
    rag_narrative: str | None = None
    self_rating: Confidence | None = None
    independent_rating: Confidence | None = None
    progress: int
    baseline_due_date: date
    agreed_due_date: date | None = None
    due_date: date
    slippage_days: int
    overdue: bool
    days_overdue: int
    latest_update: LatestUpdate | None = None


class Snapshot(BaseModel):
    plan: str
    as_at: datetime
    """The instant the snapshot reconstructs: the end of the day asked for, in Kent."""
    count: int
    by_status: dict[str, int]
    by_rag: dict[str, int]
    overdue: int
    actions: list[SnapshotAction]


class TrackingCellChange(BaseModel):
    column: str
    """The export's heading, e.g. 'RAG'."""
    field: str
    """The API's name for it, e.g. 'rag'."""
    old: Any = None
    new: Any = None
    narrative: str | None = None
    """Kept with the change in the action's history: the RAG's narrative, a block's reason, or where it came from."""


class TrackingCellError(BaseModel):
    column: str
    reason: str


class TrackingRowReport(BaseModel):
    row: int
    """The spreadsheet's row (the heading row is 1)."""
    action_id: str | None = None
    cell: str | None = None
    number: int | None = None
    outcome: Literal["changed", "unchanged", "rejected"]
    changes: list[TrackingCellChange] = []
    errors: list[TrackingCellError] = []


class TrackingCounts(BaseModel):
    changed: int
    unchanged: int
    rejected: int
    cells_changed: int


class TrackingImportReport(BaseModel):
    filename: str | None = None
    format: Literal["csv", "xlsx"]
    dry_run: bool
    applied: bool
    """True when the changes were written (not a dry run, and something changed)."""
    counts: TrackingCounts
    rows: list[TrackingRowReport]


class Rollup(BaseModel):
    actions: int
    complete: int
    overdue: int
    progress: float | None = None
    """The mean progress (%) of the actions, cancelled ones left out; null when none is left."""
    by_status: dict[str, int]
    by_rag: dict[str, int]
    """red, amber, green, and none (not rated yet)."""


class ThemeProgress(Rollup):
    name: str
    slug: str


class CellProgress(Rollup):
    slug: str
    name: str
    themes: list[ThemeProgress] = []
    """The cell's themes, where its actions have them (the Infrastructure cell's do)."""


class PlanProgress(Rollup):
    """A plan's progress for anyone to read: figures only, nothing a person wrote, no one's name."""

    plan: str
    title: str
    starts_on: date
    last_updated: datetime | None = None
    cells: list[CellProgress]
