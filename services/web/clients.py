"""Typed calls to the four services' public HTTP APIs, each with the signed-in person's token.

The web front is a client like any council front-end: it reads and changes
nothing but through these APIs. The bearer token is the person's own from the
identity provider, or made here for them (see `Tokens`); either way it stays on
the server and never reaches the browser.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.auth import mint_token


class ApiError(Exception):
    """An API answered with a problem: its status, its detail and (for a 422) its field errors."""

    def __init__(self, status: int, problem: dict):
        self.status = status
        self.problem = problem
        super().__init__(f"{status}: {problem.get('detail') or problem.get('title')}")

    @property
    def field_errors(self) -> list[dict]:
        return list(self.problem.get("errors") or [])


class ServiceUnavailable(Exception):
    """A service did not answer: the page says so, and nothing is stored."""


@dataclass(frozen=True)
class Caller:
    """Whom a call is made for: their subject, role and (hub staff) hub, and the identity provider's access token
    for them when the services are called with it (WEB_SERVICE_TOKENS=provider)."""

    subject: str
    role: str
    hub: str | None = None
    access_token: str | None = field(default=None, repr=False)
    name: str | None = field(default=None, compare=False)
    """Their name from the sign-in, carried as the `name` claim of the tokens made for them (hub colleagues see it)."""


class Tokens:
    """Short-lived service tokens for callers, signed with the key the services trust.

    The embedded default signs with the development key in var/ (the one
    `kent-together token` uses), production with KT_JWT_SIGNING_KEY, shared with
    the services. Where the services verify the identity provider's tokens
    (KT_JWT_JWKS_URL) the people's own tokens are passed on instead, and this
    signs only the resident's pages' tokens, with KT_JWT_ONLINE_FORM_KEY.
    """

    def __init__(self, *, signing_key: str, issuer: str, audience: str, ttl_seconds: int = 300):
        self.signing_key = signing_key
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl_seconds
        self._made: dict[Caller, tuple[str, float]] = {}

    def for_caller(self, caller: Caller) -> str:
        token, good_until = self._made.get(caller, ("", 0.0))
        if good_until > time.time():
            return token
        token = mint_token(
            signing_key=self.signing_key,
            role=caller.role,
            hub=caller.hub,
            subject=caller.subject,
            issuer=self.issuer,
            audience=self.audience,
            ttl_seconds=self.ttl,
            name=caller.name,
        )
        if len(self._made) > 10_000:
            self._made.clear()
        self._made[caller] = (token, time.time() + self.ttl - 60)
        return token


class Api:
    """One service's API."""

    def __init__(self, http: httpx.AsyncClient, tokens: Tokens):
        self.http = http
        self.tokens = tokens

    async def call(
        self,
        method: str,
        path: str,
        *,
        caller: Caller | None,
        json: Any = None,
        params: dict | None = None,
        headers: dict | None = None,
        files: dict | None = None,
        raw: bool = False,
    ):
        """`caller=None` for a public route (the plan's progress): no token is sent."""
        token = (
            {}
            if caller is None
            else {"Authorization": f"Bearer {caller.access_token or self.tokens.for_caller(caller)}"}
        )
        sent = {**token, **(headers or {})}
        if params:
            params = {k: v for k, v in params.items() if v not in (None, "", [])}
        try:
            response = await self.http.request(method, path, json=json, params=params, headers=sent, files=files)
        except httpx.HTTPError as error:
            raise ServiceUnavailable(f"{self.http.base_url} did not answer: {error.__class__.__name__}") from None
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:200]}
            raise ApiError(response.status_code, problem if isinstance(problem, dict) else {"detail": str(problem)})
        if raw:
            return response
        return response.json() if response.content else None


@dataclass
class Clients:
    """The four services, built once at start-up."""

    referrals: Api
    fulfilment: Api
    actions: Api
    reporting: Api

    @classmethod
    def build(
        cls,
        *,
        urls: dict[str, str],
        tokens: Tokens,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 15.0,
    ) -> Clients:
        def api(name: str) -> Api:
            return Api(httpx.AsyncClient(base_url=urls[name], timeout=timeout, transport=transport), tokens)

        return cls(
            referrals=api("referrals"), fulfilment=api("fulfilment"), actions=api("actions"), reporting=api("reporting")
        )

    async def close(self) -> None:
        for api in (self.referrals, self.fulfilment, self.actions, self.reporting):
            await api.http.aclose()
