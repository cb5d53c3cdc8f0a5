"""How a resident who agreed to messages is reached: their preference first, a text only to a mobile."""

import pytest

from services.referrals.domain import message_contact

MOBILE, LANDLINE, EMAIL = "+447911123456", "+441843577000", "margaret@example.org"


@pytest.mark.parametrize(
    ("phone", "email", "preference", "expected"),
    [
        (MOBILE, EMAIL, "text", ("sms", MOBILE)),
        (MOBILE, EMAIL, "email", ("email", EMAIL)),
        (MOBILE, EMAIL, None, ("sms", MOBILE)),  # no preference: a mobile before an email
        (MOBILE, None, "phone", ("sms", MOBILE)),  # calls preferred, but a text reaches a mobile
        (LANDLINE, EMAIL, "phone", ("email", EMAIL)),  # a landline takes no text
        (LANDLINE, None, "phone", None),
        (None, None, None, None),
        (MOBILE, EMAIL, "post", None),  # asked for post: no text, no email
        (MOBILE, EMAIL, "via-referrer", None),  # to be reached through their referrer
    ],
)
def test_a_resident_is_messaged_as_their_preference_allows_and_only_a_mobile_gets_a_text(
    phone, email, preference, expected
):
    assert message_contact(phone=phone, email=email, preference=preference) == expected
