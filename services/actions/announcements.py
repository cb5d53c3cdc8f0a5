"""What the actions service says on the bus: every action event, from an action's row."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select

from services.actions import domain
from services.actions.models import actions
from shared.events import (
    ActionDueDateChangedV1,
    ActionProgressUpdatedV1,
    ActionRagChangedV1,
    ActionRatedV1,
    ActionRevisedV1,
    ActionStatusChangedV1,
    EventData,
)
from shared.uow import UnitOfWork


def event_state(row: Mapping) -> dict:
    """The fields every action event carries: no named leads, no narratives."""
    return {
        "action_id": row["id"],
        "plan": row["plan"],
        "cell": row["cell"],
        "number": row["number"],
        "theme": row["theme"],
        "kind": row["kind"],
        "priority": row["priority"],
        "timescale": row["timescale"],
        "lead_organisations": list(row["lead_organisations"]),
        "status": row["status"],
        "rag": row["rag"],
        "progress": row["progress"],
        "baseline_due_date": row["baseline_due_date"],
        "due_date": domain.due_date(baseline=row["baseline_due_date"], agreed=row["agreed_due_date"]),
    }


def publish_tracking(uow: UnitOfWork, row: Mapping, changes: list[domain.FieldChange], *, now: datetime) -> None:
    state = event_state(row)
    for change in changes:
        event: EventData | None = None
        if change.field == "status":
            event = ActionStatusChangedV1(**state, previous_status=change.old, changed_at=now)
        elif change.field == "rag":
            event = ActionRagChangedV1(**state, previous_rag=change.old, changed_at=now)
        elif change.field == "progress":
            event = ActionProgressUpdatedV1(**state, previous_progress=change.old, changed_at=now)
        elif change.field == "agreed_due_date":
            baseline = row["baseline_due_date"]
            event = ActionDueDateChangedV1(
                **state,
                previous_due_date=domain.due_date(baseline=baseline, agreed=change.old),
                agreed_due_date=change.new,
                slippage_days=domain.slippage_days(baseline=baseline, agreed=change.new),
                changed_at=now,
            )
        elif change.field in ("self_rating", "independent_rating"):
            event = ActionRatedV1(
                **state,
                rating=change.field.removesuffix("_rating"),
                previous_value=change.old,
                value=change.new,
                changed_at=now,
            )
        if event is not None:
            uow.publish(event)


async def publish_state_page(
    uow: UnitOfWork, after: str | None, limit: int, *, topics: object = None
) -> tuple[str | None, int]:
    """`kent-together republish actions`: each action as it is now (an `action.revised` changing nothing, dated
    by its last change), in id order after `after`; returns the last id and how many.

    Every action event goes where its contract says (`topics` is the spec's, unused here)."""
    query = select(actions).order_by(actions.c.id).limit(limit)
    if after is not None:
        query = query.where(actions.c.id > after)
    rows = (await uow.session.execute(query)).mappings().all()
    for row in rows:
        uow.publish(ActionRevisedV1(**event_state(row), changed=[], changed_at=row["updated_at"]))
    return (rows[-1]["id"] if rows else after), len(rows)
