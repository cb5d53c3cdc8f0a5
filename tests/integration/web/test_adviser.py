"""A call adviser on the web front: takes a call, is warned of a duplicate before saving, finds, amends, cancels."""

import re

from tests.integration.web.conftest import SERVICE, csrf_of, post_form, sign_in

__all__ = ["SERVICE"]

CALL = {
    "on_behalf": "yes",
    "referrer_name": "Ann Daughter",
    "referrer_relationship": "daughter",
    "referrer_phone": "07911 123456",
    "consent_given_by": "referrer-on-behalf",
    "name": "Edith Caller",
    "dob-day": "2",
    "dob-month": "3",
    "dob-year": "1941",
    "phone": "01843 577123",
    "line1": "3 Sea View",
    "town": "Margate",
    "postcode": "CT9 2RN",
    "preference": "via-referrer",
    "language": "Polish",
    "urgency": "today",
    "consent": "yes",
    "details-food": "Vegetarian",
}


def call(**changes) -> list[tuple[str, str]]:
    values = {**CALL, **changes}
    fields = [(k, v) for k, v in values.items() if v is not None]
    return fields + [("types", "food"), ("vulnerabilities", "lives-alone"), ("vulnerabilities", "needs-interpreter")]


async def save_call(web, fields) -> str:
    saved = await post_form(web, "/adviser/call", fields, from_page="/adviser")
    if saved.status_code == 200 and "This may be a duplicate" in saved.text:
        key = re.search(r'name="key" value="([^"]+)"', saved.text).group(1)
        saved = await web.post("/adviser/call/save", data={"csrf_token": csrf_of(saved.text), "key": key})
    assert saved.status_code == 303, re.findall(r'error-summary__list">(.*?)</ul>', saved.text, re.S)
    return saved.headers["location"]


async def test_an_adviser_takes_a_call_on_someones_behalf_and_reads_back_the_reference(web):
    await sign_in(web, role="call-centre", name="Sam Adviser")
    location = await save_call(web, call(name="Edith Behalf"))
    page = (await web.get(location)).text
    shown = re.search(r'id="reference">(KT-[0-9A-Z-]+)<', page)
    assert shown, page[page.find("<main") :][:1500]
    reference = shown.group(1)
    assert "Referral saved" in page and "Ann Daughter (daughter)" in page
    assert "Given by referrer-on-behalf" in page and "Food: open" in page
    found = (await web.get("/adviser/find", params={"reference": reference.lower()})).text
    assert "1 found" in found and "Edith Behalf" in found


async def test_the_resident_agreeing_to_be_sent_their_reference_reaches_the_api_and_is_off_unless_ticked(web):
    await sign_in(web, role="call-centre", name="Sam Adviser")
    told = (
        await web.get(
            await save_call(web, call(name="Tom Told", phone="07911 123458", preference="text", notify="yes"))
        )
    ).text
    assert "Agreed to be sent them by text or email" in told, "read back from the referrals API"
    untold = (await web.get(await save_call(web, call(name="Ulla Untold")))).text
    assert "Reference and updates" in untold and "Not to be sent" in untold
    landline = await post_form(
        web, "/adviser/call", call(name="Lou Landline", notify="yes", preference="phone"), from_page="/adviser"
    )
    assert landline.status_code == 400
    assert 'href="#notify">Enter a mobile number or email to send the reference to' in landline.text
    assert 'id="notify-error"' in landline.text


async def test_an_adviser_is_warned_of_a_likely_duplicate_and_can_use_the_existing_request_or_go_on(web):
    await sign_in(web, role="call-centre", name="Sam Adviser")
    first = (await web.get(await save_call(web, call(name="Dora Duplicate")))).text
    first_reference = re.search(r'id="reference">(KT-[0-9A-Z-]+)<', first).group(1)
    warned = await post_form(web, "/adviser/call", call(name="Dora Duplicate"), from_page="/adviser")
    assert "This may be a duplicate" in warned.text
    assert f"An open food request for this person from today ({first_reference})" in warned.text
    existing = re.search(r'href="(/adviser/referrals/[^"]+)" id="use-existing"', warned.text).group(1)
    assert first_reference in (await web.get(existing)).text
    key = re.search(r'name="key" value="([^"]+)"', warned.text).group(1)
    saved = await web.post("/adviser/call/save", data={"csrf_token": csrf_of(warned.text), "key": key})
    second = (await web.get(saved.headers["location"])).text
    assert "Food: open (possible duplicate)" in second
    again = await web.post("/adviser/call/save", data={"csrf_token": csrf_of(warned.text), "key": key})
    assert again.headers["location"] == saved.headers["location"], "pressed twice: the one referral"


async def test_an_empty_call_form_names_every_missing_field_beside_it(web):
    await sign_in(web, role="call-centre", name="Sam Adviser")
    page = await post_form(web, "/adviser/call", {}, from_page="/adviser")
    assert page.status_code == 400
    for field in ("name", "line1", "postcode", "types", "consent"):
        assert f'href="#{field}"' in page.text and f'id="{field}-error"' in page.text, field


async def test_an_adviser_finds_a_caller_by_two_facts_together_never_by_one(web):
    await sign_in(web, role="call-centre", name="Sam Adviser")
    await save_call(web, call(name="Frida Findme", phone="01843 577999"))
    by_name = (await web.get("/adviser/find", params={"name": "frida findme", "postcode": "ct9 2rn"})).text
    assert "1 found" in by_name and "Frida Findme" in by_name
    by_phone = (
        await web.get(
            "/adviser/find", params={"phone": "01843577999", "dob-day": "2", "dob-month": "3", "dob-year": "1941"}
        )
    ).text
    assert "Frida Findme" in by_phone
    alone = await web.get("/adviser/find", params={"name": "frida findme"})
    assert alone.status_code == 400 and "Give both the name and the postcode" in alone.text


async def test_an_adviser_amends_the_address_and_cancels_with_a_reason(web):
    await sign_in(web, role="call-centre", name="Sam Adviser")
    location = await save_call(web, call(name="Gina Moving"))
    bad = await post_form(
        web, f"{location.split('?')[0]}/address", {"line1": "9 New Road", "postcode": "nope"}, from_page=location
    )
    assert bad.status_code == 400 and "Enter a real postcode" in bad.text
    moved = await post_form(
        web,
        f"{location.split('?')[0]}/address",
        {"line1": "9 New Road", "town": "Broadstairs", "postcode": "CT10 1AA"},
        from_page=location,
    )
    assert moved.headers["location"].endswith("done=address")
    assert "9 New Road, Broadstairs, CT10 1AA" in (await web.get(moved.headers["location"])).text
    no_reason = await post_form(web, f"{location.split('?')[0]}/cancel", {}, from_page=location)
    assert "Select why the request is cancelled" in no_reason.text
    cancelled = await post_form(
        web, f"{location.split('?')[0]}/cancel", {"reason": "no-longer-needed"}, from_page=location
    )
    page = (await web.get(cancelled.headers["location"])).text
    assert "Food: cancelled, no-longer-needed" in page
