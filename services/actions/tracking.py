"""Tracking: a recovery lead's changes, dated updates and links, from the API or read back from an edited export."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, insert, or_, select, update

from services.actions import domain, spreadsheet
from services.actions.announcements import event_state, publish_tracking
from services.actions.models import action_links, actions, plans
from services.actions.repository import link_view
from services.actions.spreadsheet import PlanUpload
from shared.auth import Principal
from shared.errors import Conflict, Forbidden, InvalidTransition, NotFound, ValidationFailed
from shared.events import (
    ActionUpdateRecordedV1,
)
from shared.uow import UnitOfWork


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
        report_rows: list[dict[str, Any]] = []
        planned: list[tuple[Any, list[domain.FieldChange]]] = []
        for r in rows:
            errors = [{"column": heading, "reason": reason} for heading, reason in r.errors]
            action = stored.get(r.action_id)
            entry: dict[str, Any] = {
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
            await _apply_tracking(uow, action, changes, by=by)
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


async def change_action(uow: UnitOfWork, *, action_id: str, given: dict[str, Any], by: Principal) -> dict:
    """Apply a recovery lead's changes to an action: every change kept in its history, with its event."""
    given = dict(given)
    expected_version = given.pop("version", None)
    async with uow:
        row = await uow.actions.get(action_id)
        if expected_version is not None and expected_version != row["version"]:
            raise Conflict(
                f"the action is at version {row['version']}, not {expected_version}: "
                "someone changed it since you read it; read it again"
            )
        plan_row = await uow.actions.plan(row["plan"])
        changes = domain.tracking_changes(
            row,
            given,
            plan_starts_on=plan_row["starts_on"],
            may_rate_independently="actions:admin" in by.scopes,
        )
        if changes:
            row = await _apply_tracking(uow, row, changes, by=by)
        view = (await uow.actions.views([row]))[0]
        await uow.commit()
        return view


async def _apply_tracking(
    uow: UnitOfWork,
    row: Mapping,
    changes: list[domain.FieldChange],
    *,
    by: Principal,
) -> dict:
    """Write checked tracking changes: the action, one history entry per field, its events. Never commits."""
    now = uow.now()
    values = {change.field: change.new for change in changes}
    values.update(
        completed_at=domain.completed_at_after(changes, current=row["completed_at"], now=now),
        updated_at=now,
        version=row["version"] + 1,
    )
    result = cast(  # an UPDATE's result is a cursor's, with its row count
        "CursorResult[Any]",
        await uow.session.execute(
            update(actions).where(actions.c.id == row["id"], actions.c.version == row["version"]).values(**values)
        ),
    )
    if result.rowcount != 1:
        raise Conflict("the action changed while this change was being made; read it again")
    await uow.actions.record(
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
    publish_tracking(uow, row, changes, now=now)
    return row


async def record_update(
    uow: UnitOfWork,
    *,
    action_id: str,
    narrative: str,
    on: date | None,
    by: Principal,
) -> dict:
    """A dated narrative update on an action's progress, kept in its history."""
    async with uow:
        row = await uow.actions.get(action_id)
        now = uow.now()
        on = on or domain.today_in_kent(now)
        await uow.actions.record(
            [{"action_id": action_id, "kind": "update", "narrative": narrative, "update_on": on}], by=by
        )
        await uow.session.execute(update(actions).where(actions.c.id == action_id).values(updated_at=now))
        uow.publish(ActionUpdateRecordedV1(**event_state(row), update_on=on, recorded_at=now))
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
        source = await uow.actions.get(action_id)
        query = select(actions)
        if to is not None:
            query = query.where(actions.c.id == to)
        else:
            query = query.where(actions.c.plan == source["plan"], actions.c.cell == cell, actions.c.number == number)
        target = (await uow.session.execute(query)).mappings().first()
        if target is None:
            named = f"action {to}" if to else f"{cell} action {number} in plan {source['plan']!r}"
            raise ValidationFailed([{"field": "to" if to else "number", "reason": f"there is no {named}"}])
        domain.check_link(from_action=source, to_action=dict(target))
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
        result = cast(  # an INSERT's result is a cursor's, with the new key
            "CursorResult[Any]",
            await uow.session.execute(
                insert(action_links).values(
                    from_action=source["id"],
                    to_action=target["id"],
                    source="manual",
                    note=note,
                    created_at=now,
                    created_by=by.subject,
                )
            ),
        )
        await uow.actions.record(
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
        key = result.inserted_primary_key
        assert key is not None  # a single row inserted has its key
        link_id = key[0]
        names = await uow.actions.cell_names()
        await uow.commit()
        return link_view(link_id, target, source="manual", note=note, names=names)


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
        await uow.actions.record(
            [{"action_id": action_id, "kind": "unlinked", "old": {"to": link["to_action"]}}], by=by
        )
        await uow.commit()
