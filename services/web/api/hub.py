"""The hub worker's pages: my hub's queue, a case, its transitions, notes and calls, today's run sheet.

Everything comes from the fulfilment API with the worker's own token, so a
worker sees only their hub: another hub's case is the API's 404, and so ours.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.web.api import HUB_STAFF, Clients_, Csrf, person, team
from services.web.app import render
from services.web.clients import ApiError, Caller

router = APIRouter(prefix="/hub")
Worker = Annotated[Caller, Depends(person(*HUB_STAFF))]

STATUS_LABELS = {
    "routed": "New",
    "accepted": "Accepted",
    "in_progress": "In progress",
    "fulfilled": "Fulfilled",
    "unable_to_fulfil": "Unable to fulfil",
    "rejected": "Rejected",
    "cancelled": "Cancelled",
    "out_of_area": "Out of area",
    "triage": "Triage",
    "passed_on": "Passed on",
}
OPEN_STATUSES = ("routed", "accepted", "in_progress")
URGENCY_LABELS = {
    "today": "Today",
    "within-48-hours": "Within 48 hours",
    "this-week": "This week",
    "routine": "Routine",
}
URGENCY_RANK = {u: i for i, u in enumerate(URGENCY_LABELS)}
TYPE_LABELS = {
    "food": "Food",
    "prescription": "Prescription collection",
    "befriending": "Befriending",
    "financial": "Financial hardship",
    "practical": "Practical help",
    "other": "Other",
}
# The fulfilment API's codes (its public contract), in a hub worker's words.
REJECT_REASONS = {
    "wrong-district": "Wrong district",
    "not-eligible": "Not eligible",
    "duplicate": "Duplicate",
    "other": "Other reason",
}
UNABLE_OUTCOMES = {
    "resident-unreachable": "Could not reach the resident",
    "declined-by-resident": "Resident declined",
    "need-met-elsewhere": "Need met elsewhere",
    "not-eligible": "Not eligible",
    "no-capacity": "No capacity",
    "moved-away": "Moved away",
    "other": "Other",
}
FULFILLED_OUTCOMES = {
    "delivered": "Delivered",
    "arranged-with-partner": "Arranged with a partner",
    "signposted": "Signposted",
}
CONTACT_OUTCOMES = {
    "reached": "Spoke to them",
    "no-answer": "No answer",
    "voicemail": "Left a voicemail",
    "wrong-number": "Wrong number",
}
ACTIONS = {
    "accepted": "Accept",
    "in_progress": "Start",
    "fulfilled": "Mark fulfilled",
    "unable_to_fulfil": "Unable to fulfil",
    "rejected": "Reject",
}


def _hub_of(request: Request, worker: Caller) -> str:
    """The worker's hub; an administrator picks one (`?hub=`)."""
    return worker.hub or request.query_params.get("hub") or "thanet"


def due(item: dict) -> str | None:
    """The next deadline: accept by, until accepted; then fulfil by."""
    return item.get("accept_due_at") if item["status"] == "routed" else item.get("fulfil_due_at")


def queue_order(items: list[dict]) -> list[dict]:
    """Most urgent first, then the soonest due; overdue cases lead within their urgency."""
    return sorted(
        items, key=lambda i: (URGENCY_RANK.get(i["urgency"], 9), not i["overdue"], due(i) or "9999", i["received_at"])
    )


async def _queue(
    clients,
    worker: Caller,
    hub: str,
    *,
    status,
    type_,
    overdue,
    follow_up,
    limit: int = 500,
    holder: str | None = None,
    sort: str | None = None,
):
    """The team's queue (fulfilment's `/queue`): in the API's order when a sort is chosen, else most urgent first."""
    params = {
        "status": list(status),
        "type": type_,
        "overdue": overdue,
        "follow_up": follow_up,
        "limit": limit,
        "holder": holder,
        "sort": sort,
    }
    answer = await clients.fulfilment.call("GET", f"/v1/hubs/{hub}/queue", caller=worker, params=params)
    items = answer["items"] if sort else queue_order(answer["items"])
    return items, answer["total"], answer["total"] > answer["count"]


