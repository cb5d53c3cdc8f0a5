"""Action use cases: load, apply the rules, record history and events, commit once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from services.actions import domain, spreadsheet
from services.actions.models import action_links, action_updates, actions, cells, plans
from services.actions.plan_file import RECOVERY_CELLS, ParsedAction
from shared.auth import Principal
from shared.errors import Conflict, Forbidden, InvalidTransition, NotFound, ValidationFailed
from shared.events import (
    ActionCreatedV1,
    ActionDueDateChangedV1,
    ActionProgressUpdatedV1,
    ActionRagChangedV1,
    ActionRatedV1,
    ActionRevisedV1,
    ActionStatusChangedV1,
    ActionUpdateRecordedV1,
)
from shared.settings import Topics
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


@dataclass(frozen=True)
class PlanUpload:
    filename: str | None
    content: bytes


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


# --- import ---------------------------------------------------------------------------------


async def import_plan(
    uow: UnitOfWork,
    *,
    plan: str,
    upload: PlanUpload,
    by: Principal,
    topics: Topics,
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
        plan_row = await _plan_row(uow, plan, missing_ok=True)
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
                changed = domain.changed_plan_columns(existing, columns)
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
                topics=topics,
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
    topics: Topics,
) -> tuple[int, dict]:
    """Write what an import found: the plan, its cells, new and revised actions, links.

    Returns how many actions outside the file moved with the plan's start, and the link report.
    """
    session = uow.session
    now = uow.now()
    await _save_plan(uow, plan=plan, current=plan_row, title=title, starts_on=starts, now=now)
    await _add_missing_cells(uow, plan=plan, slugs={cell for cell, _ in in_file})
    if created:
        await session.execute(insert(actions), created)
        await _record(
            uow,
            [{"action_id": row["id"], "kind": "created", "narrative": f"imported from {source}"} for row in created],
            by=by,
        )
        for row in created:
            uow.publish(ActionCreatedV1(**_event_state(row), created_at=now), topic=topics.actions)
    for existing, columns, changed, line in revised:
        await _revise(
            uow,
            existing,
            {c: columns[c] for c in changed},
            narrative=f"re-imported from {source}, row {line}",
            topics=topics,
            by=by,
        )
    rebaselined = 0
    if plan_row is not None and starts != plan_row["starts_on"]:
        outside = [row for key, row in stored.items() if key not in in_file]
        rebaselined = await _rebaseline(uow, outside, starts_on=starts, topics=topics, by=by)
    return rebaselined, await _sync_plan_links(uow, plan=plan, by=by)


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


# --- tracking from a spreadsheet -------------------------------------------------------------


class TrackingRejected(ValidationFailed):
    """Cells of the file cannot be imported, so nothing is: each named by row, column and reason."""

    slug, title = "tracking-import-rejected", "Rows of the file cannot be imported; nothing was changed"

    def __init__(self, report: dict):
        errors = [
            {"field": f"row {r['row']}, {e['column']}", "reason": e["reason"], "row": r["row"], "column": e["column"]}
            for r in report["rows"]
            for e in r["errors"]
        ]
        rejected = report["counts"]["rejected"]
        super().__init__(errors, detail=f"{rejected} row{'s' if rejected != 1 else ''} rejected; nothing was changed")
        self.extensions["report"] = report


async def import_tracking(
    uow: UnitOfWork,
    *,
    upload: PlanUpload,
    by: Principal,
    topics: Topics,
    dry_run: bool = False,
) -> dict:
    """Read back an edited export's tracking: each changed cell a dated entry in its action's history.

    All rows or none: if any row is rejected (a cell unreadable, a rule broken, an action changed
    by someone else since the export), TrackingRejected carries the report and nothing changes.
    A file with nothing changed changes nothing. A dry run reports and writes nothing.
    """
    file_format, rows = spreadsheet.read_tracking_file(filename=upload.filename, content=upload.content)
    source = f"{file_format} file {upload.filename or '(unnamed)'}"
    admin = "actions:admin" in by.scopes
    async with uow:
        ids = sorted({r.action_id for r in rows if r.action_id})
        stored = (
            {
                row["id"]: row
                for row in (await uow.session.execute(select(actions).where(actions.c.id.in_(ids)))).mappings()
            }
            if ids
            else {}
        )
        starts = dict((await uow.session.execute(select(plans.c.slug, plans.c.starts_on))).all())
        seen: dict[str, int] = {}
        report_rows, planned = [], []
        for r in rows:
            errors = [{"column": heading, "reason": reason} for heading, reason in r.errors]
            action = stored.get(r.action_id)
            entry = {
                "row": r.row,
                "action_id": r.action_id or None,
                "cell": None,
                "number": None,
                "outcome": "unchanged",
                "changes": [],
                "errors": errors,
            }
            report_rows.append(entry)
            if not r.action_id:
                errors.append({"column": "Action id", "reason": "is empty: keep the id the export gave the row"})
            elif action is None:
                errors.append({"column": "Action id", "reason": f"there is no action {r.action_id}"})
            elif r.action_id in seen:
                errors.append({"column": "Action id", "reason": f"the action is also at row {seen[r.action_id]}"})
            if action is None or r.action_id in seen or errors:
                seen.setdefault(r.action_id, r.row)
                continue
            seen[r.action_id] = r.row
            entry.update(cell=action["cell"], number=action["number"])
            changes = _tracking_from_row(
                action,
                r,
                plan_starts_on=starts[action["plan"]],
                admin=admin,
                note=f"imported from {source}, row {r.row}",
                errors=errors,
            )
            if errors or not changes:
                continue
            entry["outcome"] = "changed"
            entry["changes"] = [
                {
                    "column": spreadsheet.HEADING_OF[c.field],
                    "field": c.field,
                    "old": domain.to_history(c.old),
                    "new": domain.to_history(c.new),
                    "narrative": c.narrative,
                }
                for c in changes
            ]
            planned.append((action, changes))
        for entry in report_rows:
            if entry["errors"]:
                entry["outcome"] = "rejected"
        counts = {
            outcome: sum(e["outcome"] == outcome for e in report_rows)
            for outcome in ("changed", "unchanged", "rejected")
        }
        report = {
            "filename": upload.filename,
            "format": file_format,
            "dry_run": dry_run,
            "applied": False,
            "counts": {**counts, "cells_changed": sum(len(e["changes"]) for e in report_rows)},
            "rows": report_rows,
        }
        if counts["rejected"]:
            raise TrackingRejected(report)
        if dry_run or not planned:
            return report
        for action, changes in planned:
            await _apply_tracking(uow, action, changes, by=by, topics=topics)
        await uow.commit()
        report["applied"] = True
        return report


def _tracking_from_row(
    action: Mapping,
    row: spreadsheet.TrackingRow,
    *,
    plan_starts_on: date,
    admin: bool,
    note: str,
    errors: list[dict],
) -> list[domain.FieldChange]:
    """The changes one row asks for, by the same rules as the API's; problems added to `errors`."""
    given = {field: value for field, value in row.values.items() if not domain.same_tracking(action[field], value)}
    if not given:
        return []
    state = {field: action[field] for field in domain.TRACKED_FIELDS} | row.values
    # A stale row is only that: what else it asks was read against an action that has moved on since.
    # 'Last updated' keeps microseconds in CSV and about one in xlsx (a float of days): 1 ms of slack, not a second,
    # so a change made just after the export is still caught.
    if row.last_updated is not None and action["updated_at"] > row.last_updated + timedelta(milliseconds=1):
        problems = [
            (
                "last_updated",
                f"the action was changed at {action['updated_at'].isoformat(timespec='seconds')}, "
                "after this file was exported: export it again and redo this row",
            )
        ]
    else:
        problems = domain.tracking_state_problems(state)
    if not problems:
        # A new RAG takes the row's narrative even when the narrative is the same; so does a new block its reason.
        if "rag" in given:
            given["rag_narrative"] = state["rag_narrative"]
        if given.get("status") == domain.BLOCKED:
            given["blocked_reason"] = state["blocked_reason"]
        try:
            changes = domain.tracking_changes(
                action, {**given, "note": note}, plan_starts_on=plan_starts_on, may_rate_independently=admin
            )
        except ValidationFailed as refused:
            problems += [(e["field"], e["reason"]) for e in refused.extensions["errors"]]
        except InvalidTransition as refused:
            problems.append(("status", str(refused)))
        except Forbidden as refused:
            problems.append(("independent_rating", str(refused)))
        else:
            return changes
    heading = {**spreadsheet.HEADING_OF, "last_updated": "Last updated"}
    errors.extend({"column": heading.get(field, field), "reason": reason} for field, reason in problems)
    return []


