"""JWT bearer auth with scopes by role.

Development: HS256 with the local key in var/ (`kent-together token`).
Production: RS256/ES256 verified against the identity provider's JWKS.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Request

from shared.errors import Forbidden, Unauthorized

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "call-centre": frozenset({"referrals:write", "referrals:read", "status:read"}),
    "online-form": frozenset({"referrals:write", "status:read"}),
    "partner": frozenset({"referrals:write", "status:read"}),
    "hub": frozenset({"assignments:read", "assignments:write", "status:read"}),
    "recovery-lead": frozenset({"actions:read", "actions:write"}),
    "analyst": frozenset({"reporting:read", "actions:read"}),
    "admin": frozenset(
        {
            "referrals:write", "referrals:read", "referrals:search", "referrals:admin", "referrals:backfill",
            "assignments:read", "assignments:write", "assignments:admin", "assignments:backfill",
            "actions:read", "actions:write", "actions:admin",
            "reporting:read", "status:read", "admin",
        }
    ),
}
ROLES = tuple(ROLE_SCOPES)
# `status:read`: who helps at a postcode, and where a request is by its reference and postcode
# (no personal data either way), for the front door: the online form, advisers, partners, hubs.
# The `…:backfill` scopes record when something really happened (a referral received,
# an assignment accepted) rather than now: for migrating cases from a legacy system
# and for `kent-together demo`. Only administrators have them.


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject, role, scopes and (for hub staff) their hub."""

    subject: str
    role: str
    scopes: frozenset[str]
    hub: str | None = None


class TokenVerifier:
    def __init__(self, *, issuer: str, audience: str, signing_key: str = "", jwks_url: str = ""):
        self.issuer = issuer
        self.audience = audience
        self.signing_key = signing_key
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The caller a valid token names; Unauthorized otherwise. Verified tokens are remembered until they expire."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = self._verify(token)
        if len(self._verified) >= 10_000:
            self._verified.clear()  # a crude bound; a front-end keeps reusing one token anyway
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            if self.jwks is not None:
                key = self.jwks.get_signing_key_from_jwt(token).key
                algorithms = ["RS256", "ES256"]
            else:
                key, algorithms = self.signing_key, ["HS256"]
            claims = jwt.decode(
                token, key, algorithms=algorithms, audience=self.audience, issuer=self.issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise Unauthorized(f"invalid token: {error}") from None
        role = claims.get("role")
        if role not in ROLE_SCOPES:
            raise Unauthorized("token has no known role")
        principal = Principal(
            subject=str(claims["sub"]),
            role=role,
            scopes=ROLE_SCOPES[role],
            hub=claims.get("hub"),
        )
        return principal, float(claims["exp"])


def mint_token(
    *, signing_key: str, role: str, hub: str | None = None, subject: str | None = None,
    issuer: str, audience: str, ttl_seconds: int = 12 * 3600,
) -> str:
    """A development token (HS256) for `role`; hub staff need their hub's slug."""
    if role not in ROLE_SCOPES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if role == "hub" and not hub:
        raise ValueError("a hub token needs --hub")
    now = int(time.time())
    claims = {
        "sub": subject or f"dev-{role}-{uuid.uuid4().hex[:8]}",
        "role": role,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if hub:
        claims["hub"] = hub
    return jwt.encode(claims, signing_key, algorithm="HS256")


async def _principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a bearer token is required")
    principal = request.app.state.verifier.verify(token)
    request.state.principal = principal
    return principal


def require(scope: str):
    """A dependency that returns the caller if their token carries `scope`."""

    # async: a plain def dependency would hop to a worker thread on every request.
    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden(f"this needs the {scope!r} scope, which role {principal.role!r} does not have")
        return principal

    check.__name__ = f"require_{scope.replace(':', '_')}"
    check.scope = scope  # read by `required_scopes`: the route's declared access, for docs and tests
    return check


def required_scopes(dependant) -> frozenset[str]:
    """The scopes a route's `require(...)` dependencies declare (empty: no token needed); give `route.dependant`."""
    found: set[str] = set()
    pending = list(dependant.dependencies)
    while pending:
        dependant = pending.pop()
        scope = getattr(dependant.call, "scope", None)
        if scope:
            found.add(scope)
        pending.extend(dependant.dependencies)
    return frozenset(found)
