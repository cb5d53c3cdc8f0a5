"""The actions service's persistence: plans, cells, actions, their history and links, in and out of rows.

`uow.actions` in every unit of work of this service (registered below). The use
cases ask it for rows and views and hand it history entries; it does the SQL.
Every method works in the caller's unit of work and never commits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update

from services.actions import domain
from services.actions.models import action_links, action_updates, actions, cells, plans, tables
from services.actions.plan_file import RECOVERY_CELLS
from shared.auth import Principal
from shared.errors import NotFound
from shared.uow import UnitOfWork


class Actions:
    """The repository behind a unit of work: `uow.actions`, used inside its transaction."""

    def __init__(self, uow: UnitOfWork):
        self.uow = uow

    async def plan(self, plan: str, *, missing_ok: bool = False):
        uow = self.uow
        row = (await uow.session.execute(select(plans).where(plans.c.slug == plan))).mappings().first()
        if row is None and not missing_ok:
            raise NotFound(f"no plan {plan!r}")
        return row

    async def get(self, action_id: str):
        uow = self.uow
        row = (await uow.session.execute(select(actions).where(actions.c.id == action_id))).mappings().first()
        if row is None:
            raise NotFound(f"no action {action_id}")
        return row

    async def cell_names(self) -> dict[tuple[str, str], str]:
        uow = self.uow
        return {
            (r.plan, r.slug): r.name
            for r in await uow.session.execute(select(cells.c.plan, cells.c.slug, cells.c.name))
        }

    async def views(self, rows: list[Mapping]) -> list[dict]:
        """Actions as the API shows them: due dates worked out, links both ways, the latest update."""
        uow = self.uow
        if not rows:
            return []
        today = domain.today_in_kent(uow.now())
        names = await self.cell_names()
        ids = [row["id"] for row in rows]
        whole_plans = len(ids) > 500
        links_to: dict[str, list] = {}
        linked_from: dict[str, list] = {}
        source, target = actions.alias("source"), actions.alias("target")
        columns = [
            action_links.c.id,
            action_links.c.source,
            action_links.c.note,
            source.c.id.label("from_id"),
            source.c.plan.label("from_plan"),
            source.c.cell.label("from_cell"),
            source.c.number.label("from_number"),
            source.c.title.label("from_title"),
            source.c.status.label("from_status"),
            target.c.id.label("to_id"),
            target.c.plan.label("to_plan"),
            target.c.cell.label("to_cell"),
            target.c.number.label("to_number"),
            target.c.title.label("to_title"),
            target.c.status.label("to_status"),
        ]
        query = (
            select(*columns)
            .join(source, source.c.id == action_links.c.from_action)
            .join(target, target.c.id == action_links.c.to_action)
            .order_by(action_links.c.id)
        )
        if whole_plans:  # many actions: select by plan rather than by a long list of ids
            query = query.where(source.c.plan.in_({row["plan"] for row in rows}))
        else:
            query = query.where(or_(action_links.c.from_action.in_(ids), action_links.c.to_action.in_(ids)))
        for link in (await uow.session.execute(query)).mappings():
            to = {
                "id": link["to_id"],
                "plan": link["to_plan"],
                "cell": link["to_cell"],
                "number": link["to_number"],
                "title": link["to_title"],
                "status": link["to_status"],
            }
            frm = {
                "id": link["from_id"],
                "plan": link["from_plan"],
                "cell": link["from_cell"],
                "number": link["from_number"],
                "title": link["from_title"],
                "status": link["from_status"],
            }
            links_to.setdefault(link["from_id"], []).append(
                link_view(link["id"], to, source=link["source"], note=link["note"], names=names)
            )
            linked_from.setdefault(link["to_id"], []).append(
                link_view(link["id"], frm, source=link["source"], note=link["note"], names=names)
            )
        latest: dict[str, dict] = {}
        newest_first = (
            select(
                action_updates.c.action_id, action_updates.c.update_on, action_updates.c.narrative, action_updates.c.at
            )
            .where(action_updates.c.kind == "update")
            .order_by(action_updates.c.id.desc())
        )
        if not whole_plans:
            newest_first = newest_first.where(action_updates.c.action_id.in_(ids))
        for entry in await uow.session.execute(newest_first):
            latest.setdefault(entry.action_id, {"on": entry.update_on, "narrative": entry.narrative, "at": entry.at})
        return [
            {
                **action_view(row, cell_name=names[row["plan"], row["cell"]], today=today),
                "links_to": links_to.get(row["id"], []),
                "linked_from": linked_from.get(row["id"], []),
                "latest_update": latest.get(row["id"]),
            }
            for row in rows
        ]

    async def record(self, entries: list[dict], *, by: Principal) -> None:
        """Add entries to actions' history, at this moment and by this person."""
        uow = self.uow
        if not entries:
            return
        now = uow.now()
        await uow.session.execute(
            insert(action_updates),
            [
                {
                    "field": None,
                    "old": None,
                    "new": None,
                    "narrative": None,
                    "update_on": None,
                    **entry,
                    "at": now,
                    "by": by.subject,
                    "by_role": by.role,
                }
                for entry in entries
            ],
        )

    async def save_plan(
        self,
        *,
        plan: str,
        current: Mapping | None,
        title: str | None,
        starts_on: date,
        now: datetime,
    ) -> None:
        uow = self.uow
        if current is None:
            await uow.session.execute(
                insert(plans).values(
                    slug=plan,
                    title=title or domain.DEFAULT_PLAN_TITLE,
                    starts_on=starts_on,
                    created_at=now,
                    updated_at=now,
                )
            )
            return
        values: dict[str, Any] = {}
        if title and title != current["title"]:
            values["title"] = title
        if starts_on != current["starts_on"]:
            values["starts_on"] = starts_on
        if values:
            await uow.session.execute(update(plans).where(plans.c.slug == plan).values(**values, updated_at=now))

    async def add_missing_cells(self, *, plan: str, slugs: set[str]) -> None:
        uow = self.uow
        have = set(await uow.session.scalars(select(cells.c.slug).where(cells.c.plan == plan)))
        order = list(RECOVERY_CELLS.values())
        names = {slug: name for name, slug in RECOVERY_CELLS.items()}
        missing = sorted(slugs - have, key=order.index)
        if missing:
            await uow.session.execute(
                insert(cells),
                [
                    {"plan": plan, "slug": slug, "name": names[slug], "position": order.index(slug) + 1}
                    for slug in missing
                ],
            )

    async def plan_view(self, plan: str) -> dict:
        uow = self.uow
        row = await self.plan(plan)
        counts: dict[str, int] = dict(
            (
                await uow.session.execute(
                    select(actions.c.cell, func.count()).where(actions.c.plan == plan).group_by(actions.c.cell)
                )
            ).all()
        )
        plan_cells = (
            (await uow.session.execute(select(cells).where(cells.c.plan == plan).order_by(cells.c.position)))
            .mappings()
            .all()
        )
        return {
            **dict(row),
            "action_count": sum(counts.values()),
            "cells": [{"slug": c["slug"], "name": c["name"], "actions": counts.get(c["slug"], 0)} for c in plan_cells],
        }

    async def sync_plan_links(self, *, plan: str, by: Principal) -> dict:
        """Make the plan's cross-reference links match its text: add the new, remove the gone."""
        uow = self.uow
        rows = (
            await uow.session.execute(
                select(actions.c.id, actions.c.cell, actions.c.number, actions.c.cross_references).where(
                    actions.c.plan == plan
                )
            )
        ).all()
        by_key = {(r.cell, r.number): r.id for r in rows}
        wanted: set[tuple[str, str]] = set()
        unresolved = []
        for r in rows:
            for cell, number in r.cross_references:
                target = by_key.get((cell, number))
                if target is None:
                    unresolved.append(f"{r.cell} {r.number} -> {cell} {number}")
                elif target != r.id:
                    wanted.add((r.id, target))
        ids = [r.id for r in rows]
        existing = (
            (
                await uow.session.execute(
                    select(
                        action_links.c.id, action_links.c.from_action, action_links.c.to_action, action_links.c.source
                    ).where(action_links.c.from_action.in_(ids))
                )
            ).all()
            if ids
            else []
        )
        linked = {(link.from_action, link.to_action) for link in existing}
        stale = [
            link.id for link in existing if link.source == "plan" and (link.from_action, link.to_action) not in wanted
        ]
        new = sorted(wanted - linked)
        if stale:
            await uow.session.execute(delete(action_links).where(action_links.c.id.in_(stale)))
        if new:
            now = uow.now()
            await uow.session.execute(
                insert(action_links),
                [
                    {
                        "from_action": f,
                        "to_action": t,
                        "source": "plan",
                        "note": None,
                        "created_at": now,
                        "created_by": by.subject,
                    }
                    for f, t in new
                ],
            )
        return {"created": len(new), "removed": len(stale), "unresolved": sorted(unresolved)}


def action_view(row: Mapping, *, cell_name: str, today: date) -> dict:
    baseline, agreed = row["baseline_due_date"], row["agreed_due_date"]
    due = domain.due_date(baseline=baseline, agreed=agreed)
    return {
        **{key: value for key, value in row.items() if key not in ("theme_slug", "cross_references")},
        "cell_name": cell_name,
        "due_date": due,
        "slippage_days": domain.slippage_days(baseline=baseline, agreed=agreed),
        "overdue": domain.is_overdue(due=due, status=row["status"], today=today),
        "days_overdue": domain.days_overdue(due=due, status=row["status"], today=today),
    }


def link_view(link_id: int, other: Mapping, *, source: str, note: str | None, names: Mapping) -> dict:
    return {
        "id": link_id,
        "action_id": other["id"],
        "cell": other["cell"],
        "cell_name": names[other["plan"], other["cell"]],
        "number": other["number"],
        "title": other["title"],
        "status": other["status"],
        "source": source,
        "note": note,
    }


# `uow.actions` in every unit of work of this service.
tables.repositories.update(actions=Actions)
