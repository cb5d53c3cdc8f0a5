"""Security headers on every answer, CORS only for configured origins, rate limits, body-size limits."""

from __future__ import annotations

import re

import pytest

from tests.support.access import OWN_HUB
from tests.support.apps import token
from tests.support.services import operations, service_names

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def assert_hardened(response, *, csp: str | None = API_CSP) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "no-referrer", where
    assert response.headers.get("x-frame-options") == "DENY", where
    if csp is not None:
        assert response.headers.get("content-security-policy") == csp, where


@pytest.mark.parametrize("service", service_names())
async def test_every_answer_of_every_route_carries_the_security_headers(service, start_service):
    async with start_service(service) as client:
        admin = token(client.settings, "admin")
        for op in operations(client.app):
            path = op.path.format(**{p.name: OWN_HUB if p.name == "hub" else "1" for p in op.dependant.path_params})
            body = {"json": {}} if op.method in ("POST", "PATCH", "PUT") else {}
            for headers in ({}, admin):
                response = await client.request(op.method, path, headers=headers, **body)
                # The reporting dashboard and figures may set their own policy; the headers are there either way.
                assert_hardened(response, csp=None if service == "reporting" else API_CSP)
        assert_hardened(await client.get("/no/such/page"), csp=None if service == "reporting" else API_CSP)


async def test_an_answer_with_personal_data_is_never_cached(start_service):
    async with start_service("referrals") as client:
        response = await client.get("/v1/request-types", headers=token(client.settings, "call-centre"))
        assert response.status_code == 200 and response.headers["cache-control"] == "no-store"


async def test_the_content_security_policy_is_set_per_service_and_the_docs_page_gets_its_own(start_service):
    page_policy = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"
    async with start_service("referrals", content_security_policy=page_policy) as client:
        assert (await client.get("/health")).headers["content-security-policy"] == page_policy
        docs = await client.get("/docs")
        assert docs.status_code == 200
        assert "http" not in docs.headers["content-security-policy"]  # nothing from elsewhere
        assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_api_docs_pages_load_every_asset_from_the_service_itself(page, start_service):
    async with start_service("fulfilment") as client:
        html = (await client.get(page)).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: ?'([^']+)'", html)
        assert urls and all(url.startswith("/") for url in urls), urls  # no CDN, no other host
        for url in urls:
            response = await client.get(url)
            assert response.status_code == 200, url
        scripts = [url for url in urls if url.endswith(".js")]
        sizes = [len((await client.get(url)).content) for url in scripts]
        assert sizes and min(sizes) > 100_000, sizes  # the real builds


