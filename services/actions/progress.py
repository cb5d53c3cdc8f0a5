"""The public progress page's figures: a plan rolled up per cell and per theme, nothing personal."""

from __future__ import annotations

from sqlalchemy import select

from services.actions import domain
from services.actions.models import actions, cells
from shared.uow import UnitOfWork


async def plan_progress(uow: UnitOfWork, *, plan: str) -> dict:
    """The plan's progress rolled up per cell and, within a cell, per theme: counts and means, for anyone.

    Nothing personal and nothing written by a person: no named leads, narratives or commentary,
    only the plan's structure and the tracking's figures.
    """
    async with uow:
        plan_row = await uow.actions.plan(plan)
        today = domain.today_in_kent(uow.now())
        rows = (
            await uow.session.execute(
                select(
                    actions.c.cell,
                    actions.c.theme,
                    actions.c.status,
                    actions.c.rag,
                    actions.c.progress,
                    actions.c.baseline_due_date,
                    actions.c.agreed_due_date,
                    actions.c.updated_at,
                ).where(actions.c.plan == plan)
            )
        ).all()
        plan_cells = (
            await uow.session.execute(
                select(cells.c.slug, cells.c.name).where(cells.c.plan == plan).order_by(cells.c.position)
            )
        ).all()
    by_cell: dict[str, list] = {}
    for row in rows:
        by_cell.setdefault(row.cell, []).append(row)
    cell_views = []
    for cell in plan_cells:
        members = by_cell.get(cell.slug, [])
        themes: dict[str, list] = {}
        for row in members:
            if row.theme:
                themes.setdefault(row.theme, []).append(row)
        cell_views.append(
            {
                "slug": cell.slug,
                "name": cell.name,
                **domain.rollup(members, today=today),
                "themes": [
                    {"name": name, "slug": domain.slug(name), **domain.rollup(group, today=today)}
                    for name, group in sorted(themes.items())
                ],
            }
        )
    return {
        "plan": plan,
        "title": plan_row["title"],
        "starts_on": plan_row["starts_on"],
        "last_updated": max((row.updated_at for row in rows), default=None),
        **domain.rollup(rows, today=today),
        "cells": cell_views,
    }