@router.get("")
async def queue_page(request: Request, worker: Worker, clients: Clients_):
    hub = _hub_of(request, worker)
    query = request.query_params
    status = [s for s in query.getlist("status") if s in STATUS_LABELS] or list(OPEN_STATUSES)
    type_ = query.get("type") if query.get("type") in TYPE_LABELS else None
    overdue = True if query.get("overdue") == "yes" else None
    follow_up = True if query.get("follow_up") == "yes" else None
    holder, sort = team.queue_choices(query, worker)
    items, total, cut = await _queue(
        clients, worker, hub, status=status, type_=type_, overdue=overdue, follow_up=follow_up, holder=holder, sort=sort
    )
    hubs = await clients.fulfilment.call("GET", "/v1/hubs", caller=worker)
    hub_name = next((h["name"] for h in hubs if h["slug"] == hub), hub)
    colleagues = await clients.fulfilment.call("GET", f"/v1/hubs/{hub}/staff", caller=worker)
    return render(
        request,
        "hub/queue.html",
        title=f"{hub_name} hub: cases",
        column="full",
        hub=hub,
        hub_name=hub_name,
        items=items,
        total=total,
        cut=cut,
        status=status,
        type_=type_,
        overdue=overdue,
        follow_up=follow_up,
        labels=STATUS_LABELS,
        urgencies=URGENCY_LABELS,
        types=TYPE_LABELS,
        due=due,
        errors={},
        flash=request.state.session.pop("flash"),
        holder=holder,
        sort=sort,
        sorts=team.SORTS,
        colleagues=colleagues,
        me=worker.subject,
        problem=request.state.session.pop("flash_problem"),
        back=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
    )


@router.get("/cases/{assignment_id}")
async def case_page(request: Request, assignment_id: str, worker: Worker, clients: Clients_):
    return await _case(request, clients, worker, assignment_id)


async def _case(
    request: Request,
    clients,
    worker: Caller,
    assignment_id: str,
    *,
    errors: dict | None = None,
    status_code: int = 200,
    done: str | None = None,
):
    case = await clients.fulfilment.call("GET", f"/v1/assignments/{assignment_id}", caller=worker)
    hubs = await clients.fulfilment.call("GET", "/v1/hubs", caller=worker)
    return render(
        request,
        "hub/case.html",
        status_code=status_code,
        column="full",
        title=f"{case['reference']}: {TYPE_LABELS.get(case['type'], case['type'])}",
        case=case,
        hubs=[h for h in hubs if h["slug"] != case.get("hub")],
        actions=ACTIONS,
        labels=STATUS_LABELS,
        urgencies=URGENCY_LABELS,
        types=TYPE_LABELS,
        reject_reasons=REJECT_REASONS,
        unable_outcomes=UNABLE_OUTCOMES,
        fulfilled_outcomes=FULFILLED_OUTCOMES,
        contact_outcomes=CONTACT_OUTCOMES,
        errors=errors or {},
        done=done or request.query_params.get("done"),
        due=due(case),
    )


@router.post("/cases/{assignment_id}/transitions", dependencies=[Csrf])
async def transition(request: Request, assignment_id: str, worker: Worker, clients: Clients_):
    form = await request.form()
    to = str(form.get("to", ""))
    body = {"to": to}
    errors = {}
    if to == "rejected":
        body["reason"] = str(form.get("reason", "")) or None
        body["hub"] = str(form.get("hub", "")) or None
        if body["reason"] not in REJECT_REASONS:
            errors["reason"] = "Select why you are rejecting it"
    elif to == "unable_to_fulfil":
        body["outcome"] = str(form.get("unable_outcome", "")) or None
        if body["outcome"] not in UNABLE_OUTCOMES:
            errors["unable_outcome"] = "Select why you could not help"
    elif to == "fulfilled":
        body["outcome"] = str(form.get("fulfilled_outcome", "")) or None
    elif to not in ACTIONS:
        errors["actions"] = "Choose what to do with the case"
    note = str(form.get("note", "")).strip()
    if note:
        body["note"] = note[:2000]
    if errors:
        return await _case(request, clients, worker, assignment_id, errors=errors, status_code=400)
    try:
        result = await clients.fulfilment.call(
            "POST",
            f"/v1/assignments/{assignment_id}/transitions",
            caller=worker,
            json={k: v for k, v in body.items() if v is not None},
        )
    except ApiError as error:
        if error.status not in (409, 422):
            raise
        message = error.problem.get("detail") or "That cannot be done to this case now"
        return await _case(request, clients, worker, assignment_id, errors={"actions": message}, status_code=400)
    if to == "rejected":
        where = result.get("hub")
        request.state.session.set(
            "flash",
            f"Rejected: it has gone to the {where} hub"
            if where and where != worker.hub
            else "Rejected: Kent Together will place it",
        )
        return RedirectResponse("/hub", status_code=303)
    return RedirectResponse(f"/hub/cases/{assignment_id}?done={to}", status_code=303)


