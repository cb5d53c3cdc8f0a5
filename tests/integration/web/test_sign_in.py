"""Signing in: OpenID Connect (authorization code with PKCE) against a real provider on loopback; the development
sign-in, refused in production; the session cookie; idle and absolute timeouts; signing out.
"""

import re

import httpx
import pytest
from oidc_provider_mock import User

from services.web.app import WebSettings, create_app
from shared.crypto import new_key
from tests.integration.web.conftest import SERVICE, csrf_of, sign_in, web_settings
from tests.integration.web.provider import running_provider, through_provider
from tests.support.browser import serving

__all__ = ["SERVICE"]

PEOPLE = [
    User(sub="t-worker", claims={"name": "Tess Worker", "roles": ["KentTogether.HubWorker"], "hub": "thanet"}),
    User(sub="no-role", claims={"name": "Nora Nobody"}),
    User(sub="lost-worker", claims={"name": "Lost Worker", "roles": ["KentTogether.HubWorker"]}),
]


@pytest.fixture(scope="module")
def provider():
    """A real OpenID Connect provider (Authlib's, in oidc-provider-mock) on a loopback port, in a thread."""
    with running_provider(PEOPLE, audience="kent-together") as running:
        yield running.issuer, running.check


@pytest.fixture
async def oidc_web(stack, sessions_url, provider, clock):
    issuer, _ = provider
    settings = web_settings(
        stack,
        sessions_url,
        oidc_issuer=issuer,
        oidc_client_id="kent-together-web",
        oidc_client_secret="not-a-real-secret",
        dev_sign_in=False,
        jwt_role_claim="roles",
        jwt_role_map={"KentTogether.HubWorker": "hub"},
    )
    app = create_app(settings, clock=clock)
    async with serving(app) as url:
        settings.public_url = url
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


async def test_a_hub_worker_signs_in_with_openid_connect_and_pkce_and_gets_their_hubs_queue(oidc_web, provider):
    _, check = provider
    verified = check.verified
    back = await through_provider(oidc_web, "t-worker")
    assert back.status_code == 303 and back.headers["location"] == "/hub", re.findall(
        r"<p class=\"govuk-body\">(.*?)</p>", back.text
    )
    assert check.verified == verified + 1, "the token request carried the verifier of the challenge sent"
    queue = await oidc_web.get("/hub")
    assert queue.status_code == 200 and "Thanet hub: cases" in queue.text and "Sign out Tess Worker" in queue.text


async def test_the_browser_holds_only_an_opaque_httponly_samesite_cookie(oidc_web):
    back = await through_provider(oidc_web, "t-worker")
    cookies = back.headers.get_list("set-cookie")
    assert len(cookies) == 1 and cookies[0].startswith("kt_session=")
    assert "HttpOnly" in cookies[0] and "SameSite=lax" in cookies[0]
    value = cookies[0].split(";")[0].split("=", 1)[1]
    assert "." not in value, "not a JWT or any signed token: a random id"
    page = (await oidc_web.get("/hub")).text
    assert "eyJ" not in page, "no token in the page"


async def test_an_account_without_a_role_or_a_hub_worker_without_a_hub_is_told_and_not_signed_in(oidc_web):
    for sub, reason in (("no-role", "has no Kent Together role"), ("lost-worker", "names no Kent hub")):
        back = await through_provider(oidc_web, sub)
        assert back.status_code == 400 and reason in back.text
        assert (await oidc_web.get("/hub")).headers["location"] == "/sign-in"


async def test_a_callback_with_a_forged_state_is_refused(oidc_web):
    await oidc_web.get("/sign-in/oidc")
    forged = await oidc_web.get("/sign-in/callback", params={"code": "stolen", "state": "forged"})
    assert forged.status_code == 400 and "sign in again" in forged.text


