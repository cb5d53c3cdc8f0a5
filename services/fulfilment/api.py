"""HTTP in, schemas out: the fulfilment API for hub staff and administrators."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from services.fulfilment import domain, service, webhooks
from services.fulfilment.domain import Status
from services.fulfilment.schemas import (
    AreaOut,
    AssignmentList,
    AssignmentOut,
    AssignmentPatch,
    ContactAttemptIn,
    DeliveryOut,
    FeedPage,
    HubOut,
    HubPatch,
    NoteIn,
    NoteOut,
    RejectedList,
    RequestStatusList,
    TransitionIn,
    TransitionOut,
)
from shared.app import Runtime
from shared.auth import Principal, require
from shared.errors import ValidationFailed
from shared.postcode import normalise_postcode
from shared.reference import normalise_reference

router = APIRouter(prefix="/v1")

Reader = Annotated[Principal, Depends(require("assignments:read"))]
Writer = Annotated[Principal, Depends(require("assignments:write"))]
Admin = Annotated[Principal, Depends(require("assignments:admin"))]
StatusReader = Annotated[Principal, Depends(require("status:read"))]
# Bounds the databases can hold: a larger number is a 422 naming the field, not a 500.
MAX_OFFSET = 10_000_000
MAX_CURSOR = 2**63 - 1
StatusNames = Annotated[str, Query(pattern="^[a-z_,]+$", max_length=200)]


async def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def routing(request: Request) -> service.Routing:
    return request.app.state.routing


Rt = Annotated[Runtime, Depends(runtime)]
Routing = Annotated[service.Routing, Depends(routing)]


def _hub_out(row: dict, by: Principal) -> HubOut:
    own = row["sla"] or {}
    # Where a hub's webhook goes is that hub's and the administrators' business only.
    sees_webhook = "assignments:admin" in by.scopes or by.hub == row["slug"]
    return HubOut(
        **{k: row[k] for k in ("slug", "name", "district_code", "email", "phone", "hours", "updated_at")},
        webhook_url=row["webhook_url"] if sees_webhook else None,
        has_webhook_secret=bool(row["webhook_secret"]) and sees_webhook,
        sla={
            urgency: {
                "accept_hours": sla.accept.total_seconds() / 3600,
                "fulfil_hours": sla.fulfil.total_seconds() / 3600,
            }
            for urgency in domain.URGENCIES
            for sla in [domain.sla_for(urgency, own)]
        },
    )


@router.get("/hubs", response_model=list[HubOut], tags=["hubs"], summary="The 12 district hubs")
async def list_hubs(by: Reader, rt: Rt):
    return [_hub_out(row, by) for row in await service.list_hubs(rt.uow(reading=True))]


@router.get("/hubs/{hub}", response_model=HubOut, tags=["hubs"])
async def get_hub(hub: str, by: Reader, rt: Rt):
    return _hub_out(await service.get_hub(rt.uow(reading=True), hub), by)


@router.patch(
    "/hubs/{hub}",
    response_model=HubOut,
    tags=["hubs"],
    summary="Edit a hub's contact details, hours, webhook or SLA hours (administrators)",
)
async def change_hub(hub: str, patch: HubPatch, by: Admin, rt: Rt, routing: Routing):
    values = patch.model_dump(mode="json", exclude_unset=True)
    if "sla" in values and values["sla"] is not None:
        values["sla"] = {u: {k: v for k, v in hours.items() if v is not None} for u, hours in values["sla"].items()}
    row = await service.change_hub(rt.uow(), slug=hub, values=values, by=by)
    routing.forget_hubs()
    return _hub_out(row, by)


@router.get(
    "/hubs/{hub}/assignments",
    response_model=AssignmentList,
    tags=["assignments"],
    summary="A hub's open assignments, oldest first; filter by status, type, overdue, follow-up; "
    "`count` is how many match",
)
async def hub_assignments(
    hub: str,
    request: Request,
    by: Reader,
    rt: Rt,
    status: Annotated[
        list[StatusNames] | None,
        Query(description="One or more, comma-separated or repeated; without it, the open ones"),
    ] = None,
    type: Annotated[str | None, Query(max_length=40)] = None,
    overdue: bool | None = None,
    follow_up: bool | None = None,
    closed: Annotated[
        bool, Query(description="Also the closed ones: fulfilled, unable to fulfil, cancelled, passed on")
    ] = False,
    erased: Annotated[bool, Query(description="Also those whose resident's details were erased")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
):
    service.check_hub_access(by, hub)
    await service.hub_exists(rt.uow(reading=True), hub)
    statuses = [s for value in status or [] for s in value.split(",") if s]
    unknown = sorted(set(statuses) - {str(s) for s in Status})
    if unknown:
        raise ValidationFailed(
            [
                {
                    "field": "status",
                    "in": "query",
                    "reason": f"unknown status {', '.join(unknown)}; one of {', '.join(str(s) for s in Status)}",
                }
            ]
        )
    items, total = await service.list_assignments(
        rt.uow(reading=True),
        hub=hub,
        statuses=statuses,
        request_type=type,
        overdue=overdue,
        follow_up=follow_up,
        limit=limit,
        offset=offset,
        closed=closed,
        erased=erased,
    )
    await _audit_list(rt, by, request, items, hub=hub)
    return {"items": items, "count": total}


@router.get(
    "/hubs/{hub}/rejected",
    response_model=RejectedList,
    tags=["assignments"],
    summary="The cases this hub rejected, newest first, and where each is now (no resident's details)",
)
async def hub_rejected(
    hub: str,
    request: Request,
    by: Reader,
    rt: Rt,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
):
    service.check_hub_access(by, hub)
    await service.hub_exists(rt.uow(reading=True), hub)
    items, total = await service.rejected_by_hub(rt.uow(reading=True), hub=hub, limit=limit, offset=offset)
    return {"items": items, "count": total}


async def _audit_list(rt: Runtime, by: Principal, request: Request, items: list, **detail) -> None:
    """A list shows each resident's request: one audit row per referral seen, none for an empty page."""
    referral_ids = sorted({str(_get(item, "referral_id")) for item in items})
    if referral_ids:
        await rt.audit.record(
            by=by,
            action="read",
            resource="referral",
            ids=referral_ids,
            request=request,
            detail={"list": request.url.path, **detail},
        )


