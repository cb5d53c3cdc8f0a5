"""JWT bearer auth with scopes by role.

Development: HS256 with the local key in var/ (`kent-together token`).
Production: RS256/ES256 verified against the identity provider's JWKS, as
Microsoft Entra ID issues them: the roles in a `roles` list (app roles), the
claim names configurable (`Claims`). The keys are fetched in the background and
held in memory (`SigningKeys`): verifying a token never waits on the identity
provider, except once for a key it has not seen (a rotation), and then never
blocks the event loop. An identity provider that cannot be reached is a 503,
not a 401: the caller's token may be good.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant

from shared.errors import Forbidden, IdentityProviderUnavailable, Unauthorized

log = logging.getLogger(__name__)

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "call-centre": frozenset({"referrals:write", "referrals:read", "status:read"}),
    "online-form": frozenset({"referrals:write", "status:read"}),
    "partner": frozenset({"referrals:write", "status:read"}),
    "hub": frozenset({"assignments:read", "assignments:write", "status:read"}),
    "recovery-lead": frozenset({"actions:read", "actions:write"}),
    "analyst": frozenset({"reporting:read", "actions:read"}),
    "admin": frozenset(
        {
            "referrals:write",
            "referrals:read",
            "referrals:search",
            "referrals:admin",
            "referrals:backfill",
            "assignments:read",
            "assignments:write",
            "assignments:admin",
            "assignments:backfill",
            "actions:read",
            "actions:write",
            "actions:admin",
            "reporting:read",
            "status:read",
            "admin",
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
    """Who is calling: the token's subject, role (`analyst+recovery-lead` for several), scopes and (for hub staff) their hub."""

    subject: str
    role: str
    scopes: frozenset[str]
    hub: str | None = None
    name: str | None = field(default=None, compare=False)
    """The person's name as colleagues know it: the token's `name` claim (OpenID Connect's), if it has one."""


@dataclass(frozen=True)
class Claims:
    """Which token claims carry the caller's role(s) and hub.

    Development tokens carry `role` (a string) and `hub`. Entra ID puts app roles
    in `roles` (a list); a hub may come from a claim of its own (an optional or
    directory-extension claim) or from an app role `hub.<slug>` (`hub.thanet`),
    which needs nothing but app-role assignments in Entra. `role_map` turns the
    provider's values into ours (`{"KentTogether.HubWorker": "hub"}`); a value
    that is already one of our roles needs no entry.

    The one mapping for everyone who reads the provider's claims: the services
    (their callers' access tokens) and the web front (the ID token it signs a
    person in with), both from the `KT_JWT_ROLE_CLAIM`, `KT_JWT_HUB_CLAIM` and
    `KT_JWT_ROLE_MAP` settings (`ServiceSettings.claims()`).
    """

    role: str = "role"
    hub: str = "hub"
    role_map: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


HUB_ROLE_PREFIX = "hub."


def principal_from_claims(claims: dict[str, Any], names: Claims = Claims()) -> Principal:
    """The caller the verified claims name: every known role's scopes, the hub from its claim or a `hub.<slug>` role."""
    value = claims.get(names.role)
    values = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
    roles: list[str] = []
    hubs: set[str] = set()
    for item in values:
        if not isinstance(item, str):
            continue
        item = names.role_map.get(item, item)
        if item.startswith(HUB_ROLE_PREFIX) and len(item) > len(HUB_ROLE_PREFIX):
            hubs.add(item[len(HUB_ROLE_PREFIX) :])
            item = "hub"
        if item in ROLE_SCOPES and item not in roles:
            roles.append(item)
    if not roles:
        raise Unauthorized("token has no known role")
    hub = claims.get(names.hub)
    if hub is not None and not isinstance(hub, str):
        raise Unauthorized("the token's hub claim is not a string")
    if hub:
        hubs.add(hub)
    if len(hubs) > 1:
        raise Unauthorized("the token names more than one hub")
    # Several roles name the caller as all of them, in a fixed order (the audit trail's `role`).
    role = "+".join(sorted(roles, key=ROLES.index))
    scopes = frozenset().union(*(ROLE_SCOPES[r] for r in roles))
    name = claims.get("name")
    return Principal(
        subject=str(claims["sub"]),
        role=role,
        scopes=scopes,
        hub=next(iter(hubs), None),
        name=(name.strip()[:200] or None) if isinstance(name, str) else None,
    )