# --- tracking -------------------------------------------------------------------------------


async def change_action(
    uow: UnitOfWork, *, action_id: str, given: dict[str, Any], by: Principal, topics: Topics
) -> dict:
    """Apply a recovery lead's changes to an action: every change kept in its history, with its event."""
    given = dict(given)
    expected_version = given.pop("version", None)
    async with uow:
        row = await _action_row(uow, action_id)
        if expected_version is not None and expected_version != row["version"]:
            raise Conflict(
                f"the action is at version {row['version']}, not {expected_version}: "
                "someone changed it since you read it; read it again"
            )
        plan_row = await _plan_row(uow, row["plan"])
        changes = domain.tracking_changes(
            row,
            given,
            plan_starts_on=plan_row["starts_on"],
            may_rate_independently="actions:admin" in by.scopes,
        )
        if changes:
            row = await _apply_tracking(uow, row, changes, by=by, topics=topics)
        view = (await _views(uow, [row]))[0]
        await uow.commit()
        return view


async def _apply_tracking(
    uow: UnitOfWork,
    row: Mapping,
    changes: list[domain.FieldChange],
    *,
    by: Principal,
    topics: Topics,
) -> dict:
    """Write checked tracking changes: the action, one history entry per field, its events. Never commits."""
    now = uow.now()
    values = {change.field: change.new for change in changes}
    values.update(
        completed_at=domain.completed_at_after(changes, current=row["completed_at"], now=now),
        updated_at=now,
        version=row["version"] + 1,
    )
    result = await uow.session.execute(
        update(actions).where(actions.c.id == row["id"], actions.c.version == row["version"]).values(**values)
    )
    if result.rowcount != 1:
        raise Conflict("the action changed while this change was being made; read it again")
    await _record(
        uow,
        [
            {
                "action_id": row["id"],
                "kind": "changed",
                "field": c.field,
                "old": domain.to_history(c.old),
                "new": domain.to_history(c.new),
                "narrative": c.narrative,
            }
            for c in changes
        ],
        by=by,
    )
    row = {**row, **values}
    _publish_tracking(uow, row, changes, now=now, topics=topics)
    return row


