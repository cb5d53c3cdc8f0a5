"""A resident asks for help on the web front: one question a page, errors beside the field, one referral however often they press send."""

import asyncio
import re

import httpx

from shared.auth import mint_token
from tests.integration.web.conftest import (
    KEY,
    MEDWAY_POSTCODE,
    SERVICE,
    SIGNING_KEY,
    ask_for_help,
    csrf_of,
    post_form,
)
from tests.support.waiting import eventually

__all__ = ["SERVICE"]


def adviser_headers() -> dict:
    token = mint_token(
        signing_key=SIGNING_KEY,
        role="call-centre",
        subject="test-adviser",
        issuer="kent-together-dev",
        audience="kent-together",
    )
    return {"Authorization": f"Bearer {token}"}


async def referrals_with(stack, reference: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=stack.urls["referrals"]) as api:
        response = await api.get("/v1/referrals", params={"reference": reference}, headers=adviser_headers())
        assert response.status_code == 200, response.text
        return response.json()["results"]


async def test_a_resident_asking_for_food_and_a_prescription_gets_a_reference_and_the_hub_that_will_help(web, stack):
    reference = await ask_for_help(web, types=("food", "prescription"))
    confirmation = (await web.get("/get-help/confirmation")).text
    assert "Thanet" in re.search(r'id="who-helps">(.*?)</p>', confirmation, re.S).group(1)
    [referral] = await referrals_with(stack, reference)
    assert referral["request_types"] == ["food", "prescription"]


async def consent_of(stack, reference: str) -> dict:
    [found] = await referrals_with(stack, reference)
    async with httpx.AsyncClient(base_url=stack.urls["referrals"]) as api:
        response = await api.get(f"/v1/referrals/{found['id']}", headers=adviser_headers())
        assert response.status_code == 200, response.text
        return response.json()["consent"]


async def test_a_resident_who_agrees_is_sent_their_reference_and_one_who_does_not_answer_is_not(web, stack):
    told = await ask_for_help(web, types=("food",), name="Tess Texted", phone="07911 123456", notify="yes")
    assert (await consent_of(stack, told))["to_notify"] is True
    untold = await ask_for_help(web, types=("food",), name="Una Unasked")
    assert (await consent_of(stack, untold))["to_notify"] is False, "not answered: nothing is sent"
    declined = await ask_for_help(web, types=("food",), name="Nora No", phone="07911 123457", notify="no")
    assert (await consent_of(stack, declined))["to_notify"] is False


async def test_yes_to_being_told_with_only_a_landline_is_a_clear_message_and_the_answer_is_on_check(web):
    await post_form(web, "/get-help", {})
    for path, data in [
        ("/get-help/postcode", {"postcode": "CT9 2RN"}),
        ("/get-help/help", {"types": "food"}),
        ("/get-help/when", {"urgency": "today"}),
        ("/get-help/details", {}),
        ("/get-help/about-you", {"name": "Lena Landline", "line1": "1 High Street"}),
        ("/get-help/contact", {"phone": "01843 577000", "preference": "phone"}),
    ]:
        assert (await post_form(web, path, data)).status_code == 303
    refused = await post_form(web, "/get-help/consent", {"consent": "yes", "notify": "yes"})
    assert refused.status_code == 400
    message = "Enter a mobile number or email address so we can send your reference, or choose No"
    assert f'href="#notify">{message}</a>' in refused.text and 'id="notify-error"' in refused.text
    assert re.search(r'<input[^>]*name="notify"[^>]*value="yes"[^>]*checked', refused.text), "the answer is kept"
    assert (
        await post_form(
            web, "/get-help/contact", {"phone": "01843 577000", "email": "lena@example.com", "preference": "phone"}
        )
    ).status_code == 303
    assert (await post_form(web, "/get-help/consent", {"consent": "yes", "notify": "yes"})).status_code == 303
    check = (await web.get("/get-help/check")).text
    assert "Your reference and updates" in check and "Yes, by text or email" in check
    assert 'href="/get-help/consent?change=1"' in check and 'id="change-notify"' in check