async def test_signing_out_ends_the_session_and_goes_to_the_provider(oidc_web, provider):
    issuer, _ = provider
    await through_provider(oidc_web, "t-worker")
    page = await oidc_web.get("/hub")
    out = await oidc_web.post("/sign-out", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"].startswith(issuer)
    assert (await oidc_web.get("/hub")).headers["location"] == "/sign-in"


async def test_an_idle_session_ends_and_asks_to_sign_in_again(web, clock):
    await sign_in(web, role="hub", hub="thanet", name="Idle Worker")
    assert (await web.get("/hub")).status_code == 200
    clock.advance(minutes=29)
    assert (await web.get("/hub")).status_code == 200, "used within 30 minutes: still signed in"
    clock.advance(minutes=31)
    away = await web.get("/hub")
    assert away.headers["location"] == "/sign-in"
    page = await web.get("/sign-in")
    assert "Your session ended because you were away for a while" in page.text


async def test_a_session_ends_after_its_absolute_time_however_busy(web, clock):
    await sign_in(web, role="hub", hub="thanet", name="Busy Worker")
    for _ in range(25):  # a request every 29 minutes: never idle, for 12 hours and more
        clock.advance(minutes=29)
        response = await web.get("/hub")
        if response.status_code != 200:
            break
    assert response.headers["location"] == "/sign-in"


async def test_signing_in_starts_a_new_session_so_a_planted_cookie_is_worthless(web):
    await web.get("/get-help")
    planted = web.cookies.get("kt_session")
    await sign_in(web, role="call-centre", name="Fixation Target")
    assert web.cookies.get("kt_session") != planted
    async with httpx.AsyncClient(base_url=str(web.base_url), cookies={"kt_session": planted}) as attacker:
        assert (await attacker.get("/adviser")).headers["location"] == "/sign-in"


def test_production_refuses_the_development_sign_in_and_needs_openid_connect(tmp_path):
    keys = {
        "data_keys": f"2026-01:{new_key()}",
        "blind_index_key": new_key(),
        "jwt_signing_key": "k" * 40,
        "environment": "production",
        "var_dir": tmp_path,
    }
    with pytest.raises(ValueError, match="development sign-in is refused in production"):
        WebSettings(**keys, dev_sign_in=True, oidc_issuer="https://login.example")
    with pytest.raises(ValueError, match="production needs WEB_OIDC_ISSUER"):
        WebSettings(**keys)
    settings = WebSettings(**keys, oidc_issuer="https://login.example", oidc_client_id="web")
    assert settings.dev_sign_in is False and settings.cookie_secure is True


async def test_the_development_sign_in_page_is_not_there_when_turned_off(stack, sessions_url):
    app = create_app(web_settings(stack, sessions_url, dev_sign_in=False))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/sign-in")
        assert "Development sign-in" not in page.text
        form = await client.get("/get-help")
        refused = await client.post(
            "/sign-in/dev", data={"csrf_token": csrf_of(form.text), "role": "admin", "name": "Mallory"}
        )
        assert refused.status_code == 404


async def test_the_session_cookie_is_secure_where_the_service_is_served_over_https(stack, sessions_url):
    app = create_app(web_settings(stack, sessions_url, cookie_secure=True))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/get-help")
    [cookie] = page.headers.get_list("set-cookie")
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_passing_the_providers_tokens_on_is_the_default_once_the_services_verify_them_and_needs_the_form_key(tmp_path):
    keys = {
        "data_keys": f"2026-01:{new_key()}",
        "blind_index_key": new_key(),
        "environment": "production",
        "var_dir": tmp_path,
        "oidc_issuer": "https://login.example",
        "oidc_client_id": "web",
        "jwt_jwks_url": "https://login.example/keys",
    }
    with pytest.raises(ValueError, match="needs KT_JWT_ONLINE_FORM_KEY"):
        WebSettings(**keys)
    settings = WebSettings(**keys, jwt_online_form_key="f" * 40)
    assert settings.service_tokens == "provider" and settings.service_token_key() == "f" * 40
    with pytest.raises(ValueError, match="development sign-in has no provider token"):
        WebSettings(**{**keys, "environment": "development"}, jwt_online_form_key="f" * 40, dev_sign_in=True)
    assert WebSettings(**{**keys, "jwt_jwks_url": ""}, jwt_signing_key="k" * 40).service_tokens == "signed"
