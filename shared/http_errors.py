"""The HTTP edge of the domain errors: each family mapped to RFC 9457 problem+json, once, for every service.

`install_error_handlers` (called by shared/app.py) answers every `DomainError`
with the status, slug, title and headers of its family in `PROBLEMS`; ASGI
middleware answers the same way with `send_domain_error`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Scope, Send

from shared.errors import (
    Busy,
    Conflict,
    DomainError,
    Forbidden,
    IdentityProviderUnavailable,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
    field_errors,
    is_lock_timeout,
)

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Problem:
    """How HTTP says one family of domain errors."""

    status: int
    slug: str
    title: str
    retry_after: int | None = None
    """Seconds, sent as `Retry-After`, when trying again later may work."""


PROBLEMS: dict[type[DomainError], Problem] = {
    DomainError: Problem(400, "bad-request", "Bad request"),
    Unauthorized: Problem(401, "unauthorized", "Authentication required"),
    Forbidden: Problem(403, "forbidden", "Not allowed"),
    NotFound: Problem(404, "not-found", "Not found"),
    Conflict: Problem(409, "conflict", "Conflict"),
    InvalidTransition: Problem(409, "invalid-transition", "Transition not allowed"),
    PayloadTooLarge: Problem(413, "payload-too-large", "Request body too large"),
    ValidationFailed: Problem(422, "validation-failed", "The request has invalid fields"),
    IdentityProviderUnavailable: Problem(
        503, "identity-provider-unavailable", "Identity provider unavailable", retry_after=30
    ),
    Busy: Problem(503, "busy", "Busy: try again shortly", retry_after=1),
}
"""Every family of domain error, by class; a subclass not listed answers as its nearest listed ancestor."""


def problem_of(error: DomainError) -> Problem:
    """The answer for `error`: its family's status and headers, with the slug and title it names itself by, if any."""
    family = next(PROBLEMS[cls] for cls in type(error).__mro__ if cls in PROBLEMS)
    return Problem(
        status=family.status,
        slug=error.slug or family.slug,
        title=error.title or family.title,
        retry_after=family.retry_after,
    )


@dataclass(frozen=True)
class ProblemSettings:
    """What every problem answer of a service says beyond its error: where its `type` URIs point, who signs in."""

    type_base: str = "tag:kent-together,2026:problems/"
    """Each `type` is this followed by the slug (`validation-failed`). The default is a tag URI (RFC 4151):
    stable and absolute, never fetched. A council that publishes the slugs' pages (docs/api.md) sets its own
    base, e.g. `https://developer.kent.gov.uk/kent-together/problems/`."""
    authorization_uri: str = ""
    """The identity provider's authorisation endpoint, named in every 401's `WWW-Authenticate` so Power BI's
    "Organizational account" knows where to sign in (Entra ID: `https://login.microsoftonline.com/<tenant>/oauth2/authorize`)."""

    def type_of(self, slug: str) -> str:
        return self.type_base + slug

    def challenge(self) -> str:
        if self.authorization_uri:
            return f'Bearer authorization_uri="{self.authorization_uri}"'
        return "Bearer"


def problem_settings(app: Any) -> ProblemSettings:
    """The app's problem settings (the defaults for an app made without `install_error_handlers`)."""
    settings: ProblemSettings | None = getattr(app.state, "problems", None)
    return settings or ProblemSettings()


def _headers(status: int, settings: ProblemSettings, retry_after: int | None) -> dict[str, str]:
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = settings.challenge()
    if retry_after is None and status == 503:
        retry_after = PROBLEMS[Busy].retry_after  # busy: nothing changed, go again shortly
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers


def problem(
    status: int,
    *,
    slug: str,
    title: str,
    detail: str,
    request: Request | None = None,
    retry_after: int | None = None,
    **extensions: Any,
) -> JSONResponse:
    settings = problem_settings(request.app) if request is not None else ProblemSettings()
    body: dict[str, Any] = {"type": settings.type_of(slug), "title": title, "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    body.update(extensions)
    headers = _headers(status, settings, retry_after)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers or None)


def domain_problem(error: DomainError, *, request: Request | None = None) -> JSONResponse:
    """The problem+json answer to a domain error."""
    answer = problem_of(error)
    return problem(
        answer.status,
        slug=answer.slug,
        title=answer.title,
        detail=error.detail or answer.title,
        request=request,
        retry_after=answer.retry_after,
        **error.extensions,
    )


async def send_problem(
    scope: Scope,
    send: Send,
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extensions: Any,
) -> None:
    """Answer problem+json from ASGI middleware, outside the app's exception handlers."""
    body: dict[str, Any] = {
        "type": problem_settings(scope["app"]).type_of(slug),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": scope["path"],
    }
    request_id = scope.get("state", {}).get("request_id")
    if request_id:
        body["request_id"] = request_id
    body.update(extensions)
    raw = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(raw)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": raw})


async def send_domain_error(scope: Scope, send: Send, error: DomainError) -> None:
    answer = problem_of(error)
    settings = problem_settings(scope["app"])
    headers = [
        (name.lower().encode(), value.encode())
        for name, value in _headers(answer.status, settings, answer.retry_after).items()
    ]
    await send_problem(
        scope,
        send,
        status=answer.status,
        slug=answer.slug,
        title=answer.title,
        detail=error.detail or answer.title,
        headers=headers,
        **error.extensions,
    )


def install_error_handlers(app: FastAPI, settings: ProblemSettings | None = None) -> None:
    app.state.problems = settings or ProblemSettings()

    @app.exception_handler(DomainError)
    async def _domain(request: Request, error: DomainError) -> Response:
        return domain_problem(error, request=request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> Response:
        return domain_problem(ValidationFailed(field_errors(error.errors())), request=request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
        return problem(error.status_code, slug=slug, title=str(error.detail), detail=str(error.detail), request=request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        if isinstance(error, ClientDisconnect):
            # The caller hung up mid-body: nothing was stored, nobody to answer.
            return problem(
                400,
                slug="client-disconnected",
                title="Client disconnected",
                detail="the request body did not arrive whole",
                request=request,
            )
        if is_lock_timeout(error):
            # Busy, not broken: the transaction rolled back, and the same request will do shortly.
            log.warning("busy on %s %s: %s", request.method, request.url.path, error.__class__.__name__)
            return domain_problem(
                Busy(f"the database is busy; nothing was changed: try again in {PROBLEMS[Busy].retry_after} s"),
                request=request,
            )
        # Never leak internals: the log has the traceback, the caller the request id.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(
            500,
            slug="internal-error",
            title="Internal error",
            detail="Something went wrong on our side; quote the request id to support.",
            request=request,
        )


__all__ = [
    "PROBLEM",
    "PROBLEMS",
    "Problem",
    "ProblemSettings",
    "domain_problem",
    "install_error_handlers",
    "problem",
    "problem_of",
    "problem_settings",
    "send_domain_error",
    "send_problem",
]