async def test_pressing_send_twice_at_once_or_again_after_sends_one_referral(web, stack):
    reference = await ask_for_help(web, types=("food",), name="Double Click")
    check_again = await web.post(
        "/get-help/check",
        data={"csrf_token": csrf_of((await web.get("/get-help")).text), "idempotency_key": "replayed-or-stale"},
    )
    assert check_again.status_code == 400 and "were not sent" in check_again.text
    # Two presses in flight at once, from one page: the same key, so one referral.
    await post_form(web, "/get-help", {})
    for path, data in [
        ("/get-help/postcode", {"postcode": "CT9 2RN"}),
        ("/get-help/help", {"types": "befriending"}),
        ("/get-help/when", {"urgency": "this-week"}),
        ("/get-help/details", {}),
        ("/get-help/about-you", {"name": "Twice Pressed", "line1": "1 High Street"}),
        ("/get-help/contact", {"phone": "01843 577001", "preference": "phone"}),
        ("/get-help/consent", {"consent": "yes"}),
    ]:
        assert (await post_form(web, path, data)).status_code == 303
    page = (await web.get("/get-help/check")).text
    form = {"csrf_token": csrf_of(page), "idempotency_key": KEY.search(page).group(1)}
    first, second = await asyncio.gather(web.post("/get-help/check", data=form), web.post("/get-help/check", data=form))
    assert {first.headers.get("location"), second.headers.get("location")} == {"/get-help/confirmation"}
    again = await web.post("/get-help/check", data=form)  # a refresh of the POST, or back and send again
    assert again.headers.get("location") == "/get-help/confirmation"
    shown = re.search(r"KT-[0-9A-Z]{4}-[0-9A-Z]{4}", (await web.get("/get-help/confirmation")).text).group(0)
    assert shown != reference
    async with httpx.AsyncClient(base_url=stack.urls["referrals"]) as api:
        found = await api.get("/v1/referrals", params={"reference": shown}, headers=adviser_headers())
    assert found.json()["count"] == 1


async def test_an_empty_or_wrong_postcode_is_told_in_the_summary_and_beside_the_field(web):
    await post_form(web, "/get-help", {})
    empty = await post_form(web, "/get-help/postcode", {"postcode": ""})
    assert empty.status_code == 400
    assert 'href="#postcode">Enter your postcode</a>' in empty.text
    assert 'id="postcode-error"' in empty.text
    wrong = await post_form(web, "/get-help/postcode", {"postcode": "CT99 ZZZZ"})
    assert "Enter a real postcode, like CT9 1AB" in wrong.text and wrong.status_code == 400
    assert "<title>Error: What is your postcode?" in wrong.text


async def test_no_help_chosen_no_consent_and_a_bad_phone_are_each_a_clear_message(web):
    await post_form(web, "/get-help", {})
    await post_form(web, "/get-help/postcode", {"postcode": "CT9 2RN"})
    none_chosen = await post_form(web, "/get-help/help", {})
    assert none_chosen.status_code == 400 and 'href="#types">Select the help you need</a>' in none_chosen.text
    await post_form(web, "/get-help/help", {"types": "food"})
    await post_form(web, "/get-help/when", {"urgency": "today"})
    await post_form(web, "/get-help/details", {})
    await post_form(web, "/get-help/about-you", {"name": "Jo Bloggs", "line1": "1 High Street"})
    bad_phone = await post_form(web, "/get-help/contact", {"phone": "12345", "preference": "phone"})
    assert bad_phone.status_code == 400 and "Enter a UK phone number" in bad_phone.text
    await post_form(web, "/get-help/contact", {"phone": "01843 577000", "preference": "phone"})
    no_consent = await post_form(web, "/get-help/consent", {})
    assert no_consent.status_code == 400 and "Tick the box to say we can share your details" in no_consent.text
    assert (await web.get("/get-help/check")).headers.get("location") == "/get-help/consent", "nothing to check yet"


