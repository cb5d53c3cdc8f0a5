"""Domain errors, mapped to RFC 9457 problem+json once, here, for every service."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


class DomainError(Exception):
    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str = "", **extensions: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extensions = extensions


class Unauthorized(DomainError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(DomainError):
    status, slug, title = 403, "forbidden", "Not allowed"


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


def problem(status: int, *, slug: str, title: str, detail: str, request: Request | None = None, **extensions):
    body = {"type": f"https://kent-together.example/problems/{slug}", "title": title, "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    body.update(extensions)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": str(Busy.retry_after_seconds)}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, error: DomainError):
        return problem(error.status, slug=error.slug, title=error.title, detail=error.detail,
                       request=request, **error.extensions)

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
