"""HTTP in, schemas out: the actions API."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Literal, cast

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile
from pydantic import BeforeValidator

from services.actions import domain, service, spreadsheet
from services.actions.schemas import (
    ActionList,
    ActionOut,
    ActionPatch,
    ActionView,
    ImportReport,
    Kind,
    LatestUpdate,
    LinkIn,
    LinkOut,
    PlanOut,
    PlanPatch,
    PlanProgress,
    PlanSlug,
    Priority,
    ProgressUpdateIn,
    Rag,
    Snapshot,
    Status,
    Timescale,
    TrackingImportReport,
)
from shared.app import Runtime, body_schema, read_body
from shared.auth import Principal, require
from shared.errors import PayloadTooLarge, ValidationFailed

if TYPE_CHECKING:
    from services.actions.app import ActionsSettings

router = APIRouter(prefix="/v1")

Reader = Annotated[Principal, Depends(require("actions:read"))]
Writer = Annotated[Principal, Depends(require("actions:write"))]

CSV = "text/csv; charset=utf-8"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


async def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


Rt = Annotated[Runtime, Depends(runtime)]


def _lower(value):
    return value.lower() if isinstance(value, str) else value


def action_filters(
    plan: Annotated[PlanSlug | None, Query(description="A plan's slug, e.g. krf-recovery-2020")] = None,
    cell: Annotated[list[str] | None, Query(description="Cell slugs, e.g. infrastructure (repeat for several)")] = None,
    theme: Annotated[str | None, Query(max_length=200, description="Infrastructure theme, by name or slug")] = None,
    priority: Annotated[list[Annotated[Priority, BeforeValidator(_lower)]] | None, Query()] = None,
    status: Annotated[list[Status] | None, Query()] = None,
    rag: Annotated[list[Rag] | None, Query()] = None,
    timescale: Annotated[list[Annotated[Timescale, BeforeValidator(_lower)]] | None, Query()] = None,
    kind: Annotated[list[Annotated[Kind, BeforeValidator(_lower)]] | None, Query()] = None,
    lead: Annotated[str | None, Query(max_length=200, description="Part of a lead organisation or named lead")] = None,
    overdue: Annotated[bool | None, Query(description="true: due date passed, not complete or cancelled")] = None,
) -> service.ActionFilters:
    return service.ActionFilters(
        plan=plan,
        cell=tuple(cell or ()),
        theme=theme,
        priority=tuple(priority or ()),
        status=tuple(status or ()),
        rag=tuple(rag or ()),
        timescale=tuple(timescale or ()),
        kind=tuple(kind or ()),
        lead=lead,
        overdue=overdue,
    )


Filters = Annotated[service.ActionFilters, Depends(action_filters)]


# --- plans ----------------------------------------------------------------------------------


@router.post(
    "/plans/{plan}/import",
    response_model=ImportReport,
    tags=["plans"],
    summary="Import a plan's actions from a file: the plan's tab-separated text, or the export's CSV or .xlsx",
    responses={
        200: {"description": "The per-row report: created, updated or unchanged"},
        422: {"description": "Rows rejected (each with its reason, and the whole report): nothing was changed"},
    },
)
async def import_plan(
    plan: PlanSlug,
    request: Request,
    by: Writer,
    rt: Rt,
    file: Annotated[UploadFile, File(description="The plan file")],
    title: Annotated[str | None, Form(max_length=300)] = None,
    starts_on: Annotated[date | None, Form(description="The plan's start: due dates count from it")] = None,
    dry_run: Annotated[bool, Query(description="Report what would change, and change nothing")] = False,
):
    return await service.import_plan(
        rt.uow(),
        plan=plan,
        upload=await _upload(file, rt),
        by=by,
        title=title,
        starts_on=starts_on,
        dry_run=dry_run,
    )


async def _upload(file: UploadFile, rt: Runtime) -> service.PlanUpload:
    """An uploaded file, refused (413) above the settings' `max_import_bytes`."""
    limit = cast("ActionsSettings", rt.settings).max_import_bytes
    content = await file.read(limit + 1)
    if len(content) > limit:
        raise PayloadTooLarge(f"the file is over {limit} bytes")
    return service.PlanUpload(filename=file.filename, content=content)


