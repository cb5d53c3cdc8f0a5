"""Every route of every installed service, called by every role and by nobody.

Two independent statements of who may call what must agree with each other and
with what the running service answers:
- the declared table: the scopes each route's `require(...)` dependency names,
  read from the route itself (`required_scopes`), with `ROLE_SCOPES`;
- the hand-written matrix (tests/support/access.py), route by route, so a route opened by mistake
  (a dependency dropped, a scope widened) fails here even though it is
  "consistent" with itself.

/health, /ready and /metrics need no user token: probes and the Prometheus
scraper have none, and none of the three says anything about a resident
(metrics carry route templates and counts only); the scrape port is kept off
the ingress instead (docs/security.md).
"""

from __future__ import annotations

import uuid

import pytest

from shared.auth import ROLE_SCOPES, mint_token, required_scopes
from tests.support.access import CALLERS, DEFAULT_CALLERS, OWN_HUB, PUBLIC, callers
from tests.support.apps import token
from tests.support.services import Operation, operations, service_names


def concrete_path(operation: Operation) -> str:
    """The route's path with plausible values: the caller's own hub, an integer, or an id that exists nowhere."""
    values = {}
    for param in operation.dependant.path_params:
        if param.name == "hub":
            values[param.name] = OWN_HUB
        elif param.field_info.annotation is int:
            values[param.name] = "1"
        else:
            values[param.name] = str(uuid.uuid4())
    return operation.path.format(**values)


def forged_token(settings) -> dict[str, str]:
    value = mint_token(
        signing_key="not-the-service-key-" + "y" * 32,
        role="admin",
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    return {"Authorization": f"Bearer {value}"}


async def call(client, method: str, path: str, headers: dict[str, str]):
    body = {"json": {}} if method in ("POST", "PATCH", "PUT") else {}
    return await client.request(method, path, headers=headers, **body)


@pytest.mark.parametrize("service", service_names())
async def test_every_route_declares_the_scopes_its_callers_have_and_no_more(service, start_service):
    """The declared table (scopes on the route) gives exactly the roles of the hand-written matrix."""
    async with start_service(service) as client:
        wrong = []
        for op in operations(client.app):
            operation = str(op)
            scopes = required_scopes(op.dependant)
            if operation in PUBLIC:
                if scopes:
                    wrong.append(f"{operation} is public in the matrix but needs {sorted(scopes)}")
                continue
            if not scopes:
                wrong.append(f"{operation} needs no token at all")
                continue
            by_declaration = {role for role, held in ROLE_SCOPES.items() if scopes <= held}
            if by_declaration != callers(service, operation):
                wrong.append(
                    f"{operation} declares {sorted(scopes)}: open to {sorted(by_declaration)}, "
                    f"the matrix says {sorted(callers(service, operation))}"
                )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("service", service_names())
async def test_every_role_gets_what_it_should_from_every_route(service, start_service):
    """401 without a token or with a forged one, 403 for a role without the scope, through for a role with it."""
    async with start_service(service) as client:
        settings = client.settings
        tokens = {role: token(settings, role, hub=OWN_HUB if role == "hub" else None) for role in ROLE_SCOPES}
        wrong = []
        for op in operations(client.app):
            operation, method, path = str(op), op.method, concrete_path(op)
            public = operation in PUBLIC
            for who, headers in [("no token", {}), ("forged admin token", forged_token(settings))]:
                response = await call(client, method, path, headers)
                if public:
                    if response.status_code in (401, 403):
                        wrong.append(f"{operation} with {who}: {response.status_code}, but it is public")
                elif (
                    response.status_code != 401
                    or response.headers.get("www-authenticate") != "Bearer"
                    or response.headers["content-type"] != "application/problem+json"
                ):
                    wrong.append(f"{operation} with {who}: {response.status_code}, expected a 401 problem")
            if public:
                continue
            allowed = callers(service, operation)
            for role, headers in tokens.items():
                response = await call(client, method, path, headers)
                if role in allowed:
                    if response.status_code in (401, 403) or response.status_code >= 500:
                        wrong.append(f"{operation} as {role}: {response.status_code} {response.text[:200]}")
                elif response.status_code != 403 or response.json().get("status") != 403:
                    wrong.append(f"{operation} as {role}: {response.status_code}, expected a 403 problem")
    assert not wrong, "\n".join(wrong)


def test_the_matrix_names_only_roles_that_exist():
    named = set().union(*(roles for table in CALLERS.values() for roles in table.values()), *DEFAULT_CALLERS.values())
    assert named <= set(ROLE_SCOPES)
