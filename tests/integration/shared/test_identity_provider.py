"""A council's identity provider (Microsoft Entra ID) as the services meet it: its tokens, its keys, its outages.

The provider is a real HTTP server on loopback serving a JWKS; the service is
the reporting service as it runs. What a slow or absent provider must not do is
freeze the service or turn a good token into a 401.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from services.reporting.app import ReportingSettings, create_app
from tests.support import apps
from tests.support.apps import running

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
AUDIENCE = "api://kent-together-reporting"
AUTHORIZE = f"https://login.microsoftonline.com/{TENANT}/oauth2/authorize"
FIGURES = "/v1/figures/requests"


class IdentityProvider:
    """A JWKS endpoint that can rotate its key, fail, or hang as a real one does on a bad day."""

    def __init__(self):
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.mode = "serve"  # or "fail" (HTTP 503) or "hang" (no answer for 30 s)
        self.requests = 0
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.rotate()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                provider.requests += 1
                if provider.mode == "hang":
                    provider.hanging.set()
                    provider.release.wait(30)
                if provider.mode == "fail":
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": [provider.jwk(kid) for kid in provider.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/{TENANT}/discovery/v2.0/keys"

    def rotate(self) -> str:
        kid = uuid.uuid4().hex[:16]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.current = kid
        return kid

    def jwk(self, kid: str) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
        return {**jwk, "kid": kid, "use": "sig", "kty": "RSA", "x5t": kid}

    def token(self, **claims) -> str:
        """An access token shaped as Entra ID v2.0 issues it to a client of an app with app roles."""
        now = int(time.time())
        base = {
            "aud": AUDIENCE,
            "iss": ISSUER,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "aio": "AWQAm/8aAAAA",
            "azp": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
            "azpacr": "0",
            "name": "Priya Analyst",
            "oid": "00000000-0000-0000-66f3-3332eca7ea81",
            "preferred_username": "priya.analyst@kent.gov.uk",
            "rh": "0.AAAA.",
            "roles": ["analyst"],
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "tid": TENANT,
            "uti": "fqiBqXLPj0eQa82S-IYFAA",
            "ver": "2.0",
        }
        return jwt.encode(
            {**base, **claims}, self.keys[self.current], algorithm="RS256", headers={"kid": self.current, "typ": "JWT"}
        )

    def stop(self):
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def provider():
    instance = IdentityProvider()
    yield instance
    instance.stop()


@pytest.fixture
def settings(reporting_sqlite_url, broker, provider, unique, var_dir):
    """Identity is the same on either database: SQLite only."""
    return ReportingSettings(
        database_url=reporting_sqlite_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topics=apps.test_topics(unique),
        var_dir=var_dir,
        log_json=False,
        run_consumers=False,
        run_relay=False,
        jwt_jwks_url=provider.url,
        jwt_issuer=f"https://sts.windows.net/{TENANT}/,{ISSUER}",
        jwt_audience=f"{AUDIENCE},https://reporting.kent-together.test",
        jwt_role_claim="roles",
        jwt_authorization_uri=AUTHORIZE,
        jwks_timeout_seconds=1.0,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_entra_id_token_with_an_analyst_app_role_reads_the_figures(settings, provider):
    async with running(create_app(settings)) as client:
        response = await client.get(FIGURES, headers=bearer(provider.token()))
        assert response.status_code == 200, response.text
        # A v1.0 token for Power BI: the audience is the feed's origin, the issuer the v1 one.
        power_bi = provider.token(
            aud="https://reporting.kent-together.test", iss=f"https://sts.windows.net/{TENANT}/", ver="1.0"
        )
        assert (await client.get(FIGURES, headers=bearer(power_bi))).status_code == 200


async def test_an_entra_id_token_without_a_reporting_role_is_forbidden(settings, provider):
    async with running(create_app(settings)) as client:
        response = await client.get(FIGURES, headers=bearer(provider.token(roles=["hub.thanet"])))
    assert response.status_code == 403
    assert response.json()["type"] == "tag:kent-together,2026:problems/forbidden"


async def test_a_rotated_signing_key_is_fetched_when_a_token_first_uses_it(settings, provider):
    settings = settings.model_copy(update={"jwks_min_refetch_seconds": 0})
    async with running(create_app(settings)) as client:
        assert (await client.get(FIGURES, headers=bearer(provider.token()))).status_code == 200
        provider.rotate()
        assert (await client.get(FIGURES, headers=bearer(provider.token()))).status_code == 200


async def test_tokens_naming_made_up_keys_do_not_hammer_the_identity_provider(settings, provider):
    async with running(create_app(settings)) as client:
        assert (await client.get(FIGURES, headers=bearer(provider.token()))).status_code == 200
        fetches = provider.requests
        for n in range(20):
            forged = jwt.encode(
                {"sub": f"x{n}", "roles": ["admin"], "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 60},
                provider.keys[provider.current],
                algorithm="RS256",
                headers={"kid": f"made-up-{n}"},
            )
            response = await client.get(FIGURES, headers=bearer(forged))
            assert response.status_code == 401
            assert "no signing key" in response.json()["detail"]
    assert provider.requests - fetches <= 1


async def test_an_identity_provider_outage_is_a_503_with_retry_after_not_a_401(settings, provider):
    provider.mode = "fail"
    async with running(create_app(settings)) as client:
        response = await client.get(FIGURES, headers=bearer(provider.token()))
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "30"
    assert response.json()["type"].endswith("/identity-provider-unavailable")


async def test_keys_already_held_keep_working_while_the_identity_provider_is_down(settings, provider):
    async with running(create_app(settings)) as client:
        assert (await client.get(FIGURES, headers=bearer(provider.token()))).status_code == 200
        provider.mode = "fail"
        another = provider.token(sub="another-analyst")  # not in the verified-token cache
        assert (await client.get(FIGURES, headers=bearer(another))).status_code == 200


async def test_a_jwks_endpoint_that_hangs_30_seconds_does_not_block_other_requests(settings, provider):
    provider.mode = "hang"
    async with running(create_app(settings)) as client:
        waiting = asyncio.create_task(client.get(FIGURES, headers=bearer(provider.token())))
        await asyncio.to_thread(provider.hanging.wait, 10)
        assert provider.hanging.is_set(), "the service never asked the identity provider"
        # While the key fetch hangs, the service answers everything that does not need it.
        health = await client.get("/health")
        assert health.status_code == 200
        assert not waiting.done()
        response = await waiting  # the caller is not kept for the provider's 30 s either
        assert response.status_code == 503
        assert provider.release.is_set() is False


async def test_a_401_names_the_authority_so_power_bi_can_sign_in(settings, provider):
    async with running(create_app(settings)) as client:
        # Power BI's first request: an empty bearer token, to learn where to sign in.
        response = await client.get("/odata/RequestFacts", headers={"Authorization": "Bearer"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer authorization_uri="{AUTHORIZE}"'
