"""Domain errors, in plain Python: what went wrong, never how HTTP says it.

A use case or a domain rule raises these; the HTTP edge (shared/http_errors.py,
installed by shared/app.py) maps each family to its RFC 9457 problem+json answer
once. A service's own error subclasses one of these families and may name itself
more precisely with `slug` and `title`; its status is always its family's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "Busy",
    "Conflict",
    "DomainError",
    "Forbidden",
    "IdentityProviderUnavailable",
    "InvalidTransition",
    "LOCK_TIMEOUTS",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "ValidationFailed",
    "field_errors",
    "is_lock_timeout",
]


class DomainError(Exception):
    """Something a caller asked for cannot be done; `detail` says why in words, `extensions` adds fields."""

    slug: str | None = None
    """A stable machine name for this error, where a subclass names itself more precisely than its family."""
    title: str | None = None
    """A short, fixed summary, with `slug`."""

    def __init__(self, detail: str = "", **extensions: Any) -> None:
        super().__init__(detail or type(self).__name__)
        self.detail = detail
        self.extensions: dict[str, Any] = extensions


class Unauthorized(DomainError):
    """No identity, or one that cannot be trusted."""


class Forbidden(DomainError):
    """A known caller asking for what their role or hub does not allow."""


class IdentityProviderUnavailable(DomainError):
    """The identity provider's signing keys cannot be had: the token may be good, so not Unauthorized."""


class NotFound(DomainError):
    pass


class Conflict(DomainError):
    """The request disagrees with the state of what it names."""


class InvalidTransition(Conflict):
    """A lifecycle does not allow this move from where it is."""


class PayloadTooLarge(DomainError):
    pass


class ValidationFailed(DomainError):
    """One or more fields are wrong: `errors` names each field and the reason."""

    def __init__(self, errors: list[dict[str, str]], detail: str = "") -> None:
        count = len(errors)
        super().__init__(detail or f"{count} field{'s' if count != 1 else ''} invalid", errors=errors)


class Busy(DomainError):
    """The database is busy (a lock not had in time): nothing was changed; the caller may go again shortly."""


LOCK_TIMEOUTS = (
    "database is locked",
    "database table is locked",
    "lock timeout",
    "could not obtain lock",
    "deadlock detected",
    "canceling statement due to lock timeout",
)


def is_lock_timeout(error: BaseException) -> bool:
    """A lock not had in time (SQLite's busy timeout, PostgreSQL's lock_timeout or a deadlock): worth a retry."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(error, DBAPIError):
        return False
    text = str(error.orig if error.orig is not None else error).lower()
    return any(words in text for words in LOCK_TIMEOUTS)


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
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
        entry = {"field": field or source, "reason": _reason(error)}
        if source != "body":
            entry["in"] = source
        out.append(entry)
    return out


def _reason(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    message = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message


_MOVED_TO_HTTP_EDGE = frozenset(
    {
        "PROBLEM",
        "ProblemSettings",
        "install_error_handlers",
        "problem",
        "problem_settings",
        "send_domain_error",
        "send_problem",
    }
)


def __getattr__(name: str) -> Any:
    """`from shared.errors import problem` (and the rest of the HTTP edge) keeps working, without this module
    importing the web framework: they live in shared/http_errors.py now."""
    if name in _MOVED_TO_HTTP_EDGE:
        from shared import http_errors

        return getattr(http_errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
