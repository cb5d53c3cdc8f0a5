"""The front page: where each person starts."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.web.app import render

router = APIRouter()

START_PAGES = {
    "call-centre": "/adviser",
    "hub": "/hub",
    "recovery-lead": "/actions",
    "analyst": "/dashboard",
    "admin": "/adviser",
}


@router.get("/")
async def front_page(request: Request):
    return render(request, "home.html", title="Kent Together", start_pages=START_PAGES)
