"""The recovery plan's progress for anyone: no sign-in, figures only (the actions API's public rollup)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.web.api import Clients_
from services.web.app import render

router = APIRouter()

DEFAULT_PLAN = "krf-recovery-2020"
RAG_NAMES = {"red": "Red", "amber": "Amber", "green": "Green", "none": "Not rated"}


@router.get("/plan-progress")
async def plan_progress(request: Request, clients: Clients_):
    progress = await clients.actions.call("GET", f"/v1/public/plans/{DEFAULT_PLAN}/progress", caller=None)
    return render(
        request, "progress/plan.html", title="Recovery plan progress", column="full", progress=progress, rags=RAG_NAMES
    )
