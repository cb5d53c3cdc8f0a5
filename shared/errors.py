"""Domain errors, mapped to RFC 9457 problem+json once, here, for every service."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


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


def problem_settings(app) -> ProblemSettings:
    """The app's problem settings (the defaults for an app made without `install_error_handlers`)."""
    return getattr(app.state, "problems", None) or ProblemSettings()


class DomainError(Exception):
    status = 400
    slug = "bad-request"
    title = "Bad request"
    retry_after: int | None = None
    """Seconds, sent as `Retry-After`, when trying again later may work."""

    def __init__(self, detail: str = "", **extensions: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extensions = extensions


class Unauthorized(DomainError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(DomainError):
    status, slug, title = 403, "forbidden", "Not allowed"


class IdentityProviderUnavailable(DomainError):
    """The identity provider's signing keys cannot be had: the token may be good, so not a 401."""

    status, slug, title = 503, "identity-provider-unavailable", "Identity provider unavailable"

    retry_after = 30


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    status, slug, title = 409, "conflict", "Conflict"


class InvalidTransition(Conflict):
    slug, title = "invalid-transition", "Transition not allowed"


class PayloadTooLarge(DomainError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class ValidationFailed(DomainError):
    """One or more fields are wrong: `errors` names each field and the reason."""

    status, slug, title = 422, "validation-failed", "The request has invalid fields"

    def __init__(self, errors: list[dict[str, str]], detail: str = ""):
        count = len(errors)
        super().__init__(detail or f"{count} field{'s' if count != 1 else ''} invalid", errors=errors)


class Busy(DomainError):
    """The database is busy (a lock not had in time): nothing was changed; the caller may go again shortly."""

    status, slug, title = 503, "busy", "Busy: try again shortly"
    retry_after_seconds = 1


LOCK_TIMEOUTS = ("database is locked", "database table is locked", "lock timeout", "could not obtain lock",
                 "deadlock detected", "canceling statement due to lock timeout")


def is_lock_timeout(error: BaseException) -> bool:
    """A lock not had in time (SQLite's busy timeout, PostgreSQL's lock_timeout or a deadlock): worth a retry."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(error, DBAPIError):
        return False
    text = str(error.orig if error.orig is not None else error).lower()
    return any(words in text for words in LOCK_TIMEOUTS)


def problem(status: int, *, slug: str, title: str, detail: str, request: Request | None = None,
            retry_after: int | None = None, **extensions):
    settings = problem_settings(request.app) if request is not None else ProblemSettings()
    body = {"type": settings.type_of(slug), "title": title, "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    body.update(extensions)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = settings.challenge()
    if retry_after is None and status == 503:
        retry_after = Busy.retry_after_seconds  # busy: nothing changed, go again shortly
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers or None)


async def send_problem(scope, send, *, status: int, slug: str, title: str, detail: str, headers=(),
                       **extensions) -> None:
    """Answer problem+json from ASGI middleware, outside the app's exception handlers."""
    body = {"type": problem_settings(scope["app"]).type_of(slug), "title": title, "status": status,
            "detail": detail, "instance": scope["path"]}
    request_id = scope.get("state", {}).get("request_id")
    if request_id:
        body["request_id"] = request_id
    body.update(extensions)
    raw = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(raw)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": raw})


async def send_domain_error(scope, send, error: DomainError) -> None:
    await send_problem(scope, send, status=error.status, slug=error.slug, title=error.title, detail=error.detail,
                       **error.extensions)


def field_errors(errors) -> list[dict[str, str]]:
    """Pydantic errors as [{field, reason}], the field as a dotted path (`requests[0].type`)."""
    out = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            source = loc.pop(0)
        else:
            source = "body"
        field = ""
        for part in loc:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        reason = _reason(error)
        entry = {"field": field or source, "reason": reason}
        if source != "body":
            entry["in"] = source
        out.append(entry)
    return out


def _reason(error) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    message = error.get("msg", "invalid")
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message


def install_error_handlers(app: FastAPI, settings: ProblemSettings = ProblemSettings()) -> None:
    app.state.problems = settings

    @app.exception_handler(DomainError)
    async def _domain(request: Request, error: DomainError):
        return problem(error.status, slug=error.slug, title=error.title, detail=error.detail,
                       request=request, retry_after=error.retry_after, **error.extensions)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError):
        errors = field_errors(error.errors())
        return problem(422, slug=ValidationFailed.slug, title=ValidationFailed.title,
                       detail=f"{len(errors)} field{'s' if len(errors) != 1 else ''} invalid",
                       request=request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        slug = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
        return problem(error.status_code, slug=slug, title=str(error.detail), detail=str(error.detail), request=request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        if isinstance(error, ClientDisconnect):
            # The caller hung up mid-body: nothing was stored, nobody to answer.
            return problem(400, slug="client-disconnected", title="Client disconnected",
                           detail="the request body did not arrive whole", request=request)
        if is_lock_timeout(error):
            # Busy, not broken: the transaction rolled back, and the same request will do shortly.
            log.warning("busy on %s %s: %s", request.method, request.url.path, error.__class__.__name__)
            return problem(Busy.status, slug=Busy.slug, title=Busy.title, request=request,
                           detail=f"the database is busy; nothing was changed: try again in "
                                  f"{Busy.retry_after_seconds} s")
        # Never leak internals: the log has the traceback, the caller the request id.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, slug="internal-error", title="Internal error",
                       detail="Something went wrong on our side; quote the request id to support.",
                       request=request)