def _publish_tracking(
    uow: UnitOfWork, row: Mapping, changes: list[domain.FieldChange], *, now: datetime, topics: Topics
) -> None:
    state = _event_state(row)
    for change in changes:
        event = None
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
            uow.publish(event, topic=topics.actions)


async def record_update(
    uow: UnitOfWork,
    *,
    action_id: str,
    narrative: str,
    on: date | None,
    by: Principal,
    topics: Topics,
) -> dict:
    """A dated narrative update on an action's progress, kept in its history."""
    async with uow:
        row = await _action_row(uow, action_id)
        now = uow.now()
        on = on or domain.today_in_kent(now)
        await _record(uow, [{"action_id": action_id, "kind": "update", "narrative": narrative, "update_on": on}], by=by)
        await uow.session.execute(update(actions).where(actions.c.id == action_id).values(updated_at=now))
        uow.publish(ActionUpdateRecordedV1(**_event_state(row), update_on=on, recorded_at=now), topic=topics.actions)
        await uow.commit()
        return {"on": on, "narrative": narrative, "at": now}


async def link_actions(
    uow: UnitOfWork,
    *,
    action_id: str,
    to: str | None,
    cell: str | None,
    number: int | None,
    note: str | None,
    by: Principal,
) -> dict:
    """Record by hand that one action depends on another of the same plan."""
    async with uow:
        source = await _action_row(uow, action_id)
        query = select(actions)
        if to is not None:
            query = query.where(actions.c.id == to)
        else:
            query = query.where(actions.c.plan == source["plan"], actions.c.cell == cell, actions.c.number == number)
        target = (await uow.session.execute(query)).mappings().first()
        if target is None:
            named = f"action {to}" if to else f"{cell} action {number} in plan {source['plan']!r}"
            raise ValidationFailed([{"field": "to" if to else "number", "reason": f"there is no {named}"}])
        domain.check_link(from_action=source, to_action=target)
        existing = (
            await uow.session.execute(
                select(action_links.c.source, action_links.c.from_action).where(
                    or_(
                        and_(action_links.c.from_action == source["id"], action_links.c.to_action == target["id"]),
                        and_(action_links.c.from_action == target["id"], action_links.c.to_action == source["id"]),
                    )
                )
            )
        ).first()
        if existing is not None:
            way = "" if existing.from_action == source["id"] else " the other way"
            origin = "by the plan's cross reference" if existing.source == "plan" else "by hand"
            raise Conflict(f"these actions are already linked{way}, {origin}")
        now = uow.now()
        result = await uow.session.execute(
            insert(action_links).values(
                from_action=source["id"],
                to_action=target["id"],
                source="manual",
                note=note,
                created_at=now,
                created_by=by.subject,
            )
        )
        await _record(
            uow,
            [
                {
                    "action_id": source["id"],
                    "kind": "linked",
                    "field": None,
                    "new": {"to": target["id"], "cell": target["cell"], "number": target["number"]},
                    "narrative": note,
                }
            ],
            by=by,
        )
        link_id = result.inserted_primary_key[0]
        names = await _cell_names(uow)
        await uow.commit()
        return _link_view(link_id, target, source="manual", note=note, names=names)


