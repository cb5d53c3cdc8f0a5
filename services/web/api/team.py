"""A hub's team on the queue page: assign a case to me, hand it to a colleague, release it; filter by holder, sort.

The rules are the fulfilment API's (`/v1/assignments/{id}/take`, `/hand-over`, `/release`): a refusal (a colleague
holds it) comes back to the queue as the API words it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse

from services.web.api import HUB_STAFF, Clients_, Csrf, person
from services.web.clients import ApiError, Caller

router = APIRouter(prefix="/hub")
Worker = Annotated[Caller, Depends(person(*HUB_STAFF))]

SORTS = {"urgency": "Most urgent first", "due": "Soonest due first", "routed": "Oldest first"}
DONE = {"take": "You have the case", "hand-over": "Handed over", "release": "Released: it is unassigned now"}


def queue_choices(query, worker: Caller) -> tuple[str | None, str | None]:
    """The holder filter (mine, unassigned, a colleague's id) and the sort the queue page was asked for."""
    holder = (query.get("holder") or "").strip()[:200] or None
    sort = query.get("sort") if query.get("sort") in SORTS else None
    return holder, sort


@router.post("/cases/{assignment_id}/take", dependencies=[Csrf])
async def take(request: Request, assignment_id: str, worker: Worker, clients: Clients_):
    return await _change(request, assignment_id, "take", worker, clients)


@router.post("/cases/{assignment_id}/hand-over", dependencies=[Csrf])
async def hand_over(request: Request, assignment_id: str, worker: Worker, clients: Clients_):
    return await _change(request, assignment_id, "hand-over", worker, clients)


@router.post("/cases/{assignment_id}/release", dependencies=[Csrf])
async def release(request: Request, assignment_id: str, worker: Worker, clients: Clients_):
    return await _change(request, assignment_id, "release", worker, clients)


async def _change(request: Request, assignment_id: str, change: str, worker: Caller, clients) -> RedirectResponse:
    form = await request.form()
    name = (request.state.session.user or {}).get("name")
    body: dict = {"by_name": name}
    back = str(form.get("back") or "/hub")
    if not back.startswith("/hub"):
        back = "/hub"
    if change == "hand-over":
        to = str(form.get("to") or "")
        colleagues = await clients.fulfilment.call("GET", f"/v1/hubs/{worker.hub or 'thanet'}/staff", caller=worker)
        known = {c["id"]: c["name"] for c in colleagues}
        if to not in known:
            request.state.session.set("flash_problem", "Choose the colleague to hand the case to")
            return RedirectResponse(back, status_code=303)
        body.update(to=to, to_name=known[to])
    try:
        await clients.fulfilment.call("POST", f"/v1/assignments/{assignment_id}/{change}", caller=worker, json=body)
        request.state.session.set("flash", DONE[change] + (f" to {body['to_name']}" if change == "hand-over" else ""))
    except ApiError as error:
        if error.status == 422 and change == "hand-over":  # no longer one of the hub's staff
            reasons = [e.get("reason") for e in error.field_errors if e.get("field") == "to"]
            request.state.session.set("flash_problem", f"{body['to_name']} {reasons[0]}" if reasons else str(error))
            return RedirectResponse(back, status_code=303)
        if error.status != 409:
            raise
        request.state.session.set(
            "flash_problem", error.problem.get("detail") or "That cannot be done to this case now"
        )
    return RedirectResponse(back, status_code=303)
