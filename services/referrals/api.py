"""HTTP in, schemas out: the referrals API."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, File, Header, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute

from services.referrals import domain, imports, service
from services.referrals.domain import normalise_phone
from services.referrals.schemas import (
    Cancellation,
    DuplicateCheck,
    ReferralAmendment,
    ReferralIn,
    ReferralOut,
    RequestTypeIn,
    RequestTypeOut,
    RequestTypePatch,
    ResidentErasure,
    ResidentHistory,
    ResidentMerge,
    SearchResult,
)
from shared.app import Runtime, body_schema, read_body
from shared.auth import Principal, _principal, require
from shared.db import utcnow
from shared.errors import Forbidden, ValidationFailed
from shared.idempotency import parse_key as parse_idempotency_key
from shared.postcode import normalise_postcode

router = APIRouter(prefix="/v1")

_require_write = require("referrals:write")
Writer = Annotated[Principal, Depends(_require_write)]
Reader = Annotated[Principal, Depends(require("referrals:read"))]
Admin = Annotated[Principal, Depends(require("referrals:admin"))]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


async def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


Rt = Annotated[Runtime, Depends(runtime)]


def _id(row) -> str:
    return str(row["id"] if isinstance(row, dict) else row.id)


class _IntakeRoute(APIRoute):
    """POST /v1/referrals, the hot path, without FastAPI's per-request dependency solver.

    The route declares its caller (`Writer`) and the Idempotency-Key header as any
    route does, so its OpenAPI and `required_scopes` are unchanged; at run time its
    handler does what the solver would, in the same order and with the same answers:
    the bearer token (401), the scope (403), then the header's format (422, shared/idempotency.py). The
    solver, with its request-parameter and cache bookkeeping, was 8% of the
    service's CPU under load.
    """

    def get_route_handler(self):
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            by = await _require_write(await _principal(request))
            idempotency_key = request.headers.get("idempotency-key")
            if idempotency_key is not None:
                idempotency_key = parse_idempotency_key(idempotency_key)
            return await endpoint(request, by, idempotency_key)

        return handle


async def post_referral(request: Request, by: Writer, idempotency_key: IdempotencyKey = None):
    # The hot path: called by `_IntakeRoute` (no dependency solver); the intake queue answers with
    # the 201 body already serialised (the JSON FastAPI would have written from ReferralOut).
    state = request.app.state
    known_types = await state.request_types.active(state.runtime.uow(reading=True))
    referral = await read_body(request, ReferralIn, context={"request_types": known_types})
    # A recurrence's end date against the request's own dates: once the body's shape is sound.
    errors = domain.recurrence_errors(referral.requests, received=(referral.received_at or utcnow()).date())
    if errors:
        raise ValidationFailed(errors)
    if domain.needs_backfill_scope(referral.received_at, now=utcnow()) and domain.BACKFILL_SCOPE not in by.scopes:
        raise Forbidden(
            f"received_at more than {domain.PAPER_FORM_WINDOW.days} days ago is for migrating referrals from a "
            f"legacy system: it needs the {domain.BACKFILL_SCOPE!r} scope, which role {by.role!r} does not have",
            field="received_at",
        )
    # The intake queue writes the "create" audit record in the referral's own transaction.
    out, replayed = await state.intake.take(
        service.Intake(
            referral=referral,
            by=by,
            idempotency_key=idempotency_key,
            request_id=getattr(request.state, "request_id", None),
        )
    )
    headers = {"Location": f"/v1/referrals/{out.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(out.body, status_code=201, media_type="application/json", headers=headers)


router.add_api_route(
    "/referrals",
    post_referral,
    methods=["POST"],
    status_code=201,
    response_model=ReferralOut,
    tags=["referrals"],
    summary="Take a referral: a resident and one or more requests for help",
    openapi_extra=body_schema(ReferralIn),
    responses={422: {"description": "Invalid fields: each named with the reason"}},
    route_class_override=_IntakeRoute,
)


@router.get("/referrals/{referral_id}", response_model=ReferralOut, tags=["referrals"])
async def get_referral(referral_id: str, request: Request, by: Reader, rt: Rt, response: Response):
    """By its id, or by the reference the resident quotes (`KT-7F3K-9QX2`, any case or spacing)."""
    out = await service.get_referral(rt.uow(reading=True), referral_id)
    if out.id != referral_id:
        response.headers["Content-Location"] = f"/v1/referrals/{out.id}"
    await rt.audit.record(by=by, action="read", resource="referral", ids=[_id(out)], request=request)
    return out


@router.get(
    "/referrals",
    response_model=SearchResult,
    tags=["referrals"],
    summary="Find referrals: by reference, name and postcode, or phone and date of birth (advisers); "
    "by any of them (administrators)",
)
async def search_referrals(
    request: Request,
    by: Reader,
    rt: Rt,
    reference: Annotated[str | None, Query(max_length=20)] = None,
    postcode: Annotated[str | None, Query(max_length=12)] = None,
    phone: Annotated[str | None, Query(max_length=40)] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    date_of_birth: date | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
):
    errors = []
    if not any((reference, postcode, phone, name)):
        errors.append(
            {"field": "reference", "in": "query", "reason": "give at least one of reference, postcode, phone, name"}
        )
    # An adviser finds a caller by two things the caller says about themselves, never a list of
    # everyone at a postcode or every Smith (docs/web.md, "What an adviser may search").
    paired = (name and postcode) or (phone and date_of_birth)
    if (postcode or phone or name) and "referrals:search" not in by.scopes and not paired:
        raise Forbidden(
            "an adviser searches by reference, by name and postcode together, or by phone and date of "
            "birth together; other searches are for administrators"
        )
    try:
        postcode = normalise_postcode(postcode) if postcode else None
    except ValueError as error:
        errors.append({"field": "postcode", "in": "query", "reason": str(error)})
    try:
        phone = normalise_phone(phone) if phone else None
    except ValueError as error:
        errors.append({"field": "phone", "in": "query", "reason": str(error)})
    if errors:
        raise ValidationFailed(errors)
    results = await service.search_referrals(
        rt.uow(reading=True),
        reference=reference,
        postcode=postcode,
        phone=phone,
        name=name,
        date_of_birth=date_of_birth,
        limit=limit,
    )
    if results:  # what was searched by, never the values: the log holds no personal data
        criteria = [
            k
            for k, v in (
                ("reference", reference),
                ("postcode", postcode),
                ("phone", phone),
                ("name", name),
                ("date_of_birth", date_of_birth),
            )
            if v
        ]
        await rt.audit.record(
            by=by,
            action="search",
            resource="referral",
            ids=[_id(r) for r in results],
            request=request,
            detail={"by": criteria},
        )
    return {"results": results, "count": len(results)}


@router.post(
    "/referrals/duplicate-check",
    response_model=DuplicateCheck,
    tags=["referrals"],
    summary="Before taking a referral: the open requests of the same person it would be linked to as duplicates",
    openapi_extra=body_schema(ReferralIn),
)
async def duplicate_check(request: Request, by: Reader, rt: Rt):
    known_types = await request.app.state.request_types.active(rt.uow())
    referral = await read_body(request, ReferralIn, context={"request_types": known_types})
    errors = domain.recurrence_errors(referral.requests, received=(referral.received_at or utcnow()).date())
    if errors:
        raise ValidationFailed(errors)
    found = await service.find_duplicates(rt.uow(), referral=referral)
    if found:
        await rt.audit.record(
            by=by,
            action="search",
            resource="referral",
            ids=sorted({d["referral_id"] for d in found}),
            request=request,
            detail={"by": ["duplicate-check"]},
        )
    return {"duplicates": found, "count": len(found)}


@router.patch(
    "/referrals/{referral_id}",
    response_model=ReferralOut,
    tags=["referrals"],
    summary="Amend the resident's details, consent or referrer",
)
async def amend_referral(referral_id: str, amendment: ReferralAmendment, request: Request, by: Reader, rt: Rt):
    fields = sorted(amendment.model_dump(exclude_unset=True))
    async with rt.audit.changing(
        rt.uow(),
        by=by,
        action="change",
        resource="referral",
        ids=[referral_id],
        request=request,
        detail={"fields": fields},
    ) as uow:
        return await service.amend_referral(uow, referral_id=referral_id, amendment=amendment, by=by)


@router.post(
    "/referrals/{referral_id}/cancel",
    response_model=ReferralOut,
    tags=["referrals"],
    summary="Cancel every open request of a referral",
)
async def cancel_referral(referral_id: str, cancellation: Cancellation, request: Request, by: Reader, rt: Rt):
    async with rt.audit.changing(
        rt.uow(), by=by, action="cancel", resource="referral", ids=[referral_id], request=request
    ) as uow:
        return await service.cancel_requests(
            uow, referral_id=referral_id, request_id=None, cancellation=cancellation, by=by
        )


@router.post(
    "/referrals/{referral_id}/requests/{request_id}/cancel",
    response_model=ReferralOut,
    tags=["referrals"],
    summary="Cancel one request of a referral",
)
async def cancel_request(
    referral_id: str, request_id: str, cancellation: Cancellation, request: Request, by: Reader, rt: Rt
):
    async with rt.audit.changing(
        rt.uow(),
        by=by,
        action="cancel",
        resource="referral",
        ids=[referral_id],
        request=request,
        detail={"request_id": request_id},
    ) as uow:
        return await service.cancel_requests(
            uow,
            referral_id=referral_id,
            request_id=request_id,
            cancellation=cancellation,
            by=by,
        )


@router.post(
    "/referrals/{referral_id}/erasure",
    response_model=ReferralOut,
    tags=["privacy"],
    summary="Erase the resident's personal data on their request (administrators), here and in fulfilment",
    responses={
        200: {
            "description": "Erased (or already erased): ids, reference, request types and statuses are kept for counts"
        }
    },
)
async def erase_resident(referral_id: str, request: Request, by: Admin, rt: Rt):
    async with rt.audit.changing(
        rt.uow(), by=by, action="erase", resource="referral", ids=[referral_id], request=request
    ) as uow:
        return await service.erase_resident(uow, referral_id=referral_id, by=by)


@router.post(
    "/retention/anonymise",
    tags=["privacy"],
    summary="Anonymise every referral past its retention period now (administrators; it also runs hourly)",
)
async def anonymise_expired(request: Request, by: Admin, rt: Rt) -> dict:
    ids = await request.app.state.retention.run_once()
    return {"anonymised": len(ids), "referral_ids": ids}


@router.get(
    "/retention/review",
    tags=["privacy"],
    summary="Open referrals past their retention period (administrators): never anonymised unseen",
)
async def retention_review(by: Admin, rt: Rt) -> dict:
    items = await service.retention_review(rt.uow(reading=True))
    return {"count": len(items), "items": items}


@router.get("/request-types", response_model=list[RequestTypeOut], tags=["request types"])
async def list_request_types(by: Writer, rt: Rt):
    return await service.list_request_types(rt.uow(reading=True))


@router.post(
    "/request-types",
    status_code=201,
    response_model=RequestTypeOut,
    tags=["request types"],
    summary="Add a request type (administrators): no migration needed",
)
async def add_request_type(request_type: RequestTypeIn, request: Request, by: Admin, rt: Rt):
    row = await service.add_request_type(rt.uow(), request_type=request_type)
    request.app.state.request_types.forget()
    return row


@router.patch(
    "/request-types/{type_id}",
    response_model=RequestTypeOut,
    tags=["request types"],
    summary="Rename or retire a request type (administrators)",
)
async def change_request_type(type_id: str, patch: RequestTypePatch, request: Request, by: Admin, rt: Rt):
    row = await service.change_request_type(rt.uow(), type_id=type_id, patch=patch)
    request.app.state.request_types.forget()
    return row


# --- residents -------------------------------------------------------------------------------


@router.get(
    "/residents/{resident}",
    response_model=ResidentHistory,
    tags=["residents"],
    summary="One resident's history: every referral and request, those of residents merged into them too "
    "(by the resident's id, or one of their referrals' id or reference)",
)
async def resident_history(resident: str, request: Request, by: Reader, rt: Rt):
    history = await service.resident_history(rt.uow(reading=True), resident=resident)
    await rt.audit.record(
        by=by,
        action="read",
        resource="referral",
        ids=[r.id for r in history.referrals],
        request=request,
        detail={"by": ["resident"], "resident_id": history.resident_id},
    )
    return history


@router.post(
    "/residents/{resident}/merge",
    response_model=ResidentHistory,
    tags=["residents"],
    summary="Merge a resident recorded twice into this one (administrators): one history, kept whole",
)
async def merge_residents(resident: str, merge: ResidentMerge, request: Request, by: Admin, rt: Rt):
    async with rt.audit.changing(
        rt.uow(),
        by=by,
        action="merge",
        resource="resident",
        ids=[resident],
        request=request,
        detail={"duplicate": merge.duplicate},
    ) as uow:
        return await service.merge_residents(uow, resident=resident, duplicate=merge.duplicate, by=by)


@router.post(
    "/residents/{resident}/erasure",
    response_model=ResidentErasure,
    tags=["privacy"],
    summary="Erase a resident's personal data from every one of their referrals (administrators)",
)
async def erase_resident_everywhere(resident: str, request: Request, by: Admin, rt: Rt):
    erased = await service.erase_resident_everywhere(rt.uow, resident=resident, by=by)
    resident_id = (await service.resident_history(rt.uow(reading=True), resident=resident)).resident_id
    await rt.audit.record(
        by=by,
        action="erase",
        resource="referral",
        ids=erased or [resident_id],
        request=request,
        detail={"resident_id": resident_id},
    )
    return {"resident_id": resident_id, "erased": erased}


# --- bulk import -------------------------------------------------------------------------------


@router.get(
    "/referrals/imports/template",
    tags=["bulk import"],
    response_class=Response,
    summary="The CSV to fill in for a bulk import: every column, and an example row",
    responses={200: {"content": {"text/csv": {}}}},
)
async def import_template(by: Admin):
    return Response(
        imports.template_csv(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="referrals-import-template.csv"'},
    )


@router.post(
    "/referrals/imports",
    tags=["bulk import"],
    summary="Import a list of residents and their needs (CSV or .xlsx, administrators): dry run first, then for real",
    responses={
        200: {
            "description": "The per-row report: accepted, possible-duplicate, already-imported, out-of-area, "
            "or error with the column and the reason. With `Accept: application/x-ndjson`, "
            'a line `{"rows_read": n}` after each batch, then `{"report": …}`',
            "content": {"application/json": {}, "application/x-ndjson": {}},
        },
        422: {"description": "The file is empty or its header is not the template's"},
    },
)
async def import_referrals(
    request: Request,
    by: Admin,
    rt: Rt,
    file: Annotated[
        UploadFile, File(description="The list, in the template's shape (GET /v1/referrals/imports/template)")
    ],
    dry_run: Annotated[bool, Query(description="Report what each row would be, and store nothing")] = False,
):
    known_types = await request.app.state.request_types.active(rt.uow(reading=True))
    rows = imports.read_rows(file.file, filename=file.filename)
    first = next(rows, None)  # a bad header is a 422 now, not a broken stream later
    rows = iter(()) if first is None else _chain(first, rows)
    progress = imports.run(
        rt.uow,
        rows=rows,
        by=by,
        dry_run=dry_run,
        known_types=known_types,
        audit=None if dry_run else rt.audit,
        request_id=getattr(request.state, "request_id", None),
    )
    if "application/x-ndjson" in request.headers.get("accept", ""):

        async def lines():
            report = imports.ImportReport(dry_run=dry_run)
            async for read, report in progress:  # noqa: B007 (the last report is the answer)
                yield orjson.dumps({"rows_read": read}) + b"\n"
            yield orjson.dumps({"report": report.as_dict()}) + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")
    report = imports.ImportReport(dry_run=dry_run)
    async for _, report in progress:  # noqa: B007 (the last report is the answer)
        pass
    return Response(orjson.dumps(report.as_dict()), media_type="application/json")


def _chain(first, rest):
    yield first
    yield from rest
