"""The pages: one route per page and form post. What every page needs is here: who is signed in, CSRF, rate limits."""

from __future__ import annotations

import hmac
import math
from typing import Annotated

from fastapi import Depends, Request

from services.web.app import CsrfRefused, SignInNeeded, fresh_session, render
from services.web.clients import Caller, Clients
from services.web.signin import RENEW_BEFORE_SECONDS, SignInFailed
from shared.security import client_address

# Who may use which pages: the role the signed-in person's token carries.
ADVISERS = ("call-centre", "admin")
HUB_STAFF = ("hub", "admin")
RECOVERY_LEADS = ("recovery-lead", "admin")
ANALYSTS = ("analyst", "admin")
# The resident's pages call the APIs as the online form: one service identity, never a person's token.
ONLINE_FORM = Caller(subject="web-online-form", role="online-form")


def routers():
    from services.web.api import adviser, dashboard, home, hub, progress, recovery, resident, signin, team, tracking

    # tracking before recovery: its /actions/tracking is not an action's page (/actions/{id}).
    return [
        home.router,
        signin.router,
        resident.router,
        adviser.router,
        hub.router,
        team.router,
        tracking.router,
        recovery.router,
        dashboard.router,
        progress.router,
    ]


def clients(request: Request) -> Clients:
    return request.app.state.clients


async def csrf_checked(request: Request) -> None:
    """Every form post carries the session's token: a post from another site (or a stale page) is refused."""
    if request.method in ("GET", "HEAD"):
        return
    form = await request.form()
    sent = str(form.get("csrf_token") or "")
    expected = request.state.session.get("csrf") or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()


def person(*roles: str):
    """A dependency: the signed-in person as an API caller, if their role is one of `roles`; else sign in."""

    async def signed_in(request: Request) -> Caller:
        user = request.state.session.user
        if user is None:
            raise SignInNeeded()
        if user["role"] not in roles:
            raise NotForYou()
        return Caller(
            subject=user["sub"],
            role=user["role"],
            hub=user.get("hub"),
            access_token=await _provider_token(request),
            name=user.get("name"),
        )

    return signed_in


async def _provider_token(request: Request) -> str | None:
    """The person's own access token from the identity provider (WEB_SERVICE_TOKENS=provider), renewed with the
    refresh token when it is about to expire; when the provider refuses, the person signs in again."""
    if request.app.state.settings.service_tokens != "provider":
        return None
    session = request.state.session
    tokens = session.get("tokens")
    if tokens is None:
        fresh_session(request)
        raise SignInNeeded("provider")
    now = request.app.state.sessions.clock().timestamp()
    if tokens["expires_at"] - RENEW_BEFORE_SECONDS <= now:
        try:
            tokens = await request.app.state.oidc.refresh(tokens, now=now)
        except SignInFailed:
            fresh_session(request)
            raise SignInNeeded("provider") from None
        session.set("tokens", tokens)
    return tokens["access_token"]


class NotForYou(Exception):
    """Signed in, but these pages are for someone else."""


async def public_form_limited(request: Request) -> None:
    """The resident's form posts, counted per address: the public form cannot be used to flood the services."""
    if request.method in ("GET", "HEAD"):
        return
    # Behind the ingress, the resident's own address (X-Forwarded-For from KT_TRUSTED_PROXIES only), not the proxy's.
    client = client_address(request.scope, dict(request.scope["headers"]), request.app.state.trusted_proxies)
    allowance = request.app.state.public_rate.take(f"public:{client}")
    if allowance.wait > 0:
        raise TooManyAttempts(math.ceil(allowance.wait))


class TooManyAttempts(Exception):
    def __init__(self, seconds: int):
        self.seconds = seconds


Clients_ = Annotated[Clients, Depends(clients)]
Csrf = Depends(csrf_checked)


def install_page_errors(app) -> None:
    @app.exception_handler(NotForYou)
    async def _not_for_you(request: Request, error: NotForYou):
        return render(request, "errors/forbidden.html", status_code=403, title="You cannot see this page")

    @app.exception_handler(TooManyAttempts)
    async def _too_many(request: Request, error: TooManyAttempts):
        response = render(
            request, "errors/too-many.html", status_code=429, title="Too many attempts", seconds=error.seconds
        )
        response.headers["Retry-After"] = str(error.seconds)
        return response