async def test_a_field_the_referrals_api_refuses_is_shown_on_its_page_in_plain_words(web, stack):
    await post_form(web, "/get-help", {})
    for path, data in [
        ("/get-help/postcode", {"postcode": "CT9 2RN"}),
        ("/get-help/help", {"types": "food"}),
        ("/get-help/when", {"urgency": "today"}),
        ("/get-help/details", {}),
        ("/get-help/about-you", {"name": "Api Refused", "line1": "1 High Street"}),
        ("/get-help/contact", {"email": "jo@example..com", "preference": "email"}),
        ("/get-help/consent", {"consent": "yes"}),
    ]:
        assert (await post_form(web, path, data)).status_code == 303
    page = (await web.get("/get-help/check")).text
    sent = await web.post(
        "/get-help/check", data={"csrf_token": csrf_of(page), "idempotency_key": KEY.search(page).group(1)}
    )
    assert sent.status_code == 400
    assert 'href="#change-contact">Enter an email address in the correct format' in sent.text
    contact = await web.get("/get-help/contact")
    assert 'id="email-error"' in contact.text, "the contact page shows the API's error beside the field"
    assert await referrals_with(stack, "KT-0000-0000") == []


async def test_a_stale_csrf_token_is_refused_with_a_clear_page_and_nothing_is_kept(web):
    await post_form(web, "/get-help", {})
    refused = await web.post("/get-help/postcode", data={"csrf_token": "stale", "postcode": "CT9 2RN"})
    assert refused.status_code == 400 and "This form has expired" in refused.text
    page = await web.get("/get-help/help")
    assert page.headers.get("location") == "/get-help/postcode", "the postcode was not kept"


async def test_a_postcode_outside_kent_is_accepted_and_the_confirmation_names_its_council(web):
    await ask_for_help(web, postcode=MEDWAY_POSTCODE, types=("food",), name="Medway Resident")
    confirmation = (await web.get("/get-help/confirmation")).text
    who = re.search(r'id="who-helps">(.*?)</p>', confirmation, re.S).group(1)
    assert "not in Kent" in who and "Medway" in who


async def test_check_on_my_request_shows_each_request_and_its_hub_and_nothing_personal(web):
    reference = await ask_for_help(web, types=("food", "prescription"), name="Status Checker")

    async def shown():
        page = await post_form(web, "/check-request", {"reference": reference.lower(), "postcode": "ct92rn"})
        return page.text if "Thanet" in page.text else None

    page = await eventually(shown)
    assert "Food" in page and "Prescription collection" in page
    assert '<br><span class="govuk-hint">Thanet' in page
    assert "Status Checker" not in page and "Northdown" not in page
    wrong = await post_form(web, "/check-request", {"reference": reference, "postcode": "CT1 1YW"})
    assert 'id="not-found"' in wrong.text


async def test_the_public_form_is_rate_limited_per_address_with_a_page_that_says_so(stack, sessions_url):
    from services.web.app import create_app
    from tests.integration.web.conftest import web_settings
    from tests.support.browser import serving

    app = create_app(web_settings(stack, sessions_url, public_form_per_minute=1, public_form_burst=2))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        answers = [
            await post_form(client, "/check-request", {"reference": "KT-AAAA-BBBB", "postcode": "CT9 2RN"})
            for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "Too many attempts" in answers[2].text and int(answers[2].headers["retry-after"]) >= 1


async def test_behind_the_councils_proxy_each_resident_has_their_own_limit_and_a_client_cannot_choose_its_own(
    stack, sessions_url
):
    from services.web.app import create_app
    from tests.integration.web.conftest import web_settings
    from tests.support.browser import serving

    app = create_app(
        web_settings(
            stack, sessions_url, public_form_per_minute=1, public_form_burst=1, trusted_proxies=["127.0.0.0/8"]
        )
    )
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:

        async def check(forwarded: str) -> int:
            page = await client.get("/check-request")
            answer = await client.post(
                "/check-request",
                headers={"X-Forwarded-For": forwarded},
                data={"csrf_token": csrf_of(page.text), "reference": "KT-AAAA-BBBB", "postcode": "CT9 2RN"},
            )
            return answer.status_code

        assert await check("203.0.113.7") == 200
        assert await check("203.0.113.8") == 200, "another resident behind the same proxy"
        assert await check("203.0.113.7") == 429
        assert await check("198.51.100.1, 203.0.113.7") == 429, "the proxy's own hop is believed, not the client's"


async def test_the_web_front_is_ready_when_its_sessions_database_answers_and_serves_metrics(web):
    ready = await web.get("/ready")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    metrics = await web.get("/metrics")
    assert metrics.status_code == 200 and "kt_build_info{" in metrics.text and 'service="web"' in metrics.text
    assert "set-cookie" not in ready.headers and "set-cookie" not in metrics.headers