@router.post("/cases/{assignment_id}/contact-attempts", dependencies=[Csrf])
async def contact_attempt(request: Request, assignment_id: str, worker: Worker, clients: Clients_):
    form = await request.form()
    outcome = str(form.get("outcome", ""))
    if outcome not in CONTACT_OUTCOMES:
        return await _case(
            request,
            clients,
            worker,
            assignment_id,
            status_code=400,
            errors={"outcome": "Select what happened when you called"},
        )
    note = str(form.get("call_note", "")).strip()[:2000] or None
    await clients.fulfilment.call(
        "POST",
        f"/v1/assignments/{assignment_id}/contact-attempts",
        caller=worker,
        json={"outcome": outcome, "note": note},
    )
    return RedirectResponse(f"/hub/cases/{assignment_id}?done=call", status_code=303)


@router.post("/cases/{assignment_id}/notes", dependencies=[Csrf])
async def add_note(request: Request, assignment_id: str, worker: Worker, clients: Clients_):
    text = str((await request.form()).get("text", "")).strip()
    if not text or len(text) > 4000:
        return await _case(
            request,
            clients,
            worker,
            assignment_id,
            status_code=400,
            errors={"text": "Enter the note" if not text else "A note must be 4,000 characters or fewer"},
        )
    await clients.fulfilment.call("POST", f"/v1/assignments/{assignment_id}/notes", caller=worker, json={"text": text})
    return RedirectResponse(f"/hub/cases/{assignment_id}?done=note", status_code=303)


@router.post("/cases/{assignment_id}/follow-up", dependencies=[Csrf])
async def follow_up(request: Request, assignment_id: str, worker: Worker, clients: Clients_):
    form = await request.form()
    flag = form.get("follow_up") == "yes"
    body: dict = {"follow_up": flag}
    on = str(form.get("follow_up_on", "")).strip()
    if flag and on:
        try:
            body["follow_up_on"] = date.fromisoformat(on).isoformat()
        except ValueError:
            return await _case(
                request,
                clients,
                worker,
                assignment_id,
                status_code=400,
                errors={"follow_up_on": "Enter the date as YYYY-MM-DD, for example 2026-12-24"},
            )
    await clients.fulfilment.call("PATCH", f"/v1/assignments/{assignment_id}", caller=worker, json=body)
    return RedirectResponse(f"/hub/cases/{assignment_id}?done=follow-up", status_code=303)


RUN_SHEET_COLUMNS = ("reference", "type", "urgency", "status", "due", "resident_name", "phone", "postcode", "details")


async def _run_sheet(clients, worker: Caller, hub: str) -> list[dict]:
    """Today's work: every accepted or started case, most urgent first."""
    items, _, _ = await _queue(
        clients, worker, hub, status=["accepted", "in_progress"], type_=None, overdue=None, follow_up=None
    )
    return [{**i, "due": due(i)} for i in items]


@router.get("/run-sheet")
async def run_sheet(request: Request, worker: Worker, clients: Clients_):
    hub = _hub_of(request, worker)
    rows = await _run_sheet(clients, worker, hub)
    return render(
        request,
        "hub/run-sheet.html",
        title=f"Run sheet for {date.today():%-d %B %Y}",
        column="full",
        hub=hub,
        rows=rows,
        types=TYPE_LABELS,
        urgencies=URGENCY_LABELS,
        labels=STATUS_LABELS,
    )


@router.get("/run-sheet.csv")
async def run_sheet_csv(request: Request, worker: Worker, clients: Clients_):
    hub = _hub_of(request, worker)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RUN_SHEET_COLUMNS)
    for row in await _run_sheet(clients, worker, hub):
        writer.writerow([_csv_safe(row.get(c)) for c in RUN_SHEET_COLUMNS])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="run-sheet-{hub}-{stamp}.csv"'},
    )


def _csv_safe(value) -> str:
    """A cell a spreadsheet shows as text: a resident's '=HYPERLINK(…)' is not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