def _get(row, key: str):
    return row[key] if isinstance(row, dict) else getattr(row, key)


@router.get(
    "/hubs/{hub}/feed",
    response_model=FeedPage,
    tags=["hubs"],
    summary="What the hub's topic carried, for hubs that poll: everything after `cursor`, in order",
)
async def hub_feed(
    hub: str,
    request: Request,
    by: Reader,
    rt: Rt,
    cursor: Annotated[int, Query(ge=0, le=MAX_CURSOR)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
):
    service.check_hub_access(by, hub)
    page = await service.read_feed(rt.uow(reading=True), hub=hub, cursor=cursor, limit=limit)
    referral_ids = sorted({str(item["event"].get("data", {}).get("referral_id")) for item in page["items"]} - {"None"})
    if page["items"]:
        await rt.audit.record(
            by=by,
            action="export",
            resource="referral",
            ids=referral_ids or [None],
            request=request,
            detail={"hub-feed": hub, "cursor": cursor, "next_cursor": page["next_cursor"]},
        )
    return page


@router.get(
    "/hubs/{hub}/webhook-deliveries",
    response_model=list[DeliveryOut],
    tags=["hubs"],
    summary="The webhook delivery log, newest first",
)
async def webhook_deliveries(
    hub: str,
    by: Reader,
    rt: Rt,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
):
    service.check_hub_access(by, hub)
    return await webhooks.delivery_log(rt.uow(reading=True), hub=hub, status=status, limit=limit)


@router.get(
    "/assignments/{assignment_id}",
    response_model=AssignmentOut,
    tags=["assignments"],
    summary="One assignment with the resident's details, history, notes and contact attempts",
)
async def get_assignment(assignment_id: str, request: Request, by: Reader, rt: Rt):
    out = await service.get_assignment(rt.uow(reading=True), assignment_id=assignment_id, by=by)
    await rt.audit.record(
        by=by,
        action="read",
        resource="referral",
        ids=[str(out["referral_id"])],
        request=request,
        detail={"assignment_id": assignment_id},
    )
    return out


@router.post(
    "/assignments/{assignment_id}/transitions",
    response_model=TransitionOut,
    tags=["assignments"],
    summary="Move an assignment on: accepted, in_progress, fulfilled, unable_to_fulfil, rejected…",
    responses={409: {"description": "Not allowed from its current status: says which are"}},
)
async def post_transition(
    assignment_id: str, body: TransitionIn, request: Request, by: Writer, rt: Rt, routing: Routing
):
    async with rt.audit.changing(
        rt.uow(),
        by=by,
        action="change",
        resource="assignment",
        ids=[assignment_id],
        request=request,
        detail={"to": body.to},
    ) as uow:
        result, changes = await service.transition(
            uow,
            assignment_id=assignment_id,
            by=by,
            routing=routing,
            topics=rt.settings.topics,
            request=service.TransitionRequest(
                to=Status(body.to),
                reason=body.reason,
                outcome=body.outcome,
                note=body.note,
                hub=body.hub,
                council=body.council,
                at=body.at,
            ),
        )
    return {**result, "changes": [dataclasses.asdict(change) for change in changes]}


@router.patch(
    "/assignments/{assignment_id}",
    response_model=AssignmentOut,
    tags=["assignments"],
    summary="Flag an assignment for follow-up, or clear the flag",
)
async def patch_assignment(assignment_id: str, patch: AssignmentPatch, request: Request, by: Writer, rt: Rt):
    async with rt.audit.changing(
        rt.uow(),
        by=by,
        action="change",
        resource="assignment",
        ids=[assignment_id],
        request=request,
        detail={"follow_up": patch.follow_up},
    ) as uow:
        return await service.set_follow_up(
            uow,
            assignment_id=assignment_id,
            by=by,
            follow_up=patch.follow_up,
            on=patch.follow_up_on,
        )


@router.post(
    "/assignments/{assignment_id}/notes",
    status_code=201,
    response_model=NoteOut,
    tags=["assignments"],
    summary="Add a case note",
)
async def add_note(assignment_id: str, body: NoteIn, request: Request, by: Writer, rt: Rt):
    async with rt.audit.changing(
        rt.uow(),
        by=by,
        action="change",
        resource="assignment",
        ids=[assignment_id],
        request=request,
        detail={"added": "note"},
    ) as uow:
        return await service.add_case_note(uow, assignment_id=assignment_id, by=by, kind="note", text=body.text)


@router.post(
    "/assignments/{assignment_id}/contact-attempts",
    status_code=201,
    response_model=NoteOut,
    tags=["assignments"],
    summary="Record a call or visit: no-answer, wrong-number, voicemail, reached",
)
async def add_contact_attempt(assignment_id: str, body: ContactAttemptIn, request: Request, by: Writer, rt: Rt):
    async with rt.audit.changing(
        rt.uow(),
        by=by,
        action="change",
        resource="assignment",
        ids=[assignment_id],
        request=request,
        detail={"added": "contact-attempt"},
    ) as uow:
        return await service.add_case_note(
            uow,
            assignment_id=assignment_id,
            by=by,
            kind="contact-attempt",
            text=body.note,
            contact_outcome=body.outcome,
        )


@router.get(
    "/queues/out-of-area",
    response_model=AssignmentList,
    tags=["queues"],
    summary="Requests from outside Kent, each naming the council responsible (administrators)",
)
async def out_of_area_queue(
    request: Request,
    by: Admin,
    rt: Rt,
    overdue: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
):
    items, total = await service.list_assignments(
        rt.uow(reading=True),
        statuses=[str(Status.OUT_OF_AREA)],
        overdue=overdue,
        limit=limit,
        offset=offset,
    )
    await _audit_list(rt, by, request, items)
    return {"items": items, "count": total}


@router.get(
    "/queues/triage",
    response_model=AssignmentList,
    tags=["queues"],
    summary="Requests a person must place, each with the reason (administrators)",
)
async def triage_queue(
    request: Request,
    by: Admin,
    rt: Rt,
    overdue: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
):
    items, total = await service.list_assignments(
        rt.uow(reading=True),
        statuses=[str(Status.TRIAGE)],
        overdue=overdue,
        limit=limit,
        offset=offset,
    )
    await _audit_list(rt, by, request, items)
    return {"items": items, "count": total}


# For the front door (the web front's resident pages, advisers): no personal data in or out.


def _postcode(value: str, *, where: str) -> str:
    try:
        return normalise_postcode(value)
    except ValueError as error:
        raise ValidationFailed([{"field": "postcode", "in": where, "reason": str(error)}]) from None


@router.get(
    "/areas/{postcode}",
    response_model=AreaOut,
    tags=["front door"],
    summary="Who helps at a postcode: its district hub in Kent, else the council responsible",
)
async def area(postcode: Annotated[str, Path(max_length=12)], by: StatusReader, rt: Rt, routing: Routing):
    return await service.area_of(rt.uow(reading=True), postcode=_postcode(postcode, where="path"), routing=routing)


@router.get(
    "/request-status",
    response_model=RequestStatusList,
    tags=["front door"],
    summary="Where a resident's requests are, by their reference and postcode: type, status, who helps",
)
async def request_status(
    by: StatusReader,
    rt: Rt,
    reference: Annotated[str, Query(min_length=1, max_length=20)],
    postcode: Annotated[str, Query(min_length=1, max_length=12)],
):
    items = await service.request_status(
        rt.uow(reading=True), reference=normalise_reference(reference), postcode=_postcode(postcode, where="query")
    )
    return {"items": items, "count": len(items)}
