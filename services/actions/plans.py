"""Plans: importing a plan file (by cell and number, all rows or none), a plan's start and title, and its cross-reference links."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from services.actions import domain, spreadsheet
from services.actions.announcements import event_state
from services.actions.models import actions, plans
from services.actions.plan_file import RECOVERY_CELLS, ParsedAction
from services.actions.spreadsheet import PlanUpload
from shared.auth import Principal
from shared.errors import Conflict, ValidationFailed
from shared.events import (
    ActionCreatedV1,
    ActionRevisedV1,
)
from shared.uow import UnitOfWork

Progress = Callable[[int, int], None]


class ImportRejected(ValidationFailed):
    """Some rows of the file cannot be imported, so none is: the report says which and why."""

    slug, title = "import-rejected", "Rows of the file cannot be imported; nothing was changed"

    def __init__(self, report: dict):
        rejected = [r for r in report["rows"] if r["outcome"] == "rejected"]
        super().__init__(
            [{"field": f"row {r['row']}", "reason": r["reason"], "row": r["row"], "cell": r["cell"]} for r in rejected],
            detail=f"{len(rejected)} row{'s' if len(rejected) != 1 else ''} rejected; nothing was changed",
        )
        self.extensions["report"] = report


async def import_plan(
    uow: UnitOfWork,
    *,
    plan: str,
    upload: PlanUpload,
    by: Principal,
    title: str | None = None,
    starts_on: date | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Create or update a plan's actions from a file, by (cell, number), in one transaction.

    Only the plan's own columns are written: status, ratings, progress, agreed
    dates, updates and manual links are never touched. If any row is rejected,
    nothing is written and ImportRejected carries the report.
    """
    read = spreadsheet.read_plan_file(filename=upload.filename, content=upload.content)
    total = len(read.plan.actions) + len(read.plan.errors)
    async with uow:
        session = uow.session
        now = uow.now()
        plan_row = await uow.actions.plan(plan, missing_ok=True)
        starts = starts_on or (plan_row["starts_on"] if plan_row else domain.DEFAULT_PLAN_START)
        stored = {
            (row["cell"], row["number"]): row
            for row in (await session.execute(select(actions).where(actions.c.plan == plan))).mappings()
        }
        report_rows: list[dict] = []
        created: list[dict] = []
        revised: list[tuple[Mapping, dict, list[str], int]] = []
        for done, parsed in enumerate(read.plan.actions, start=1):
            columns = domain.plan_columns(parsed, starts_on=starts)
            existing = stored.get((parsed.cell_slug, parsed.number))
            if existing is None:
                row = _new_action(parsed, columns, plan=plan, now=now)
                created.append(row)
                report_rows.append(_row_report(parsed, "created", row["id"]))
            else:
                changed = domain.changed_plan_columns(dict(existing), columns)
                if changed:
                    revised.append((existing, columns, changed, parsed.row))
                report_rows.append(_row_report(parsed, "updated" if changed else "unchanged", existing["id"], changed))
            if progress:
                progress(done, total)
        report_rows += [
            {
                "row": e.row,
                "cell": RECOVERY_CELLS.get(e.cell or ""),
                "number": None,
                "outcome": "rejected",
                "action_id": None,
                "changed": [],
                "reason": e.reason,
            }
            for e in read.plan.errors
        ]
        report_rows.sort(key=lambda r: r["row"])
        in_file = {(a.cell_slug, a.number) for a in read.plan.actions}
        report = {
            "plan": plan,
            "filename": upload.filename,
            "format": read.format,
            "dry_run": dry_run,
            "applied": False,
            "counts": {
                outcome: sum(r["outcome"] == outcome for r in report_rows)
                for outcome in ("created", "updated", "unchanged", "rejected")
            },
            "rows": report_rows,
            "links": {"created": 0, "removed": 0, "unresolved": []},
            "not_in_file": len(set(stored) - in_file),
            "rebaselined": 0,
        }
        if read.plan.errors:
            raise ImportRejected(report)

        try:
            report["rebaselined"], report["links"] = await _write_import(
                uow,
                plan=plan,
                plan_row=plan_row,
                title=title,
                starts=starts,
                stored=stored,
                in_file=in_file,
                created=created,
                revised=revised,
                source=f"{read.format} file {upload.filename or '(unnamed)'}",
                by=by,
            )
            if dry_run:
                return report  # leaving the unit of work without a commit rolls all of it back
            await uow.commit()
        except IntegrityError:
            # Two imports of one plan at once: the second finds the first's rows.
            raise Conflict(f"plan {plan!r} was being imported at the same time; import the file again") from None
        report["applied"] = True
        return report


