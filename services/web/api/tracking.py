"""The recovery lead's tracking by spreadsheet: upload the edited export, see what would change, then apply it.

The actions API reads the file (`POST /v1/actions/import`): each changed cell becomes a dated entry in its
action's history; a refused row (named by row and column) changes nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from services.web.api import RECOVERY_LEADS, Clients_, Csrf, person
from services.web.app import render
from services.web.clients import ApiError, Caller

router = APIRouter(prefix="/actions")
Lead = Annotated[Caller, Depends(person(*RECOVERY_LEADS))]
MAX_UPLOAD = 5 * 1024 * 1024
TITLE = "Upload tracking from a spreadsheet"


@router.get("/tracking")
async def tracking_page(request: Request, lead: Lead):
    return render(request, "recovery/tracking.html", title=TITLE, errors={}, report=None)


@router.post("/tracking", dependencies=[Csrf])
async def upload_tracking(request: Request, lead: Lead, clients: Clients_):
    form = await request.form()
    upload = form.get("file")
    dry_run = form.get("apply") != "yes"
    if upload is None or not getattr(upload, "filename", ""):
        return render(
            request,
            "recovery/tracking.html",
            status_code=400,
            title=TITLE,
            report=None,
            errors={"file": "Select the edited export: a .xlsx or .csv file downloaded from the actions"},
        )
    content = await upload.read(MAX_UPLOAD + 1)
    if len(content) > MAX_UPLOAD:
        return render(
            request,
            "recovery/tracking.html",
            status_code=400,
            title=TITLE,
            report=None,
            errors={"file": "The file must be 5 MB or smaller"},
        )
    try:
        report = await clients.actions.call(
            "POST",
            "/v1/actions/import",
            caller=lead,
            params={"dry_run": "true" if dry_run else None},
            files={"file": (upload.filename, content, upload.content_type or "application/octet-stream")},
        )
    except ApiError as error:
        if error.status not in (413, 422):
            raise
        report = error.problem.get("report")
        if report is None:
            reasons = "; ".join(str(e.get("reason")) for e in error.field_errors) or error.problem.get("detail", "")
            return render(
                request,
                "recovery/tracking.html",
                status_code=400,
                title=TITLE,
                report=None,
                errors={"file": f"The file could not be read: {reasons}"},
            )
        return render(
            request,
            "recovery/tracking.html",
            status_code=400,
            title="Tracking refused",
            report=report,
            errors={},
            rejected=True,
            column="full",
        )
    title = "Tracking: what would change" if dry_run else "Tracking uploaded"
    return render(
        request, "recovery/tracking.html", title=title, report=report, errors={}, rejected=False, column="full"
    )
