"""'Does this help need to repeat?' on the adviser's call form and the resident's pages, with no JavaScript."""

import re

from tests.integration.web.conftest import SERVICE, post_form, sign_in
from tests.integration.web.test_adviser import call, save_call

__all__ = ["SERVICE"]

ERRORS = re.compile(r'<a href="#([^"]+)">([^<]+)</a>')


async def test_an_adviser_takes_a_weekly_shop_for_six_weeks_and_the_referral_says_so(web):
    await sign_in(web, role="call-centre", name="Sam Adviser")
    form = (await web.get("/adviser")).text
    # The follow-up questions are in the page itself: without JavaScript they are simply shown under "Yes".
    assert 'name="repeat"' in form and 'data-aria-controls="conditional-repeat-2"' in form
    assert 'id="conditional-repeat-2"' in form and 'name="frequency"' in form
    location = await save_call(web, call(name="Rita Repeat", repeat="yes", frequency="weekly", repeat_count="6"))
    page = (await web.get(location)).text
    assert "Food: open; repeats weekly, 6 times" in page


async def test_repeat_answers_that_cannot_be_met_are_named_beside_their_fields(web):
    await sign_in(web, role="call-centre", name="Sam Adviser")
    page = await post_form(
        web,
        "/adviser/call",
        call(
            name="Rita Repeat",
            repeat="yes",
            repeat_count="0",
            **{"repeat_until-day": "31", "repeat_until-month": "2", "repeat_until-year": "2027"},
        ),
        from_page="/adviser",
    )
    assert page.status_code == 400
    named = dict(ERRORS.findall(page.text))
    assert named["frequency"] == "Select how often the help is needed"
    assert named["repeat_count"].startswith("Enter how many times")
    assert named["repeat_until-day"] == "Enter a real last date, like 27 3 2027"
    assert 'value="yes" checked' in page.text  # the answer is kept, and its questions shown open


async def test_an_end_date_before_the_first_time_is_refused_by_the_service_and_shown_on_the_field(web):
    await sign_in(web, role="call-centre", name="Sam Adviser")
    page = await post_form(
        web,
        "/adviser/call",
        call(
            name="Rita Early",
            repeat="yes",
            frequency="monthly",
            **{"repeat_until-day": "1", "repeat_until-month": "1", "repeat_until-year": "2020"},
        ),
        from_page="/adviser",
    )
    assert page.status_code == 400
    named = dict(ERRORS.findall(page.text))
    assert "is before the first occurrence" in named["repeat_until-day"]


async def test_a_resident_says_their_help_repeats_every_two_weeks_and_sees_it_before_sending(web):
    assert (await post_form(web, "/get-help", {})).status_code == 303
    for path, data in [("/get-help/postcode", {"postcode": "CT9 2RN"}), ("/get-help/help", [("types", "food")])]:
        assert (await post_form(web, path, data)).status_code == 303
    wrong = await post_form(web, "/get-help/when", {"urgency": "this-week", "repeat": "yes"})
    assert wrong.status_code == 400
    assert dict(ERRORS.findall(wrong.text)) == {"frequency": "Select how often the help is needed"}
    right = await post_form(
        web, "/get-help/when", {"urgency": "this-week", "repeat": "yes", "frequency": "fortnightly"}
    )
    assert right.status_code == 303
    again = (await web.get("/get-help/when")).text
    assert re.search(r'value="fortnightly" checked', again)
