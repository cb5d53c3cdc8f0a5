"""Sign-in with the council's identity provider: OpenID Connect, authorization code with PKCE (Authlib).

What the provider says about a person becomes a role and (for hub staff) a hub
through the claim mapping the services use too (`shared.auth.Claims`, from
KT_JWT_ROLE_CLAIM, KT_JWT_HUB_CLAIM and KT_JWT_ROLE_MAP): Microsoft Entra ID,
say, issues app roles as a `roles` list. The provider's access and refresh
tokens are kept in the (sealed, server-side) session: with
`WEB_SERVICE_TOKENS=provider` the person's own access token is what the pages
call the services with, renewed with the refresh token before it expires.
"""

from __future__ import annotations

import logging
import secrets
import time

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from shared.auth import ROLES, Claims, principal_from_claims
from shared.errors import Unauthorized

log = logging.getLogger(__name__)

HUB_SLUGS = (
    "ashford",
    "canterbury",
    "dartford",
    "dover",
    "folkestone-hythe",
    "gravesham",
    "maidstone",
    "sevenoaks",
    "swale",
    "thanet",
    "tonbridge-malling",
    "tunbridge-wells",
)
# The people the web front is for (the online form and partners use the API with their own tokens).
STAFF_ROLES = ("call-centre", "hub", "recovery-lead", "analyst", "admin")
RENEW_BEFORE_SECONDS = 60
"""An access token this close to expiring is renewed before a call, so no call carries one that expires on the way."""


class SignInFailed(Exception):
    """The provider's answer does not sign anyone in: said plainly on the page, never a 500."""


def person_from_claims(claims: dict, names: Claims) -> dict:
    """Who the claims name: {"sub", "name", "role", "hub"}; SignInFailed if no known role (or a hub worker has no hub).

    The services read the same claims of the person's access token with the same mapping (`principal_from_claims`).
    """
    try:
        principal = principal_from_claims(claims, names)
    except Unauthorized as refused:
        if "no known role" in refused.detail:
            raise SignInFailed("your account has no Kent Together role: ask your manager to give you one") from None
        raise SignInFailed("your account's hub is not clear: ask your manager") from None
    roles = principal.role.split("+")
    role = next((r for r in ROLES if r in roles and r in STAFF_ROLES), None)
    if role is None:
        raise SignInFailed("your account has no Kent Together role: ask your manager to give you one")
    if role == "hub" and principal.hub not in HUB_SLUGS:
        raise SignInFailed("your account is a hub worker's but names no Kent hub: ask your manager")
    name = claims.get("name") or claims.get("preferred_username") or claims.get("email") or str(claims["sub"])
    return {
        "sub": f"oidc:{claims['sub']}",
        "name": str(name),
        "role": role,
        "hub": principal.hub if role == "hub" else None,
        "via": "oidc",
    }


def provider_tokens(token: dict, *, now: float, kept_refresh_token: str | None = None) -> dict:
    """What the session keeps of a token response: the access token, when it expires, the refresh token."""
    expires_in = token.get("expires_in")
    expires_at = now + float(expires_in) if expires_in is not None else float(token.get("expires_at") or now)
    return {
        "access_token": token["access_token"],
        "expires_at": expires_at,
        "refresh_token": token.get("refresh_token") or kept_refresh_token,
    }


class OpenIdClient:
    def __init__(self, settings, *, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.http = httpx.AsyncClient(timeout=10, transport=transport)
        self._metadata: dict | None = None
        self._keys: tuple[KeySet, float] | None = None

    async def close(self) -> None:
        await self.http.aclose()

    async def metadata(self) -> dict:
        if self._metadata is None:
            response = await self.http.get(f"{self.issuer}/.well-known/openid-configuration")
            response.raise_for_status()
            self._metadata = response.json()
        return self._metadata

    def _client(self, redirect_uri: str | None) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.oidc_client_id,
            client_secret=self.settings.oidc_client_secret.get_secret_value() or None,
            scope=self.settings.oidc_scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )

    async def begin(self, *, redirect_uri: str) -> tuple[str, dict]:
        """The provider's sign-in address, and what the session keeps until the person comes back."""
        metadata = await self.metadata()
        pending = {
            "state": secrets.token_urlsafe(24),
            "nonce": secrets.token_urlsafe(24),
            "code_verifier": generate_token(64),
            "at": time.time(),
        }
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=pending["state"],
                nonce=pending["nonce"],
                code_verifier=pending["code_verifier"],
            )
        return url, pending

    async def finish(self, *, pending: dict, redirect_uri: str, state: str, code: str, now: float) -> tuple[dict, dict]:
        """The ID token's verified claims, and the provider's tokens, after exchanging the code (with the PKCE
        verifier)."""
        if not pending or not secrets.compare_digest(state or "", pending.get("state", "")):
            raise SignInFailed("this sign-in link has expired or was not started here: sign in again")
        if time.time() - pending.get("at", 0) > 600:
            raise SignInFailed("the sign-in took too long: sign in again")
        metadata = await self.metadata()
        async with self._client(redirect_uri) as client:
            try:
                token = await client.fetch_token(
                    metadata["token_endpoint"], code=code, code_verifier=pending["code_verifier"]
                )
            except Exception as error:  # the provider refused the code: say so, keep the details in the log
                log.warning("the token request was refused: %s", error)
                raise SignInFailed(f"the identity provider refused the sign-in ({error.__class__.__name__})") from None
        id_token = token.get("id_token")
        if not id_token:
            raise SignInFailed("the identity provider sent no ID token")
        try:
            decoded = jwt.decode(id_token, await self._key_set(metadata))
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": metadata.get("issuer", self.issuer)},
                aud={"essential": True, "value": self.settings.oidc_client_id},
                nonce={"essential": True, "value": pending["nonce"]},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as error:
            raise SignInFailed(f"the ID token is not valid ({error.__class__.__name__})") from None
        return decoded.claims, provider_tokens(token, now=now)

    async def refresh(self, tokens: dict, *, now: float) -> dict:
        """The provider's new tokens for the refresh token; SignInFailed when it refuses (the person signs in again)."""
        if not tokens.get("refresh_token"):
            raise SignInFailed("the identity provider gave no refresh token")
        metadata = await self.metadata()
        async with self._client(None) as client:
            client.scope = None  # the scope granted at sign-in, as the provider recorded it (RFC 6749 §6)
            try:
                token = await client.refresh_token(metadata["token_endpoint"], refresh_token=tokens["refresh_token"])
            except Exception as error:
                log.info("the identity provider refused to renew a sign-in: %s", error)
                raise SignInFailed(
                    f"the identity provider refused to renew the sign-in ({error.__class__.__name__})"
                ) from None
        if not token.get("access_token"):
            raise SignInFailed("the identity provider sent no access token")
        return provider_tokens(token, now=now, kept_refresh_token=tokens["refresh_token"])

    async def _key_set(self, metadata: dict) -> KeySet:
        if self._keys is None or self._keys[1] < time.time():
            response = await self.http.get(metadata["jwks_uri"])
            response.raise_for_status()
            self._keys = (KeySet.import_key_set(response.json()), time.time() + 3600)
        return self._keys[0]

    async def sign_out_url(self, *, after: str) -> str | None:
        """Where to send the person so the provider signs them out too (if it says how)."""
        endpoint = (await self.metadata()).get("end_session_endpoint")
        if not endpoint:
            return None
        return str(
            httpx.URL(endpoint, params={"client_id": self.settings.oidc_client_id, "post_logout_redirect_uri": after})
        )
