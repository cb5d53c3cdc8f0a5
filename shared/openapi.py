"""The OpenAPI document as clients need it: who may call each operation, and every error it answers.

FastAPI documents a 422 in its own shape and no other error; the services answer
RFC 9457 problem+json (`shared/errors.py`) for all of them. Generated clients
(Java, .NET, TypeScript) parse errors from these declarations, so each
operation lists the problems it can give with the schema they really have, and
each protected operation names the bearer scheme and the scopes it needs, which
is also what makes Swagger UI's Authorize button work.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from shared.auth import required_scopes
from shared.http_errors import PROBLEM

BEARER = "bearer"

PROBLEM_SCHEMA = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. `type` is the problem's URI (its last segment the slug, "
    "docs/api.md); members beyond these are the problem's own (e.g. `errors`).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "The problem's URI: the configured base and the slug."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request path."},
        "request_id": {"type": "string", "description": "Quote it to support: it is on the service's log lines."},
    },
    "additionalProperties": True,
}

VALIDATION_PROBLEM_SCHEMA = {
    "title": "ValidationProblem",
    "description": "A 422: every wrong field, each with the reason.",
    "allOf": [
        {"$ref": "#/components/schemas/Problem"},
        {
            "type": "object",
            "required": ["errors"],
            "properties": {
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "reason"],
                        "properties": {
                            "field": {"type": "string", "description": "A dotted path: `requests[0].type`."},
                            "reason": {"type": "string"},
                            "in": {
                                "type": "string",
                                "enum": ["query", "path", "header"],
                                "description": "Absent for a body field.",
                            },
                        },
                    },
                },
            },
        },
    ],
}

# Status, and why an operation answers it; the schema is Problem unless named.
ERRORS = {
    "401": "No valid bearer token (`WWW-Authenticate` says where to sign in when configured).",
    "403": "The token's role lacks the scope this operation needs (or, for hub staff, it is another hub's).",
    "404": "No such resource (or not one this caller may see).",
    "409": "Conflicts with the resource's current state, or an `Idempotency-Key` is in use by a request still running.",
    "413": "The request body is over the service's limit.",
    "422": "One or more fields are wrong: `errors` names each one.",
    "429": "Too many requests from this caller: `Retry-After` says when to try again.",
    "503": "The identity provider (or the database) cannot be reached: try again after `Retry-After`.",
}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Send one to make a retry safe: the same key with the same request gets the first answer "
    "again (`Idempotent-Replayed: true`), with another request a 422, while the first runs a 409. "
    'An RFC 8941 string (`"8e03978e-…"`) or a bare token; the caller\'s own; kept 24 hours.',
    "schema": {"type": "string", "minLength": 1, "maxLength": 202},
}

RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
WRITES = {"post", "put", "patch", "delete"}


def document_security_and_errors(
    app: FastAPI, document: dict[str, Any], *, rate_limited: bool, unlimited_paths: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Add the bearer scheme, each operation's security and scopes, and its problem responses, to `document`."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ValidationProblem"] = VALIDATION_PROBLEM_SCHEMA
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A token from the council's identity provider (development: `kent-together token`). "
        "Its role(s) give the scopes each operation names (docs/security.md).",
    }
    scopes_of = {
        (getattr(route, "path_format", route.path), method.lower()): required_scopes(route.dependant)
        for route in api_routes(app)
        for method in route.methods or ()
    }
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "delete", "patch", "head", "options"}:
                continue
            scopes = scopes_of.get((path, method), frozenset())
            statuses = []
            if scopes:
                operation["security"] = [{BEARER: []}]
                operation["x-required-scopes"] = sorted(scopes)
                statuses += ["401", "403", "503"]
            if "{" in path:
                statuses.append("404")
            if method in WRITES and scopes:
                statuses.append("409")
            if "requestBody" in operation:
                statuses.append("413")
            if operation.get("parameters") or "requestBody" in operation:
                statuses.append("422")
            if rate_limited and path not in unlimited_paths:
                statuses.append("429")
            if method == "post" and scopes:
                parameters = operation.setdefault("parameters", [])
                if not any(p.get("name") == IDEMPOTENCY_KEY["name"] for p in parameters):
                    parameters.append(IDEMPOTENCY_KEY)
            responses = operation.setdefault("responses", {})
            for status in sorted(set(statuses)):
                _problem_response(responses, status)
            if "422" in responses and not _is_problem(responses["422"]):
                _problem_response(responses, "422", replace=True)
    for name in ("HTTPValidationError", "ValidationError"):
        if not _referenced(document, f"#/components/schemas/{name}"):
            schemas.pop(name, None)
    return document


def api_routes(app: FastAPI) -> list[Any]:
    """Every route with a dependant that the OpenAPI document shows, included routers flattened."""
    try:  # FastAPI >= 0.16x keeps an included router as one route; this flattens them
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:
        routes = list(app.routes)
    return [
        route
        for route in routes
        if getattr(route, "dependant", None) is not None and getattr(route, "include_in_schema", False)
    ]


def _problem_response(responses: dict[str, Any], status: str, *, replace: bool = False) -> None:
    existing = responses.get(status, {})
    schema = "ValidationProblem" if status == "422" else "Problem"
    description = ERRORS[status] if replace or not existing.get("description") else existing["description"]
    response = {
        **existing,
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if status in ("429", "503"):
        response["headers"] = RETRY_AFTER
    responses[status] = response


def _is_problem(response: dict[str, Any]) -> bool:
    return PROBLEM in response.get("content", {})


def _referenced(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_referenced(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_referenced(v, ref) for v in node)
    return False