class UnknownSigningKey(Exception):
    """The token names a key (`kid`) the verifier does not hold yet."""


class SigningKeys:
    """The identity provider's signing keys (its JWKS), fetched off the event loop and refreshed in the background.

    `run()` fetches at start and every `refresh_seconds`; a failed fetch keeps
    the keys held and is retried sooner. A token with a key not held makes one
    fetch (shared by every request that needs it, at most one per
    `min_refetch_seconds`), so a rotation is picked up at once and a stream of
    made-up key ids cannot hammer the provider.
    """

    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float = 600.0,
        timeout_seconds: float = 5.0,
        min_refetch_seconds: float = 30.0,
        retry_seconds: float = 15.0,
    ):
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.timeout_seconds = timeout_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.retry_seconds = retry_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetching: asyncio.Task[bool] | None = None
        self._last_fetch_started = float("-inf")
        self.last_error: str | None = None
        self.fetched_total = 0
        self._task: asyncio.Task[Any] | None = None
        self._stopped = False

    def get(self, kid: str | None) -> jwt.PyJWK:
        """The key for `kid` (the only key when the token names none); UnknownSigningKey if not held."""
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        key = self._keys.get(kid) if kid is not None else None
        if key is None:
            raise UnknownSigningKey(kid)
        return key

    async def fetch_for(self, kid: str | None) -> None:
        """Wait (at most the timeout) for a fetch that may bring `kid`: the one under way, or a new one if allowed.

        IdentityProviderUnavailable when the provider does not answer in time or fails.
        """
        if self._fetching is None:
            if time.monotonic() - self._last_fetch_started < self.min_refetch_seconds:
                if self.last_error is not None:
                    raise IdentityProviderUnavailable(
                        f"the identity provider's keys cannot be fetched: {self.last_error}"
                    )
                return  # fetched a moment ago without this key: the token's key is not the provider's
            self._start_fetch()
        assert self._fetching is not None  # under way, or just started
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await asyncio.shield(self._fetching)
        except TimeoutError:
            raise IdentityProviderUnavailable("the identity provider's keys did not arrive in time") from None
        if self.last_error is not None:
            raise IdentityProviderUnavailable(f"the identity provider's keys cannot be fetched: {self.last_error}")

    def _start_fetch(self) -> asyncio.Task[bool]:
        if self._fetching is None:
            self._last_fetch_started = time.monotonic()
            self._fetching = asyncio.create_task(self._fetch(), name="jwks-fetch")
        return self._fetching

    async def _fetch(self) -> bool:
        """Replace the keys held with the provider's; on any failure keep them, say why, and return False."""
        try:
            # The fetch itself may take longer than a request waits for it: it goes on in the background.
            async with httpx.AsyncClient(timeout=max(self.timeout_seconds * 4, 30.0)) as client:
                response = await client.get(self.url, headers={"Accept": "application/json"})
                response.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(response.json()).keys
            self._keys = {key.key_id: key for key in keys if key.key_id and key.public_key_use in (None, "sig")}
            self.last_error = None
            self.fetched_total += 1
            return True
        except Exception as error:
            self.last_error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            log.warning("identity provider keys: fetch from %s failed (%s)", self.url, self.last_error)
            return False
        finally:
            self._fetching = None

    async def run(self) -> None:
        """Fetch now and every `refresh_seconds` (sooner after a failure) until stopped."""
        self._task = asyncio.current_task()
        while not self._stopped:
            fetched = await asyncio.shield(self._start_fetch())
            await asyncio.sleep(self.refresh_seconds if fetched else self.retry_seconds)

    def stop(self) -> None:
        """Stop at once, even mid-fetch (a fetch writes nothing), and even before `run` has begun."""
        self._stopped = True
        for task in (self._task, self._fetching):
            if task is not None:
                task.cancel()  # a fetch hanging on the provider must not outlive the service


ONLINE_FORM_ROLE = "online-form"


