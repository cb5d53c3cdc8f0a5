"""Signing in and out: the council's identity provider (OpenID Connect), or the development sign-in page."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from services.web.api import Csrf
from services.web.api.home import START_PAGES
from services.web.app import fresh_session, render
from services.web.signin import HUB_SLUGS, STAFF_ROLES, SignInFailed, person_from_claims

router = APIRouter()
log = logging.getLogger(__name__)

ROLE_NAMES = {
    "call-centre": "Call adviser",
    "hub": "Hub worker",
    "recovery-lead": "Recovery lead",
    "analyst": "Analyst or manager",
    "admin": "Administrator",
}


def _redirect_uri(request: Request) -> str:
    return f"{request.app.state.settings.public_url.rstrip('/')}/sign-in/callback"


def _signed_in(request: Request, user: dict, tokens: dict | None = None) -> RedirectResponse:
    """A new session for the person (the one before it ends: no session fixation), then the page they wanted.

    With WEB_SERVICE_TOKENS=provider the session keeps the provider's tokens (sealed, on the server)."""
    wanted = request.state.session.get("next") or START_PAGES.get(user["role"], "/")
    data = {"user": user}
    if tokens is not None and request.app.state.settings.service_tokens == "provider":
        data["tokens"] = tokens
    fresh_session(request, data)
    return RedirectResponse(wanted if wanted.startswith("/") and not wanted.startswith("//") else "/", status_code=303)


@router.get("/sign-in")
async def sign_in_page(request: Request):
    settings = request.app.state.settings
    return render(
        request,
        "sign-in.html",
        title="Sign in",
        roles=ROLE_NAMES,
        hubs=HUB_SLUGS,
        oidc=request.app.state.oidc is not None,
        dev=settings.dev_sign_in,
        ended=request.state.session.pop("ended_notice") or ("idle" if request.state.session_ended else None),
        errors={},
        values={},
    )


@router.post("/sign-in/dev", dependencies=[Csrf])
async def dev_sign_in(request: Request, role: str = Form(""), hub: str = Form(""), name: str = Form("")):
    settings = request.app.state.settings
    if not settings.dev_sign_in:
        return render(request, "errors/not-found.html", status_code=404, title="Page not found")
    errors = {}
    if role not in STAFF_ROLES:
        errors["role"] = "Select who you are"
    if role == "hub" and hub not in HUB_SLUGS:
        errors["hub"] = "Select your hub"
    name = name.strip()[:100]
    if not name:
        errors["name"] = "Enter your name"
    if errors:
        return render(
            request,
            "sign-in.html",
            status_code=400,
            title="Error: Sign in",
            roles=ROLE_NAMES,
            hubs=HUB_SLUGS,
            oidc=request.app.state.oidc is not None,
            dev=True,
            ended=False,
            errors=errors,
            values={"role": role, "hub": hub, "name": name},
        )
    subject = "dev:" + "-".join(name.lower().split())[:60]
    return _signed_in(
        request,
        {"sub": subject, "name": name, "role": role, "hub": hub if role == "hub" else None, "via": "development"},
    )


@router.get("/sign-in/oidc")
async def oidc_begin(request: Request):
    oidc = request.app.state.oidc
    if oidc is None:
        return render(request, "errors/not-found.html", status_code=404, title="Page not found")
    url, pending = await oidc.begin(redirect_uri=_redirect_uri(request))
    request.state.session.set("oidc", pending)
    return RedirectResponse(url, status_code=303)


@router.get("/sign-in/callback")
async def oidc_callback(request: Request, code: str = "", state: str = "", error: str = ""):
    oidc = request.app.state.oidc
    if oidc is None:
        return render(request, "errors/not-found.html", status_code=404, title="Page not found")
    settings = request.app.state.settings
    pending = request.state.session.pop("oidc")
    try:
        if error:
            raise SignInFailed("the sign-in was cancelled or refused by the identity provider")
        claims, tokens = await oidc.finish(
            pending=pending,
            redirect_uri=_redirect_uri(request),
            state=state,
            code=code,
            now=request.app.state.sessions.clock().timestamp(),
        )
        user = person_from_claims(claims, settings.claims())
    except SignInFailed as failed:
        log.info("sign-in failed: %s", failed)
        return render(
            request, "sign-in-failed.html", status_code=400, title="You could not be signed in", reason=str(failed)
        )
    return _signed_in(request, user, tokens)


@router.post("/sign-out", dependencies=[Csrf])
async def sign_out(request: Request):
    session = request.state.session
    via = (session.user or {}).get("via")
    session.ended = True
    oidc = request.app.state.oidc
    after = f"{request.app.state.settings.public_url.rstrip('/')}/signed-out"
    if via == "oidc" and oidc is not None:
        url = await oidc.sign_out_url(after=after)
        if url:
            return RedirectResponse(url, status_code=303)
    return RedirectResponse("/signed-out", status_code=303)


@router.get("/signed-out")
async def signed_out(request: Request):
    return render(request, "signed-out.html", title="You have signed out")
