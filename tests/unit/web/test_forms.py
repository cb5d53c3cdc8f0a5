"""What the resident's and staff's forms accept, and how the API's field errors come back to the fields."""

import pytest

from services.web import forms
from services.web.api.hub import queue_order
from services.web.signin import SignInFailed, person_from_claims
from shared.auth import Claims


def test_a_postcode_is_given_back_in_its_standard_form_or_a_residents_message():
    assert forms.check_postcode(" ct92rn ") == ("CT9 2RN", None)
    assert forms.check_postcode("") == (None, "Enter your postcode")
    assert forms.check_postcode("CT99 ZZZZ") == (None, "Enter a real postcode, like CT9 1AB")


def test_a_contact_preference_needs_the_detail_it_uses():
    assert forms.check_contact(phone="", email="", preference="phone") == {"phone": forms.MESSAGES["phone.missing"]}
    assert forms.check_contact(phone="", email="", preference="email") == {"email": forms.MESSAGES["email.missing"]}
    assert forms.check_contact(phone="12", email="", preference="post") == {"phone": forms.MESSAGES["phone.invalid"]}
    assert forms.check_contact(phone="01843 577000", email="", preference="") == {
        "preference": forms.MESSAGES["preference.missing"]
    }
    assert forms.check_contact(phone="01843 577000", email="a@example.org", preference="text") == {}


def test_yes_to_being_sent_the_reference_needs_a_mobile_or_an_email_and_a_preference_that_allows_a_message():
    assert forms.check_notify(notify=False, phone="", email="", preference="post") is None
    assert forms.check_notify(notify=True, phone="07911 123456", email="", preference="phone") is None
    assert forms.check_notify(notify=True, phone="01843 577000", email="jo@example.org", preference="text") is None
    assert forms.check_notify(notify=True, phone="01843 577000", email="", preference="phone") == "no_contact"
    assert forms.check_notify(notify=True, phone="", email="", preference="") == "no_contact"
    assert forms.check_notify(notify=True, phone="07911 123456", email="", preference="post") == "not_by_message"
    assert forms.check_notify(notify=True, phone="07911 123456", email="", preference="via-referrer") == (
        "not_by_message"
    )


def test_the_apis_field_errors_land_on_the_page_and_field_that_ask_for_them():
    errors = [
        {"field": "resident.address.postcode", "reason": "not a valid UK postcode"},
        {"field": "resident.email", "reason": "value is not a valid email address"},
        {"field": "requests[1].details", "reason": "too long"},
        {"field": "consent.to_share", "reason": "is required"},
        {"field": "consent.to_notify", "reason": "must be a boolean"},
        {"field": "received_at", "reason": "is in the future"},
    ]
    found = forms.api_errors_to_fields(errors, types=["food", "prescription"])
    assert [(f.page, f.field) for f in found] == [
        ("postcode", "postcode"),
        ("contact", "email"),
        ("details", "details-prescription"),
        ("consent", "consent"),
        ("consent", "notify"),
        ("check", "submit"),
    ]
    assert found[0].message == "Enter a real postcode, like CT9 1AB"


def test_the_referral_body_carries_the_online_channel_and_every_answer():
    body = forms.referral_body(
        {
            "name": "Jo",
            "line1": "1 High St",
            "postcode": "CT9 2RN",
            "types": ["food"],
            "urgency": "today",
            "details": {"food": "Vegan"},
            "phone": "01843 577000",
            "preference": "phone",
            "consent": True,
        },
        channel="online",
    )
    assert body["channel"] == "online"
    assert body["consent"] == {"to_share": True, "given_by": "resident", "to_notify": False}, "not asked: not told"
    told = forms.referral_body({"name": "Jo", "line1": "1", "postcode": "CT9 2RN", "notify": "yes"}, channel="online")
    assert told["consent"]["to_notify"] is True
    assert body["requests"] == [{"type": "food", "details": "Vegan", "urgency": "today"}]
    assert body["resident"]["phone"] == "01843 577000" and "email" not in body["resident"]


def test_an_entra_roles_list_maps_to_our_role_and_a_hub_worker_needs_a_hub():
    entra = Claims(role="roles", hub="hub", role_map={"KT.Hub": "hub"})
    person = person_from_claims(
        {"sub": "abc", "name": "Tess", "roles": ["Other.Role", "KT.Hub"], "hub": "thanet"}, entra
    )
    assert person == {"sub": "oidc:abc", "name": "Tess", "role": "hub", "hub": "thanet", "via": "oidc"}
    with pytest.raises(SignInFailed, match="no Kent Together role"):
        person_from_claims({"sub": "x", "roles": ["Other.Role"]}, Claims(role="roles"))
    with pytest.raises(SignInFailed, match="names no Kent hub"):
        person_from_claims({"sub": "x", "roles": "hub", "hub": "medway"}, Claims(role="roles"))
    with pytest.raises(SignInFailed, match="no Kent Together role"):
        person_from_claims({"sub": "x", "roles": ["online-form"]}, Claims(role="roles")), "not a person's role"
    assert person_from_claims({"sub": "x", "role": "analyst"}, Claims())["role"] == "analyst"
    assert person_from_claims({"sub": "x", "roles": ["hub.dover"]}, Claims(role="roles"))["hub"] == "dover", (
        "an app role hub.<slug> names the hub, as the services read it"
    )


def test_the_queue_puts_the_most_urgent_first_then_overdue_then_the_soonest_due():
    def item(name, urgency, overdue, due):
        return {
            "id": name,
            "urgency": urgency,
            "overdue": overdue,
            "status": "routed",
            "accept_due_at": due,
            "received_at": "2026-01-01T00:00:00Z",
        }

    items = [
        item("routine", "routine", True, "2026-01-01T01:00"),
        item("today-later", "today", False, "2026-01-01T09:00"),
        item("today-overdue", "today", True, "2026-01-01T10:00"),
        item("today-soon", "today", False, "2026-01-01T08:00"),
    ]
    assert [i["id"] for i in queue_order(items)] == ["today-overdue", "today-soon", "today-later", "routine"]