@router.get("/plans", response_model=list[PlanOut], tags=["plans"])
async def list_plans(by: Reader, rt: Rt):
    return await service.list_plans(rt.uow(reading=True))


@router.get("/plans/{plan}", response_model=PlanOut, tags=["plans"])
async def get_plan(plan: PlanSlug, by: Reader, rt: Rt):
    return await service.get_plan(rt.uow(reading=True), plan)


@router.patch(
    "/plans/{plan}",
    response_model=PlanOut,
    tags=["plans"],
    summary="Rename a plan or move its start (every baseline due date moves with it)",
)
async def change_plan(plan: PlanSlug, patch: PlanPatch, by: Writer, rt: Rt):
    return await service.change_plan(
        rt.uow(),
        plan=plan,
        title=patch.title,
        starts_on=patch.starts_on,
        by=by,
    )


@router.get(
    "/plans/{plan}/snapshot",
    response_model=Snapshot,
    tags=["plans"],
    summary="Every action of the plan as it stood at a date, for quarterly reporting",
    responses={200: {"content": {"text/csv": {}, XLSX: {}}}},
)
async def plan_snapshot(
    plan: PlanSlug,
    by: Reader,
    rt: Rt,
    as_at: Annotated[
        str | None, Query(description="YYYY-MM-DD (the end of that day in Kent) or a time with zone")
    ] = None,
    format: Annotated[Literal["json", "csv", "xlsx"], Query()] = "json",
):
    instant = _instant(as_at)
    snapshot = await service.plan_snapshot(rt.uow(reading=True), plan=plan, as_at=instant)
    if format == "json":
        return snapshot
    rows = spreadsheet.export_rows(snapshot["actions"])
    name = f"snapshot-{plan}-{domain.today_in_kent(instant).isoformat()}.{format}"
    if format == "csv":
        return _download(spreadsheet.to_csv(rows), CSV, name)
    about = [("Plan", plan), ("As at (UTC)", instant.replace(microsecond=0)), ("Actions", snapshot["count"])]
    return _download(spreadsheet.to_xlsx(rows, about=about), XLSX, name)


def _instant(as_at: str | None) -> datetime:
    """The instant a snapshot is for: the end of a day in Kent, or a time given with its zone."""
    now = datetime.now(UTC)
    if as_at is None:
        return now
    try:
        if len(as_at) == 10:
            day = date.fromisoformat(as_at)
            future = day > domain.today_in_kent(now)
            instant = domain.end_of_day_in_kent(day)
        else:
            instant = datetime.fromisoformat(as_at.replace("Z", "+00:00"))
            if instant.tzinfo is None:
                raise ValueError("a time needs a zone, e.g. 2020-12-31T17:00:00Z")
            future = instant > now
    except ValueError as error:
        reason = str(error) if "zone" in str(error) else "is not a date (YYYY-MM-DD) or a time with a zone"
        raise ValidationFailed([{"field": "as_at", "in": "query", "reason": reason}]) from None
    if future:
        raise ValidationFailed([{"field": "as_at", "in": "query", "reason": "is in the future"}])
    return min(instant, now)  # today's snapshot is the state now


# --- actions --------------------------------------------------------------------------------


@router.get("/actions", response_model=ActionList, tags=["actions"], summary="Actions, filtered")
async def list_actions(filters: Filters, by: Reader, rt: Rt):
    views = await service.list_actions(rt.uow(reading=True), filters=filters)
    return {"count": len(views), "actions": views}