async def unlink_actions(uow: UnitOfWork, *, action_id: str, link_id: int, by: Principal) -> None:
    """Remove a link added by hand (a link from the plan's text goes when the text does)."""
    async with uow:
        link = (
            (
                await uow.session.execute(
                    select(action_links).where(action_links.c.id == link_id, action_links.c.from_action == action_id)
                )
            )
            .mappings()
            .first()
        )
        if link is None:
            raise NotFound(f"action {action_id} has no link {link_id}")
        if link["source"] == "plan":
            raise Conflict(
                "this link is the plan's own cross reference: it goes when the plan's text no longer makes it"
            )
        await uow.session.execute(delete(action_links).where(action_links.c.id == link_id))
        await _record(uow, [{"action_id": action_id, "kind": "unlinked", "old": {"to": link["to_action"]}}], by=by)
        await uow.commit()


# --- reading --------------------------------------------------------------------------------


async def get_action(uow: UnitOfWork, action_id: str) -> dict:
    async with uow:
        row = await _action_row(uow, action_id)
        [view] = await _views(uow, [row])
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
        return await _views(uow, rows)


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
        await _plan_row(uow, plan)
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
        names = await _cell_names(uow)
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
        state = domain.state_as_at(row, later.get(row["id"], []))
        view = _view(state, cell_name=names[row["plan"], row["cell"]], today=day)
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


# --- the public progress page ---------------------------------------------------------------


async def plan_progress(uow: UnitOfWork, *, plan: str) -> dict:
    """The plan's progress rolled up per cell and, within a cell, per theme: counts and means, for anyone.

    Nothing personal and nothing written by a person: no named leads, narratives or commentary,
    only the plan's structure and the tracking's figures.
    """
    async with uow:
        plan_row = await _plan_row(uow, plan)
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


# --- plans ----------------------------------------------------------------------------------


async def list_plans(uow: UnitOfWork) -> list[dict]:
    async with uow:
        slugs = (await uow.session.scalars(select(plans.c.slug).order_by(plans.c.slug))).all()
        return [await _plan_view(uow, slug) for slug in slugs]


async def get_plan(uow: UnitOfWork, plan: str) -> dict:
    async with uow:
        return await _plan_view(uow, plan)


async def change_plan(
    uow: UnitOfWork,
    *,
    plan: str,
    title: str | None,
    starts_on: date | None,
    by: Principal,
    topics: Topics,
) -> dict:
    """Rename a plan or move its start; a new start moves every baseline due date with it."""
    async with uow:
        current = await _plan_row(uow, plan)
        now = uow.now()
        await _save_plan(
            uow, plan=plan, current=current, title=title, starts_on=starts_on or current["starts_on"], now=now
        )
        if starts_on is not None and starts_on != current["starts_on"]:
            rows = (await uow.session.execute(select(actions).where(actions.c.plan == plan))).mappings().all()
            await _rebaseline(uow, rows, starts_on=starts_on, topics=topics, by=by)
        view = await _plan_view(uow, plan)
        await uow.commit()
        return view


# --- helpers: never commit ------------------------------------------------------------------


async def _record(uow: UnitOfWork, entries: list[dict], *, by: Principal) -> None:
    """Add entries to actions' history, at this moment and by this person."""
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