async def _write_import(
    uow: UnitOfWork,
    *,
    plan: str,
    plan_row: Mapping | None,
    title: str | None,
    starts: date,
    stored: dict,
    in_file: set[tuple[str, int]],
    created: list[dict],
    revised: list,
    source: str,
    by: Principal,
) -> tuple[int, dict]:
    """Write what an import found: the plan, its cells, new and revised actions, links.

    Returns how many actions outside the file moved with the plan's start, and the link report.
    """
    session = uow.session
    now = uow.now()
    await uow.actions.save_plan(plan=plan, current=plan_row, title=title, starts_on=starts, now=now)
    await uow.actions.add_missing_cells(plan=plan, slugs={cell for cell, _ in in_file})
    if created:
        await session.execute(insert(actions), created)
        await uow.actions.record(
            [{"action_id": row["id"], "kind": "created", "narrative": f"imported from {source}"} for row in created],
            by=by,
        )
        for row in created:
            uow.publish(ActionCreatedV1(**event_state(row), created_at=now))
    for existing, columns, changed, line in revised:
        await _revise(
            uow,
            existing,
            {c: columns[c] for c in changed},
            narrative=f"re-imported from {source}, row {line}",
            by=by,
        )
    rebaselined = 0
    if plan_row is not None and starts != plan_row["starts_on"]:
        outside = [row for key, row in stored.items() if key not in in_file]
        rebaselined = await _rebaseline(uow, outside, starts_on=starts, by=by)
    return rebaselined, await uow.actions.sync_plan_links(plan=plan, by=by)


def _new_action(parsed: ParsedAction, columns: dict, *, plan: str, now: datetime) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "plan": plan,
        "cell": parsed.cell_slug,
        "number": parsed.number,
        **columns,
        "theme_slug": domain.slug(columns["theme"]) if columns["theme"] else None,
        "status": domain.NOT_STARTED,
        "blocked_reason": None,
        "rag": None,
        "rag_narrative": None,
        "self_rating": None,
        "self_rating_commentary": None,
        "independent_rating": None,
        "independent_rating_commentary": None,
        "progress": 0,
        "agreed_due_date": None,
        "completed_at": None,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }


def _row_report(parsed: ParsedAction, outcome: str, action_id: str, changed: Iterable[str] = ()) -> dict:
    return {
        "row": parsed.row,
        "cell": parsed.cell_slug,
        "number": parsed.number,
        "outcome": outcome,
        "action_id": action_id,
        "changed": list(changed),
        "reason": None,
    }


async def list_plans(uow: UnitOfWork) -> list[dict]:
    async with uow:
        slugs = (await uow.session.scalars(select(plans.c.slug).order_by(plans.c.slug))).all()
        return [await uow.actions.plan_view(slug) for slug in slugs]


async def get_plan(uow: UnitOfWork, plan: str) -> dict:
    async with uow:
        return await uow.actions.plan_view(plan)


async def change_plan(
    uow: UnitOfWork,
    *,
    plan: str,
    title: str | None,
    starts_on: date | None,
    by: Principal,
) -> dict:
    """Rename a plan or move its start; a new start moves every baseline due date with it."""
    async with uow:
        current = await uow.actions.plan(plan)
        now = uow.now()
        await uow.actions.save_plan(
            plan=plan, current=current, title=title, starts_on=starts_on or current["starts_on"], now=now
        )
        if starts_on is not None and starts_on != current["starts_on"]:
            rows = (await uow.session.execute(select(actions).where(actions.c.plan == plan))).mappings().all()
            await _rebaseline(uow, rows, starts_on=starts_on, by=by)
        view = await uow.actions.plan_view(plan)
        await uow.commit()
        return view


async def _revise(uow: UnitOfWork, row: Mapping, values: dict, *, narrative: str, by: Principal) -> None:
    """Write new values into an action's plan columns, with history and an event."""
    now = uow.now()
    changes = dict(values)
    if "theme" in changes:
        changes["theme_slug"] = domain.slug(changes["theme"]) if changes["theme"] else None
    await uow.session.execute(
        update(actions).where(actions.c.id == row["id"]).values(**changes, updated_at=now, version=row["version"] + 1)
    )
    await uow.actions.record(
        [
            {
                "action_id": row["id"],
                "kind": "revised",
                "field": name,
                "old": domain.to_history(row[name]),
                "new": domain.to_history(value),
                "narrative": narrative,
            }
            for name, value in values.items()
        ],
        by=by,
    )
    revised = {**row, **changes}
    uow.publish(ActionRevisedV1(**event_state(revised), changed=list(values), changed_at=now))


async def _rebaseline(uow: UnitOfWork, rows: Iterable[Mapping], *, starts_on: date, by: Principal) -> int:
    moved = 0
    for row in rows:
        baseline = domain.baseline_due_date(starts_on=starts_on, timescale=row["timescale"])
        if baseline != row["baseline_due_date"]:
            await _revise(
                uow,
                row,
                {"baseline_due_date": baseline},
                by=by,
                narrative=f"the plan's start moved to {starts_on.isoformat()}",
            )
            moved += 1
    return moved
