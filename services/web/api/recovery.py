"""The recovery lead's pages: the plan's actions by cell, theme, RAG, status, priority, overdue; an action's page
with its history and links; status, RAG (with its narrative) and progress; the plan's upload with its per-row
report; the CSV and .xlsx exports.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.web.api import RECOVERY_LEADS, Clients_, Csrf, person
from services.web.app import render
from services.web.clients import ApiError, Caller

router = APIRouter(prefix="/actions")
Lead = Annotated[Caller, Depends(person(*RECOVERY_LEADS))]

STATUSES = {
    "not-started": "Not started",
    "on-track": "On track",
    "at-risk": "At risk",
    "off-track": "Off track",
    "blocked": "Blocked",
    "complete": "Complete",
    "cancelled": "Cancelled",
}
RAGS = {"red": "Red", "amber": "Amber", "green": "Green"}
PRIORITIES = {"essential": "Essential", "important": "Important", "desirable": "Desirable"}
FILTERS = ("cell", "theme", "rag", "status", "priority")
DEFAULT_PLAN = "krf-recovery-2020"
MAX_UPLOAD = 5 * 1024 * 1024


def _filters(request: Request) -> dict:
    query = request.query_params
    chosen = {name: query.get(name) or None for name in FILTERS}
    chosen["overdue"] = "true" if query.get("overdue") == "yes" else None
    return chosen


@router.get("")
async def actions_page(request: Request, lead: Lead, clients: Clients_):
    chosen = _filters(request)
    everything = await clients.actions.call("GET", "/v1/actions", caller=lead)
    shown = (
        await clients.actions.call("GET", "/v1/actions", caller=lead, params=chosen)
        if any(chosen.values())
        else everything
    )
    cells = sorted({(a["cell"], a["cell_name"]) for a in everything["actions"]})
    themes = sorted({a["theme"] for a in everything["actions"] if a["theme"]})
    query = "&".join(f"{k}={v}" for k, v in chosen.items() if v)
    return render(
        request,
        "recovery/actions.html",
        title="Recovery actions",
        column="full",
        actions=shown["actions"],
        count=shown["count"],
        cells=cells,
        themes=themes,
        chosen=chosen,
        statuses=STATUSES,
        rags=RAGS,
        priorities=PRIORITIES,
        export_query=query,
        errors={},
    )


@router.get("/export.csv")
async def export_csv(request: Request, lead: Lead, clients: Clients_):
    return await _export(request, lead, clients, "csv", "text/csv; charset=utf-8")


@router.get("/export.xlsx")
async def export_xlsx(request: Request, lead: Lead, clients: Clients_):
    return await _export(
        request, lead, clients, "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )


async def _export(request: Request, lead: Caller, clients, suffix: str, media_type: str) -> Response:
    answer = await clients.actions.call(
        "GET", f"/v1/actions/export.{suffix}", caller=lead, params=_filters(request), raw=True
    )
    disposition = answer.headers.get("content-disposition") or f'attachment; filename="recovery-actions.{suffix}"'
    return Response(answer.content, media_type=media_type, headers={"Content-Disposition": disposition})


@router.get("/import")
async def import_page(request: Request, lead: Lead):
    return render(request, "recovery/import.html", title="Upload the plan", errors={}, report=None, plan=DEFAULT_PLAN)


@router.post("/import", dependencies=[Csrf])
async def upload_plan(request: Request, lead: Lead, clients: Clients_):
    form = await request.form()
    upload = form.get("file")
    plan = str(form.get("plan") or DEFAULT_PLAN).strip()
    dry_run = form.get("dry_run") == "yes"
    if upload is None or not getattr(upload, "filename", ""):
        return render(
            request,
            "recovery/import.html",
            status_code=400,
            title="Upload the plan",
            plan=plan,
            errors={"file": "Select the plan's file: its text, or the exported .csv or .xlsx"},
            report=None,
        )
    content = await upload.read(MAX_UPLOAD + 1)
    if len(content) > MAX_UPLOAD:
        return render(
            request,
            "recovery/import.html",
            status_code=400,
            title="Upload the plan",
            plan=plan,
            errors={"file": "The file must be 5 MB or smaller"},
            report=None,
        )
    try:
        report = await clients.actions.call(
            "POST",
            f"/v1/plans/{plan}/import",
            caller=lead,
            params={"dry_run": "true" if dry_run else None},
            files={"file": (upload.filename, content, upload.content_type or "application/octet-stream")},
        )
        rejected = False
    except ApiError as error:
        if error.status not in (413, 422):
            raise
        report = error.problem.get("report")
        if report is None:
            reasons = "; ".join(
                f"{e.get('field')}: {e.get('reason')}" for e in error.field_errors
            ) or error.problem.get("detail", "the file was refused")
            return render(
                request,
                "recovery/import.html",
                status_code=400,
                title="Upload the plan",
                plan=plan,
                errors={"file": f"The file could not be read: {reasons}"},
                report=None,
            )
        rejected = True
    return render(
        request,
        "recovery/import.html",
        status_code=400 if rejected else 200,
        title="Upload report" if not rejected else "Upload refused",
        plan=plan,
        errors={},
        report=report,
        rejected=rejected,
        column="full",
    )


@router.get("/{action_id}")
async def action_page(request: Request, action_id: str, lead: Lead, clients: Clients_):
    return await _action(request, clients, lead, action_id)


async def _action(request, clients, lead, action_id, *, errors=None, values=None, status_code=200):
    action = await clients.actions.call("GET", f"/v1/actions/{action_id}", caller=lead)
    return render(
        request,
        "recovery/action.html",
        status_code=status_code,
        title=f"{action['cell_name']} action {action['number']}",
        column="full",
        action=action,
        statuses=STATUSES,
        rags=RAGS,
        errors=errors or {},
        values=values or {},
        done=request.query_params.get("done"),
    )


@router.post("/{action_id}/tracking", dependencies=[Csrf])
async def track(request: Request, action_id: str, lead: Lead, clients: Clients_):
    form = await request.form()
    values = {
        k: str(form.get(k, "")).strip()[:4000]
        for k in ("status", "rag", "rag_narrative", "progress", "version", "blocked_reason")
    }
    errors, body = {}, {}
    if values["status"] in STATUSES:
        body["status"] = values["status"]
    if values["status"] == "blocked":
        body["blocked_reason"] = values["blocked_reason"] or None
    if values["rag"] in RAGS:
        body["rag"] = values["rag"]
        if not values["rag_narrative"]:
            errors["rag_narrative"] = (
                "Say why it is " + RAGS[values["rag"]].lower() + ": a RAG rating needs a narrative"
            )
        body["rag_narrative"] = values["rag_narrative"]
    if values["progress"]:
        if not values["progress"].isdigit() or int(values["progress"]) > 100:
            errors["progress"] = "Enter progress as a whole number from 0 to 100"
        else:
            body["progress"] = int(values["progress"])
    if values["version"].isdigit():
        body["version"] = int(values["version"])
    if errors:
        return await _action(request, clients, lead, action_id, errors=errors, values=values, status_code=400)
    try:
        await clients.actions.call("PATCH", f"/v1/actions/{action_id}", caller=lead, json=body)
    except ApiError as error:
        if error.status == 409:
            return await _action(
                request,
                clients,
                lead,
                action_id,
                values=values,
                status_code=409,
                errors={"status": "Someone changed this action while you were looking at it: check it and save again"},
            )
        if error.status != 422:
            raise
        found = {str(e.get("field")): str(e.get("reason")) for e in error.field_errors}
        return await _action(
            request,
            clients,
            lead,
            action_id,
            values=values,
            status_code=400,
            errors={
                k
                if k in ("status", "rag", "rag_narrative", "progress", "blocked_reason")
                else "status": f"{k.replace('_', ' ')}: {v}"
                for k, v in found.items()
            },
        )
    return RedirectResponse(f"/actions/{action_id}?done=tracking", status_code=303)


@router.post("/{action_id}/updates", dependencies=[Csrf])
async def record_update(request: Request, action_id: str, lead: Lead, clients: Clients_):
    narrative = str((await request.form()).get("narrative", "")).strip()
    if not narrative or len(narrative) > 4000:
        return await _action(
            request,
            clients,
            lead,
            action_id,
            status_code=400,
            errors={
                "narrative": "Enter the update" if not narrative else "An update must be 4,000 characters or fewer"
            },
        )
    await clients.actions.call("POST", f"/v1/actions/{action_id}/updates", caller=lead, json={"narrative": narrative})
    return RedirectResponse(f"/actions/{action_id}?done=update", status_code=303)