@router.get(
    "/actions/export.csv",
    tags=["actions"],
    response_class=Response,
    summary="The actions the filters select, as CSV (UTF-8) in the layout an import reads back",
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_csv(filters: Filters, by: Reader, rt: Rt):
    content, name = await service.export_actions(rt.uow(reading=True), filters=filters, file_format="csv")
    return _download(content, CSV, name)


@router.get(
    "/actions/export.xlsx",
    tags=["actions"],
    response_class=Response,
    summary="The actions the filters select, as an Excel workbook in the layout an import reads back",
    responses={200: {"content": {XLSX: {}}}},
)
async def export_xlsx(filters: Filters, by: Reader, rt: Rt):
    content, name = await service.export_actions(rt.uow(reading=True), filters=filters, file_format="xlsx")
    return _download(content, XLSX, name)


def _download(content: bytes, media_type: str, name: str) -> Response:
    return Response(content, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.post(
    "/actions/import",
    response_model=TrackingImportReport,
    tags=["actions"],
    summary="Read back an edited export's tracking (CSV or .xlsx): each changed cell a dated entry in the history",
    description=(
        "Status, Blocked reason, RAG, RAG narrative, Self rating (and commentary), Independent rating (and "
        "commentary, administrators only), Progress % and Agreed due date are read from each row, matched to "
        "its action by 'Action id'. A row whose action changed after its 'Last updated' is refused, so a stale "
        "file never undoes someone's change. All or nothing: any refused row and nothing changes. "
        "Try `dry_run=true` first."
    ),
    responses={
        422: {
            "description": "Rows refused, each cell with its row, column and reason (and the whole "
            "report): nothing was changed"
        }
    },
)
async def import_tracking(
    request: Request,
    by: Writer,
    rt: Rt,
    file: Annotated[UploadFile, File(description="The export, edited: .csv or .xlsx")],
    dry_run: Annotated[bool, Query(description="Report what would change, and change nothing")] = False,
):
    return await service.import_tracking(
        rt.uow(),
        upload=await _upload(file, rt),
        by=by,
        dry_run=dry_run,
    )


@router.get(
    "/actions/{action_id}",
    response_model=ActionOut,
    tags=["actions"],
    summary="One action with its links both ways and its whole history",
)
async def get_action(action_id: str, response: Response, by: Reader, rt: Rt):
    view = await service.get_action(rt.uow(reading=True), action_id)
    response.headers["ETag"] = f'"{view["version"]}"'
    return view


@router.patch(
    "/actions/{action_id}",
    response_model=ActionView,
    tags=["actions"],
    summary="Track an action: status, RAG with its narrative, ratings, progress, agreed due date",
    openapi_extra=body_schema(ActionPatch),
    responses={
        409: {"description": "The action changed since `version`, or the status change is not allowed"},
        422: {"description": "Invalid fields: each named with the reason"},
    },
)
async def change_action(action_id: str, request: Request, response: Response, by: Writer, rt: Rt):
    patch = await read_body(request, ActionPatch)
    view = await service.change_action(
        rt.uow(),
        action_id=action_id,
        given=patch.given(),
        by=by,
    )
    response.headers["ETag"] = f'"{view["version"]}"'
    return view


@router.post(
    "/actions/{action_id}/updates",
    status_code=201,
    response_model=LatestUpdate,
    tags=["actions"],
    summary="Record a dated progress update (a narrative) on an action",
)
async def record_update(action_id: str, update: ProgressUpdateIn, by: Writer, rt: Rt):
    return await service.record_update(
        rt.uow(),
        action_id=action_id,
        narrative=update.narrative,
        on=update.on,
        by=by,
    )


@router.post(
    "/actions/{action_id}/links",
    status_code=201,
    response_model=LinkOut,
    tags=["actions"],
    summary="Record that this action depends on another of the same plan",
    responses={409: {"description": "The two actions are linked already"}},
)
async def link_actions(action_id: str, link: LinkIn, by: Writer, rt: Rt):
    return await service.link_actions(
        rt.uow(),
        action_id=action_id,
        to=link.to,
        cell=link.cell,
        number=link.number,
        note=link.note,
        by=by,
    )


@router.delete(
    "/actions/{action_id}/links/{link_id}",
    status_code=204,
    tags=["actions"],
    summary="Remove a link added by hand",
)
async def unlink_actions(
    action_id: str,
    link_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="The link's id (a 64-bit database key)")],
    by: Writer,
    rt: Rt,
):
    await service.unlink_actions(rt.uow(), action_id=action_id, link_id=link_id, by=by)
    return Response(status_code=204)


# --- for anyone -----------------------------------------------------------------------------

public = APIRouter(prefix="/v1/public")


@public.get(
    "/plans/{plan}/progress",
    response_model=PlanProgress,
    tags=["public"],
    summary="The plan's progress per cell and theme, for anyone: figures only, no sign-in",
)
async def plan_progress(plan: PlanSlug, response: Response, rt: Rt):
    response.headers["Cache-Control"] = "public, max-age=60"
    return await service.plan_progress(rt.uow(reading=True), plan=plan)
