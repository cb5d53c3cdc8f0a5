"""The analyst's dashboard, reached from the web front without pasting a token.

The page is the reporting service's own dashboard, served here as it is (with
its own Content-Security-Policy, which lets run only its inline script, by hash),
and the figures it fetches from `/v1/figures/…` are fetched for it, server-side,
with the signed-in analyst's token. The page keeps a placeholder, never a token:
it was written for a pasted token, which it reads from `?token=` once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.web.api import ANALYSTS, Clients_, person
from services.web.clients import Caller

router = APIRouter()
Analyst = Annotated[Caller, Depends(person(*ANALYSTS))]
PLACEHOLDER = "signed-in"
"""What the page stores as its 'token': a word, so it fetches; the web front holds the real one."""


@router.get("/dashboard")
async def dashboard(request: Request, analyst: Analyst, clients: Clients_):
    if request.query_params.get("token") != PLACEHOLDER:
        query = "&".join(f"{k}={v}" for k, v in request.query_params.items() if k != "token")
        return RedirectResponse(f"/dashboard?token={PLACEHOLDER}" + (f"&{query}" if query else ""), status_code=303)
    page = await clients.reporting.call("GET", "/", caller=analyst, raw=True)
    headers = {
        name: page.headers[name] for name in ("content-security-policy", "cache-control") if name in page.headers
    }
    return HTMLResponse(page.text, headers=headers)


@router.get("/v1/figures/{figure:path}")
async def figures(figure: str, request: Request, clients: Clients_):
    user = request.state.session.user
    if user is None or user["role"] not in ANALYSTS:  # the page's script asks: an answer it reads, not a redirect
        return JSONResponse(
            {"title": "Sign in", "status": 401, "detail": "sign in to the web front as an analyst"},
            status_code=401,
            media_type="application/problem+json",
        )
    analyst = Caller(subject=user["sub"], role=user["role"], hub=user.get("hub"))
    answer = await clients.reporting.call(
        "GET", f"/v1/figures/{figure}", caller=analyst, params=dict(request.query_params), raw=True
    )
    return Response(
        answer.content,
        media_type=answer.headers.get("content-type", "application/json"),
        headers={"Cache-Control": "no-store"},
    )