async def test_no_browser_origin_is_allowed_unless_configured(start_service):
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    async with start_service("referrals") as client:
        response = await client.options("/v1/referrals", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        simple = await client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers


async def test_a_configured_origin_may_call_from_a_browser_and_no_other(start_service):
    origin = "https://form.kent-together.example"
    async with start_service("referrals", cors_allow_origins=[origin]) as client:
        ok = await client.options(
            "/v1/referrals",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
            },
        )
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin
        assert "idempotency-key" in ok.headers["access-control-allow-headers"].lower()
        assert_hardened(ok)
        refused = await client.options(
            "/v1/referrals", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert refused.headers.get("access-control-allow-origin") != "https://evil.example"
        actual = await client.get(
            "/v1/request-types", headers={"Origin": origin, **token(client.settings, "call-centre")}
        )
        assert actual.headers["access-control-allow-origin"] == origin


async def test_a_client_over_its_rate_gets_429_with_retry_after_and_others_go_on(start_service):
    async with start_service("referrals", rate_limit_per_minute=6, rate_limit_burst=3) as client:
        settings = client.settings
        busy = token(settings, "call-centre", subject="busy-adviser")
        answers = [await client.get("/v1/request-types", headers=busy) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.json()["status"] == 429 and limited.json()["title"] == "Too many requests"
        assert 1 <= int(limited.headers["retry-after"]) <= 10  # one request's worth at 6 a minute
        assert limited.headers["x-request-id"] == limited.json()["request_id"]
        assert_hardened(limited)
        # Another adviser has a bucket of their own; probes are never throttled.
        other = await client.get("/v1/request-types", headers=token(settings, "call-centre", subject="other-adviser"))
        assert other.status_code == 200
        assert [(await client.get("/health")).status_code for _ in range(5)] == [200] * 5


async def test_callers_without_a_valid_token_are_limited_by_address(start_service):
    async with start_service("referrals", rate_limit_per_minute=6, rate_limit_burst=2) as client:
        forged = {"Authorization": "Bearer not.a.token"}
        statuses = [(await client.get("/v1/request-types", headers=forged)).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]


async def test_an_oversized_body_is_413_problem_on_any_route_declared_or_streamed(start_service):
    async with start_service("referrals", max_body_bytes=1000) as client:
        headers = token(client.settings, "call-centre")
        big = {"reason": "x" * 5000}
        declared = await client.post(
            "/v1/referrals/00000000-0000-0000-0000-000000000000/cancel", json=big, headers=headers
        )
        assert declared.status_code == 413
        assert declared.headers["content-type"] == "application/problem+json"
        assert declared.json()["detail"] == "the body is over 1000 bytes"

        async def chunks():
            for _ in range(10):
                yield b"x" * 500

        streamed = await client.patch(
            "/v1/referrals/00000000-0000-0000-0000-000000000000",
            content=chunks(),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413 and streamed.json()["status"] == 413
        assert_hardened(streamed)
        # A route that reads its body itself (intake) gets the same answer.
        intake = await client.post(
            "/v1/referrals", content=chunks(), headers={**headers, "Content-Type": "application/json"}
        )
        assert intake.status_code == 413 and intake.json()["detail"] == "the body is over 1000 bytes"


async def test_a_client_cannot_choose_its_own_address_with_x_forwarded_for(start_service):
    async with start_service("referrals", rate_limit_per_minute=6, rate_limit_burst=2) as client:
        statuses = [
            (await client.get("/v1/request-types", headers={"X-Forwarded-For": f"203.0.113.{n}"})).status_code
            for n in range(3)
        ]
        assert statuses == [401, 401, 429]  # one caller (the socket's), whatever it claims


async def test_the_address_a_trusted_proxy_forwards_is_the_client_counted(start_service):
    async with start_service(
        "referrals", rate_limit_per_minute=6, rate_limit_burst=1, trusted_proxies=["127.0.0.1/32"]
    ) as client:  # the test client connects from 127.0.0.1

        def via_proxy(client_address: str, claimed: str | None = None) -> dict:
            chain = f"{claimed}, {client_address}" if claimed else client_address
            return {"X-Forwarded-For": chain}

        first = await client.get("/v1/request-types", headers=via_proxy("198.51.100.7"))
        other = await client.get("/v1/request-types", headers=via_proxy("198.51.100.8"))
        # The same client, claiming another address to the left of what the proxy saw: still itself.
        again = await client.get("/v1/request-types", headers=via_proxy("198.51.100.7", claimed="192.0.2.1"))
        assert [first.status_code, other.status_code, again.status_code] == [401, 401, 429]


async def test_every_limited_answer_says_how_much_of_the_budget_is_left(start_service):
    async with start_service("referrals", rate_limit_per_minute=60, rate_limit_burst=5) as client:
        adviser = token(client.settings, "call-centre", subject="paced-adviser")
        answers = [await client.get("/v1/request-types", headers=adviser) for _ in range(2)]
        assert [a.headers["ratelimit-remaining"] for a in answers] == ["4", "3"]
        assert answers[0].headers["ratelimit-limit"] == "5" and answers[0].headers["ratelimit-policy"] == "5;w=5"
        assert int(answers[1].headers["ratelimit-reset"]) >= 1