async def _revise(
    uow: UnitOfWork, row: Mapping, values: dict, *, narrative: str, topics: Topics, by: Principal
) -> None:
    """Write new values into an action's plan columns, with history and an event."""
    now = uow.now()
    changes = dict(values)
    if "theme" in changes:
        changes["theme_slug"] = domain.slug(changes["theme"]) if changes["theme"] else None
    await uow.session.execute(
        update(actions).where(actions.c.id == row["id"]).values(**changes, updated_at=now, version=row["version"] + 1)
    )
    await _record(
        uow,
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
    uow.publish(ActionRevisedV1(**_event_state(revised), changed=list(values), changed_at=now), topic=topics.actions)


async def _rebaseline(
    uow: UnitOfWork, rows: Iterable[Mapping], *, starts_on: date, topics: Topics, by: Principal
) -> int:
    moved = 0
    for row in rows:
        baseline = domain.baseline_due_date(starts_on=starts_on, timescale=row["timescale"])
        if baseline != row["baseline_due_date"]:
            await _revise(
                uow,
                row,
                {"baseline_due_date": baseline},
                by=by,
                topics=topics,
                narrative=f"the plan's start moved to {starts_on.isoformat()}",
            )
            moved += 1
    return moved


async def _sync_plan_links(uow: UnitOfWork, *, plan: str, by: Principal) -> dict:
    """Make the plan's cross-reference links match its text: add the new, remove the gone."""
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
    stale = [link.id for link in existing if link.source == "plan" and (link.from_action, link.to_action) not in wanted]
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


async def _save_plan(
    uow: UnitOfWork,
    *,
    plan: str,
    current: Mapping | None,
    title: str | None,
    starts_on: date,
    now: datetime,
) -> None:
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
    values = {}
    if title and title != current["title"]:
        values["title"] = title
    if starts_on != current["starts_on"]:
        values["starts_on"] = starts_on
    if values:
        await uow.session.execute(update(plans).where(plans.c.slug == plan).values(**values, updated_at=now))


async def _add_missing_cells(uow: UnitOfWork, *, plan: str, slugs: set[str]) -> None:
    have = set(await uow.session.scalars(select(cells.c.slug).where(cells.c.plan == plan)))
    order = list(RECOVERY_CELLS.values())
    names = {slug: name for name, slug in RECOVERY_CELLS.items()}
    missing = sorted(slugs - have, key=order.index)
    if missing:
        await uow.session.execute(
            insert(cells),
            [{"plan": plan, "slug": slug, "name": names[slug], "position": order.index(slug) + 1} for slug in missing],
        )


async def _plan_row(uow: UnitOfWork, plan: str, *, missing_ok: bool = False):
    row = (await uow.session.execute(select(plans).where(plans.c.slug == plan))).mappings().first()
    if row is None and not missing_ok:
        raise NotFound(f"no plan {plan!r}")
    return row


async def _plan_view(uow: UnitOfWork, plan: str) -> dict:
    row = await _plan_row(uow, plan)
    counts = dict(
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


async def _action_row(uow: UnitOfWork, action_id: str):
    row = (await uow.session.execute(select(actions).where(actions.c.id == action_id))).mappings().first()
    if row is None:
        raise NotFound(f"no action {action_id}")
    return row


async def _cell_names(uow: UnitOfWork) -> dict[tuple[str, str], str]:
    return {
        (r.plan, r.slug): r.name for r in await uow.session.execute(select(cells.c.plan, cells.c.slug, cells.c.name))
    }


async def _views(uow: UnitOfWork, rows: list[Mapping]) -> list[dict]:
    """Actions as the API shows them: due dates worked out, links both ways, the latest update."""
    if not rows:
        return []
    today = domain.today_in_kent(uow.now())
    names = await _cell_names(uow)
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
            _link_view(link["id"], to, source=link["source"], note=link["note"], names=names)
        )
        linked_from.setdefault(link["to_id"], []).append(
            _link_view(link["id"], frm, source=link["source"], note=link["note"], names=names)
        )
    latest: dict[str, dict] = {}
    newest_first = (
        select(action_updates.c.action_id, action_updates.c.update_on, action_updates.c.narrative, action_updates.c.at)
        .where(action_updates.c.kind == "update")
        .order_by(action_updates.c.id.desc())
    )
    if not whole_plans:
        newest_first = newest_first.where(action_updates.c.action_id.in_(ids))
    for entry in await uow.session.execute(newest_first):
        latest.setdefault(entry.action_id, {"on": entry.update_on, "narrative": entry.narrative, "at": entry.at})
    return [
        {
            **_view(row, cell_name=names[row["plan"], row["cell"]], today=today),
            "links_to": links_to.get(row["id"], []),
            "linked_from": linked_from.get(row["id"], []),
            "latest_update": latest.get(row["id"]),
        }
        for row in rows
    ]


def _view(row: Mapping, *, cell_name: str, today: date) -> dict:
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


def _link_view(link_id: int, other: Mapping, *, source: str, note: str | None, names: Mapping) -> dict:
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


async def publish_state_page(
    uow: UnitOfWork, after: str | None, limit: int, *, topics: Topics
) -> tuple[str | None, int]:
    """`kent-together republish actions`: each action as it is now (an `action.revised` changing nothing, dated
    by its last change), in id order after `after`; returns the last id and how many."""
    query = select(actions).order_by(actions.c.id).limit(limit)
    if after is not None:
        query = query.where(actions.c.id > after)
    rows = (await uow.session.execute(query)).mappings().all()
    for row in rows:
        uow.publish(
            ActionRevisedV1(**_event_state(row), changed=[], changed_at=row["updated_at"]), topic=topics.actions
        )
    return (rows[-1]["id"] if rows else after), len(rows)


def _event_state(row: Mapping) -> dict:
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
