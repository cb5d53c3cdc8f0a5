"""Reading actions: one with its history, the filtered list, the export, and a plan as it stood on a day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, func, or_, select

from services.actions import domain, spreadsheet
from services.actions.models import action_updates, actions, cells
from services.actions.repository import action_view
from shared.errors import ValidationFailed
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class ActionFilters:
    plan: str | None = None
    cell: tuple[str, ...] = ()
    theme: str | None = None
    priority: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    rag: tuple[str, ...] = ()
    timescale: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    lead: str | None = None
    """Part of a lead organisation's or a named lead's name, any case."""
    overdue: bool | None = None

    def described(self) -> str:
        given = [f"{name}={value}" for name, value in vars(self).items() if value not in (None, ())]
        return ", ".join(given) or "none: every action"


async def get_action(uow: UnitOfWork, action_id: str) -> dict:
    async with uow:
        row = await uow.actions.get(action_id)
        [view] = await uow.actions.views([row])
        history = (
            (
                await uow.session.execute(
                    select(action_updates).where(action_updates.c.action_id == action_id).order_by(action_updates.c.id)
                )
            )
            .mappings()
            .all()
        )
        view["history"] = [
            {k: entry[k] for k in ("at", "by", "by_role", "kind", "field", "old", "new", "narrative", "update_on")}
            for entry in history
        ]
        return view


async def list_actions(uow: UnitOfWork, *, filters: ActionFilters) -> list[dict]:
    async with uow:
        await _check_cells(uow, filters)
        today = domain.today_in_kent(uow.now())
        query = (
            select(actions)
            .join(cells, and_(cells.c.plan == actions.c.plan, cells.c.slug == actions.c.cell))
            .order_by(actions.c.plan, cells.c.position, actions.c.number)
        )
        for condition in _conditions(filters, today=today):
            query = query.where(condition)
        rows = (await uow.session.execute(query)).mappings().all()
        return await uow.actions.views(rows)


async def _check_cells(uow: UnitOfWork, filters: ActionFilters) -> None:
    """A cell filter naming no cell is a mistake to say, not an empty list (`?cell=nope`)."""
    if not filters.cell:
        return
    query = select(cells.c.slug).distinct()
    if filters.plan:
        query = query.where(cells.c.plan == filters.plan)
    known = set(await uow.session.scalars(query))
    unknown = [cell for cell in filters.cell if cell not in known]
    if unknown:
        listed = ", ".join(sorted(known)) or "none yet: import a plan first"
        raise ValidationFailed(
            [
                {
                    "field": "cell",
                    "in": "query",
                    "reason": f"no cell {', '.join(map(repr, unknown))}; the cells are: {listed}",
                }
            ]
        )


def _conditions(filters: ActionFilters, *, today: date) -> list:
    a = actions.c
    conditions = []
    if filters.plan:
        conditions.append(a.plan == filters.plan)
    for name in ("cell", "priority", "status", "rag", "timescale", "kind"):
        values = getattr(filters, name)
        if values:
            conditions.append(getattr(a, name).in_(values))
    if filters.theme:
        conditions.append(or_(func.lower(a.theme) == filters.theme.lower(), a.theme_slug == domain.slug(filters.theme)))
    if filters.lead:
        lead = filters.lead.lower()
        conditions.append(
            or_(
                func.lower(a.lead_organisation_text).contains(lead, autoescape=True),
                func.lower(a.named_lead_text).contains(lead, autoescape=True),
            )
        )
    if filters.overdue is not None:
        overdue = and_(func.coalesce(a.agreed_due_date, a.baseline_due_date) < today, a.status.not_in(domain.CLOSED))
        conditions.append(overdue if filters.overdue else ~overdue)
    return conditions


async def export_actions(uow: UnitOfWork, *, filters: ActionFilters, file_format: str) -> tuple[bytes, str]:
    """The actions the filters select, as CSV or Excel in the layout an import reads back; and a file name."""
    views = await list_actions(uow, filters=filters)
    now = uow.now()
    rows = spreadsheet.export_rows(views)
    name = f"actions-{filters.plan or 'all-plans'}-{domain.today_in_kent(now).isoformat()}.{file_format}"
    if file_format == "csv":
        return spreadsheet.to_csv(rows), name
    about = [
        ("Kent Together", "Recovery-plan actions"),
        ("Plan", filters.plan or "every plan"),
        ("Filters", filters.described()),
        ("Exported at (UTC)", now.replace(microsecond=0)),
        ("Actions", len(views)),
        (
            "Due dates",
            "Baseline: the end of the timescale band from the plan's start (Short 6 months, "
            "Medium 12, Longer 24); an agreed date overrides it. Overdue: due date passed and "
            "neither complete nor cancelled.",
        ),
        (
            "Re-import",
            "The first eleven columns are the plan's own and are read back by the plan's import. "
            "Status, Blocked reason, RAG, RAG narrative, the ratings and their commentary, Progress % "
            "and Agreed due date are read back by the tracking import (each changed cell becomes a "
            "dated entry in the action's history); keep 'Action id' and 'Last updated' as they are.",
        ),
    ]
    return spreadsheet.to_xlsx(rows, about=about), name


async def plan_snapshot(uow: UnitOfWork, *, plan: str, as_at: datetime) -> dict:
    """Every action of the plan as it stood at `as_at`, rebuilt from its history."""
    async with uow:
        await uow.actions.plan(plan)
        rows = (
            (
                await uow.session.execute(
                    select(actions)
                    .join(cells, and_(cells.c.plan == actions.c.plan, cells.c.slug == actions.c.cell))
                    .where(actions.c.plan == plan, actions.c.created_at < as_at)
                    .order_by(cells.c.position, actions.c.number)
                )
            )
            .mappings()
            .all()
        )
        ids = [row["id"] for row in rows]
        history = (
            (
                await uow.session.execute(
                    select(action_updates)
                    .where(action_updates.c.action_id.in_(ids))
                    .order_by(action_updates.c.id.desc())
                )
            )
            .mappings()
            .all()
            if ids
            else []
        )
        names = await uow.actions.cell_names()
    later: dict[str, list] = {}
    latest: dict[str, dict] = {}
    for entry in history:
        if entry["at"] >= as_at:
            if entry["field"] is not None:
                later.setdefault(entry["action_id"], []).append(entry)
        elif entry["kind"] == "update" and entry["action_id"] not in latest:
            latest[entry["action_id"]] = {"on": entry["update_on"], "narrative": entry["narrative"], "at": entry["at"]}
    day = domain.today_in_kent(as_at)
    states = []
    for row in rows:
        state = domain.state_as_at(dict(row), later.get(row["id"], []))
        view = action_view(state, cell_name=names[row["plan"], row["cell"]], today=day)
        view["latest_update"] = latest.get(row["id"])
        states.append(view)
    by_status = {status: 0 for status in domain.STATUSES}
    by_rag = {rag: 0 for rag in (*domain.RAGS, "none")}
    for view in states:
        by_status[view["status"]] += 1
        by_rag[view["rag"] or "none"] += 1
    return {
        "plan": plan,
        "as_at": as_at,
        "count": len(states),
        "by_status": by_status,
        "by_rag": by_rag,
        "overdue": sum(view["overdue"] for view in states),
        "actions": states,
    }
