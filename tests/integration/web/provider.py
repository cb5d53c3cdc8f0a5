"""A real OpenID Connect provider on loopback for the web front's tests: Authlib's server, in oidc-provider-mock.

As Microsoft Entra ID does for an API's audience, it issues **JWT access tokens**
(RFC 9068: signed with its own key, published at its `jwks_uri`, carrying the
person's `roles` and `hub`), so the services can verify the person's own token
against its JWKS. In front of it, `ProviderCheck` refuses a token request whose
PKCE verifier does not match the challenge (oidc-provider-mock 0.3, the one for
Python 3.11, does not check PKCE itself) and counts the grants it answers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass

import flask
import httpx
import jwt
import werkzeug.serving
from oidc_provider_mock import User, init_app

from shared.bus import free_port

ACCESS_TOKEN_SECONDS = 3600


class ProviderCheck:
    """WSGI middleware: records each authorization request's code challenge, refuses a token request whose
    code_verifier does not match it, and counts token requests by grant type."""

    def __init__(self, app):
        self.app = app
        self.challenges: list[tuple[str, str]] = []
        self.verified = 0
        self.grants: Counter = Counter()

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/oauth2/authorize":
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            self.challenges.append((query.get("code_challenge", [""])[0], query.get("code_challenge_method", [""])[0]))
        if environ["PATH_INFO"] == "/oauth2/token":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            form = urllib.parse.parse_qs(body.decode())
            grant = form.get("grant_type", [""])[0]
            self.grants[grant] += 1
            if grant == "authorization_code":
                verifier = form.get("code_verifier", [""])[0]
                expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if not self.challenges or self.challenges[-1] != (expected, "S256"):
                    start_response("400 Bad Request", [("Content-Type", "application/json")])
                    return [b'{"error": "invalid_grant", "error_description": "PKCE verification failed"}']
                self.verified += 1
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


def _jwt_access_token(audience: str):
    """The provider's access-token generator: an RFC 9068 JWT for `audience`, signed with the provider's key."""

    def generate(client, grant_type, user, scope):
        from oidc_provider_mock._storage import storage  # the provider's own key, the one its /jwks publishes

        key = storage.jwk.as_dict(is_private=True)
        now = int(time.time())
        claims = {
            **{k: v for k, v in user.claims.items()},
            "sub": user.sub,
            "iss": flask.request.host_url.rstrip("/"),
            "aud": audience,
            "client_id": client.get_client_id(),
            "iat": now,
            "exp": now + ACCESS_TOKEN_SECONDS,
            "jti": uuid.uuid4().hex,
            "scope": scope or "",
        }
        return jwt.encode(claims, jwt.PyJWK(key).key, algorithm="RS256", headers={"kid": key["kid"], "typ": "at+jwt"})

    return generate


@dataclass
class Provider:
    issuer: str
    check: ProviderCheck

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    def revoke(self, sub: str) -> None:
        """The provider's own endpoint: every access and refresh token of the person goes (as an administrator
        revoking an account's sessions)."""
        assert httpx.post(f"{self.issuer}/users/{sub}/revoke-tokens").status_code == 204


@dataclass
class running_provider:
    """`with running_provider(people, audience=…) as provider:` the provider on a free loopback port, in a thread."""

    people: list[User]
    audience: str

    def __enter__(self) -> Provider:
        app = flask.Flask("identity-provider")
        app.config["OAUTH2_ACCESS_TOKEN_GENERATOR"] = _jwt_access_token(self.audience)
        init_app(app, require_nonce=True, user_claims=self.people)
        app.secret_key = uuid.uuid4().bytes
        check = ProviderCheck(app.wsgi_app)
        app.wsgi_app = check
        self.server = werkzeug.serving.make_server("127.0.0.1", free_port(), app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return Provider(issuer=f"http://127.0.0.1:{self.server.server_port}", check=check)

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(timeout=5)


async def through_provider(web: httpx.AsyncClient, sub: str, *, wanted: str = "/hub") -> httpx.Response:
    """Open a page, sign in at the provider as `sub`, come back: the web front's last answer."""
    assert (await web.get(wanted)).headers["location"] == "/sign-in"
    page = await web.get("/sign-in")
    assert 'id="sign-in-oidc"' in page.text and "Development sign-in" not in page.text
    begin = await web.get("/sign-in/oidc")
    authorize = begin.headers["location"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    async with httpx.AsyncClient(timeout=30) as browser:
        chosen = await browser.post(authorize, data={"sub": sub})
    assert chosen.status_code in (302, 303), chosen.text[:500]
    back = chosen.headers["location"]
    assert back.startswith(str(web.base_url)), back
    return await web.get(urllib.parse.urlsplit(back).path + "?" + urllib.parse.urlsplit(back).query)
