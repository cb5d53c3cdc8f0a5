"""Production identity end to end: people sign in with OpenID Connect and the pages call the services with their
own access token from the identity provider, which the services verify against the provider's JWKS.

The provider is real (Authlib's server, in oidc-provider-mock, on loopback) and
issues JWT access tokens carrying the person's `roles` list and `hub`, as
Microsoft Entra ID does. referrals and fulfilment accept nothing but its tokens,
and the online form's, signed with KT_JWT_ONLINE_FORM_KEY for that role alone.
"""

import contextlib
import re

import httpx
import jwt
import pytest
from oidc_provider_mock import User

from services.web.app import create_app
from services.web.sessions import COOKIE
from tests.integration.web.conftest import SERVICE, ask_for_help, running_stack, web_settings
from tests.integration.web.provider import running_provider, through_provider
from tests.support.browser import serving
from tests.support.services import sqlite_database
from tests.support.waiting import eventually

__all__ = ["SERVICE"]

ROLE_MAP = {"KentTogether.HubWorker": "hub"}
ONLINE_FORM_KEY = "online-form-key-" + "f" * 32
PEOPLE = [
    User(sub="thanet-worker", claims={"name": "Tia Thanet", "roles": ["KentTogether.HubWorker"], "hub": "thanet"}),
    User(
        sub="maidstone-worker",
        claims={"name": "Max Maidstone", "roles": ["KentTogether.HubWorker"], "hub": "maidstone"},
    ),
    User(sub="renewed-worker", claims={"name": "Rita Renewed", "roles": ["KentTogether.HubWorker"], "hub": "thanet"}),
    User(sub="revoked-worker", claims={"name": "Rob Revoked", "roles": ["KentTogether.HubWorker"], "hub": "thanet"}),
]


@pytest.fixture(scope="module")
def provider():
    with running_provider(PEOPLE, audience="kent-together") as running:
        yield running


def _trusting(provider) -> dict:
    """How the services and the web front read the provider's tokens: the same claim mapping for both."""
    return dict(
        jwt_jwks_url=provider.jwks_url,
        jwt_issuer=provider.issuer,
        jwt_role_claim="roles",
        jwt_role_map=ROLE_MAP,
        jwt_online_form_key=ONLINE_FORM_KEY,
    )


@pytest.fixture(scope="module")
def provider_databases(tmp_path_factory):
    """Migrated outside the event loop (migrating runs its own)."""
    tmp = tmp_path_factory.mktemp("provider-stack")
    return tmp, {
        name: sqlite_database(name, tmp_path=tmp, scratch=tmp_path_factory.getbasetemp())
        for name in ("referrals", "fulfilment")
    }


@pytest.fixture(scope="module")
async def provider_stack(broker, provider, provider_databases):
    """referrals and fulfilment verifying the provider's tokens (KT_JWT_JWKS_URL), not the development key."""
    tmp, databases = provider_databases
    async with running_stack(broker, databases, tmp / "var", **_trusting(provider)) as running:
        yield running


@contextlib.asynccontextmanager
async def web_front(provider_stack, provider, sessions_url, clock):
    """The web front signing people in with the provider and passing their tokens on (WEB_SERVICE_TOKENS=provider)."""
    settings = web_settings(
        provider_stack,
        sessions_url,
        oidc_issuer=provider.issuer,
        oidc_client_id="kent-together-web",
        oidc_client_secret="not-a-real-secret",
        dev_sign_in=False,
        session_idle_minutes=180,
        **_trusting(provider),
    )
    assert settings.service_tokens == "provider", "the default once the services verify the provider's tokens"
    app = create_app(settings, clock=clock)
    async with serving(app) as url:
        settings.public_url = url
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            client.app = app
            yield client


@pytest.fixture
async def front(provider_stack, provider, sessions_url, clock):
    async with web_front(provider_stack, provider, sessions_url, clock) as client:
        yield client


async def _session_tokens(front: httpx.AsyncClient) -> dict:
    session, _ = await front.app.state.sessions.load(front.cookies.get(COOKIE))
    return session.get("tokens")


async def test_a_hub_worker_signed_in_by_openid_connect_sees_their_queue_through_their_own_token(front, provider):
    back = await through_provider(front, "thanet-worker")
    assert back.status_code == 303 and back.headers["location"] == "/hub"
    queue = await front.get("/hub")
    assert queue.status_code == 200 and "Thanet hub: cases" in queue.text
    token = (await _session_tokens(front))["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == provider.issuer and claims["sub"] == "thanet-worker", "the provider's token, not ours"
    assert "eyJ" not in queue.text, "the token stays on the server"


async def test_a_residents_request_reaches_the_hub_and_another_hubs_worker_gets_the_not_found_page(
    front, provider_stack, provider, sessions_url, clock
):
    reference = await ask_for_help(front, types=("food",), name="Provider Resident")  # the online form's key
    await through_provider(front, "thanet-worker")

    async def case_link():
        found = re.search(r'href="(/hub/cases/[^"]+)">' + re.escape(reference), (await front.get("/hub")).text)
        return found and found.group(1)

    case = await eventually(case_link)
    assert (await front.get(case)).status_code == 200

    async with web_front(provider_stack, provider, sessions_url, clock) as other:
        assert (await through_provider(other, "maidstone-worker")).headers["location"] == "/hub"
        refused = await other.get(case)
        assert refused.status_code == 404 and "Page not found" in refused.text


async def test_an_expired_access_token_is_renewed_with_the_refresh_token(front, provider, clock):
    await through_provider(front, "renewed-worker")
    first = await _session_tokens(front)
    renewals = provider.check.grants["refresh_token"]
    clock.advance(minutes=61)  # past the access token's hour, well within the session's
    queue = await front.get("/hub")
    assert queue.status_code == 200 and "Thanet hub: cases" in queue.text
    assert provider.check.grants["refresh_token"] == renewals + 1
    renewed = await _session_tokens(front)
    assert renewed["access_token"] != first["access_token"] and renewed["expires_at"] > clock().timestamp()
    assert (await front.get("/hub")).status_code == 200
    assert provider.check.grants["refresh_token"] == renewals + 1, "renewed once, then used until it expires"


async def test_a_refused_renewal_asks_the_person_to_sign_in_again(front, provider, clock):
    await through_provider(front, "revoked-worker")
    provider.revoke("revoked-worker")
    clock.advance(minutes=61)
    away = await front.get("/hub")
    assert away.status_code == 303 and away.headers["location"] == "/sign-in"
    page = await front.get("/sign-in")
    assert "sign-in has ended. Sign in again" in page.text
    assert (await front.get("/hub")).headers["location"] == "/sign-in", "the old session is gone"


async def test_a_token_the_services_refuse_ends_the_session_and_asks_to_sign_in_again(front, provider):
    await through_provider(front, "thanet-worker")
    store = front.app.state.sessions
    session, _ = await store.load(front.cookies.get(COOKIE))
    tokens = session.get("tokens")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    forged = jwt.encode({**claims, "hub": "maidstone"}, "not-the-providers-key-" + "x" * 24, algorithm="HS256")
    session.set("tokens", {**tokens, "access_token": forged})  # as if the token were tampered with, or revoked
    await store.save(session)
    refused = await front.get("/hub")
    assert refused.status_code == 303 and refused.headers["location"] == "/sign-in"
    assert "sign-in has ended. Sign in again" in (await front.get("/sign-in")).text
    assert (await front.get("/hub")).headers["location"] == "/sign-in"