class TokenVerifier:
    """Verifies bearer tokens: HS256 with `signing_key`, or the identity provider's (`keys`, its JWKS).

    Beside the provider's tokens, `online_form_key` (HS256) may sign tokens for the
    online form's role and nothing else: the web front's resident pages call as the
    service identity `web-online-form`, which can write a referral and read nothing
    back but the status check (docs/web.md, "The resident's form in production").
    """

    def __init__(
        self,
        *,
        issuer: str | Sequence[str],
        audience: str | Sequence[str],
        signing_key: str = "",
        jwks_url: str = "",
        keys: SigningKeys | None = None,
        claims: Claims = Claims(),
        online_form_key: str = "",
    ):
        self.issuer = issuer
        self.audience = audience
        self.signing_key = signing_key
        self.online_form_key = online_form_key
        self.keys = keys if keys is not None else SigningKeys(jwks_url) if jwks_url else None
        self.claims = claims
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The caller a valid token names; Unauthorized otherwise. Verified tokens are remembered until they expire.

        UnknownSigningKey when the token's key is not held yet: `authenticate` fetches it.
        """
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = self._verify(token)
        if len(self._verified) >= 10_000:
            self._verified.clear()  # a crude bound; a front-end keeps reusing one token anyway
        self._verified[token] = (principal, expires)
        return principal

    async def authenticate(self, token: str) -> Principal:
        """`verify`, fetching the identity provider's keys (without blocking the loop) when the token's is not held."""
        try:
            return self.verify(token)
        except UnknownSigningKey:
            pass
        kid = _kid(token)
        assert self.keys is not None  # only a verifier holding fetched keys raises UnknownSigningKey
        await self.keys.fetch_for(kid)
        try:
            return self.verify(token)
        except UnknownSigningKey:
            raise Unauthorized(f"invalid token: the identity provider has no signing key {kid!r}") from None

    def _verify(self, token: str) -> tuple[Principal, float]:
        online_form = False
        key: str | jwt.PyJWK
        try:
            if self.keys is not None and self.online_form_key and _alg(token) == "HS256":
                key, algorithms, online_form = self.online_form_key, ["HS256"], True
            elif self.keys is not None:
                key = self.keys.get(_kid(token))
                algorithms = ["RS256", "ES256"]
            else:
                key, algorithms = self.signing_key, ["HS256"]
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise Unauthorized(f"invalid token: {error}") from None
        if online_form:
            # The key is the online form's only: whatever else the token claims, it is refused.
            principal = principal_from_claims(claims)
            if principal.role != ONLINE_FORM_ROLE or principal.hub is not None:
                raise Unauthorized("invalid token: the online form's key signs the online form's tokens only")
            return principal, float(claims["exp"])
        return principal_from_claims(claims, self.claims), float(claims["exp"])


def _alg(token: str) -> str | None:
    try:
        return jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError as error:
        raise Unauthorized(f"invalid token: {error}") from None


def _kid(token: str) -> str | None:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as error:
        raise Unauthorized(f"invalid token: {error}") from None
    return kid if isinstance(kid, str) else None


def mint_token(
    *,
    signing_key: str,
    role: str,
    hub: str | None = None,
    subject: str | None = None,
    issuer: str,
    audience: str,
    ttl_seconds: int = 12 * 3600,
    name: str | None = None,
) -> str:
    """A development token (HS256) for `role`; hub staff need their hub's slug; `name` as colleagues know them."""
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
    if name:
        claims["name"] = name
    return jwt.encode(claims, signing_key, algorithm="HS256")


async def _principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a bearer token is required")
    principal: Principal = await request.app.state.verifier.authenticate(token)
    request.state.principal = principal
    return principal


def require(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that returns the caller if their token carries `scope`."""

    # async: a plain def dependency would hop to a worker thread on every request.
    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden(f"this needs the {scope!r} scope, which role {principal.role!r} does not have")
        return principal

    check.__name__ = f"require_{scope.replace(':', '_')}"
    cast(Any, check).scope = scope  # read by `required_scopes`: the route's declared access, for docs and tests
    return check


def required_scopes(dependant: Dependant) -> frozenset[str]:
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
