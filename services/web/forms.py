"""What each form accepts, in words a resident understands; and the API's field errors mapped back onto fields.

The services are the authority on what a referral may hold: these checks only
catch on the page what a resident can fix there, and `api_errors_to_fields`
puts anything the API still refuses beside the field it concerns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import phonenumbers

from shared.postcode import normalise_postcode

URGENCY_CHOICES = (
    ("today", "Today"),
    ("within-48-hours", "In the next 2 days"),
    ("this-week", "This week"),
    ("routine", "It is not urgent"),
)
CONTACT_CHOICES = (
    ("phone", "Phone call"),
    ("text", "Text message"),
    ("email", "Email"),
    ("post", "Letter"),
)
FREQUENCY_CHOICES = (
    ("weekly", "Every week"),
    ("fortnightly", "Every 2 weeks"),
    ("monthly", "Every month"),
)
MOST_OCCURRENCES = 104
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MESSAGES = {
    "postcode.missing": "Enter your postcode",
    "postcode.invalid": "Enter a real postcode, like CT9 1AB",
    "types.missing": "Select the help you need",
    "types.unknown": "Select the help you need from the list",
    "urgency.missing": "Select when you need help",
    "details.long": "Tell us in 2,000 characters or fewer",
    "name.missing": "Enter your full name",
    "name.long": "Your name must be 200 characters or fewer",
    "line1.missing": "Enter the first line of your address",
    "line1.long": "The first line of your address must be 200 characters or fewer",
    "phone.invalid": "Enter a UK phone number, like 01843 577000 or 07911 123456",
    "phone.missing": "Enter a phone number, or choose another way for us to contact you",
    "email.invalid": "Enter an email address in the correct format, like name@example.com",
    "email.missing": "Enter an email address, or choose another way for us to contact you",
    "preference.missing": "Select how we should contact you",
    "consent.missing": "Tick the box to say we can share your details with the people who will help you",
    "notify.no_contact": "Enter a mobile number or email address so we can send your reference, or choose No",
    "notify.not_by_message": "You asked us to contact you by letter: choose another way to be contacted, or choose No",
    "repeat.missing": "Select whether this help needs to repeat",
    "frequency.missing": "Select how often the help is needed",
    "repeat_count.invalid": f"Enter how many times, as a number from 1 to {MOST_OCCURRENCES}",
    "repeat_until.invalid": "Enter a real last date, like 27 3 2027",
    "repeat_until.early": "The last date must be on or after the first time help is needed",
    "repeat.both": "Give how many times or a last date, not both",
}

REPEAT_FIELDS = ("repeat", "frequency", "repeat_count", "repeat_until-day", "repeat_until-month", "repeat_until-year")
"""The form fields of "does this help need to repeat?", on every page that asks it."""


def check_recurrence(values: dict) -> tuple[dict | None, dict[str, str]]:
    """The referrals API's `recurrence` from the "does this help need to repeat?" answers, or the errors to show.

    (None, {}) when the help is needed once. How many times and a last date are
    both optional (neither: until it is cancelled), but not both together.
    """
    if values.get("repeat") != "yes":
        return None, {}
    errors: dict[str, str] = {}
    frequency = values.get("frequency") or ""
    if frequency not in dict(FREQUENCY_CHOICES):
        errors["frequency"] = MESSAGES["frequency.missing"]
    recurrence: dict = {"frequency": frequency}
    count = (values.get("repeat_count") or "").strip()
    if count:
        if not count.isdigit() or not 1 <= int(count) <= MOST_OCCURRENCES:
            errors["repeat_count"] = MESSAGES["repeat_count.invalid"]
        else:
            recurrence["occurrences"] = int(count)
    parts = [(values.get(f"repeat_until-{p}") or "").strip() for p in ("day", "month", "year")]
    if any(parts):
        try:
            recurrence["ends_on"] = date(int(parts[2]), int(parts[1]), int(parts[0])).isoformat()
        except ValueError:
            errors["repeat_until-day"] = MESSAGES["repeat_until.invalid"]
    if "occurrences" in recurrence and "ends_on" in recurrence:
        errors["repeat_count"] = MESSAGES["repeat.both"]
    return (None, errors) if errors else (recurrence, {})


_RECURRENCE_FIELD = re.compile(r"^requests\[\d+\]\.recurrence(?:\.(\w+))?")
_RECURRENCE_FIELDS = {
    "frequency": ("frequency", MESSAGES["frequency.missing"]),
    "occurrences": ("repeat_count", MESSAGES["repeat_count.invalid"]),
    "ends_on": ("repeat_until-day", MESSAGES["repeat_until.early"]),
}


def recurrence_field(api_field: str) -> tuple[str, str] | None:
    """The form field (and what to say) for an API error on a request's recurrence; None if it is not one."""
    found = _RECURRENCE_FIELD.match(api_field)
    if found is None:
        return None
    return _RECURRENCE_FIELDS.get(found.group(1) or "", ("frequency", MESSAGES["frequency.missing"]))


def check_postcode(value: str) -> tuple[str | None, str | None]:
    """The postcode in its standard form, or the message to show."""
    if not value.strip():
        return None, MESSAGES["postcode.missing"]
    try:
        return normalise_postcode(value), None
    except ValueError:
        return None, MESSAGES["postcode.invalid"]


def check_phone(value: str) -> str | None:
    """A message if this cannot be a phone number (the referrals service checks it again)."""
    try:
        number = phonenumbers.parse(value, "GB")
    except phonenumbers.NumberParseException:
        return MESSAGES["phone.invalid"]
    return None if phonenumbers.is_valid_number(number) else MESSAGES["phone.invalid"]


def check_contact(*, phone: str, email: str, preference: str) -> dict[str, str]:
    errors = {}
    if phone and check_phone(phone):
        errors["phone"] = MESSAGES["phone.invalid"]
    if email and (len(email) > 254 or not EMAIL.match(email)):
        errors["email"] = MESSAGES["email.invalid"]
    if preference not in {value for value, _ in CONTACT_CHOICES}:
        errors["preference"] = MESSAGES["preference.missing"]
    elif preference in ("phone", "text") and not phone and "phone" not in errors:
        errors["phone"] = MESSAGES["phone.missing"]
    elif preference == "email" and not email and "email" not in errors:
        errors["email"] = MESSAGES["email.missing"]
    return errors


NOT_BY_MESSAGE = ("post", "via-referrer")
"""Contact preferences the referrals service never sends a text or email to (`domain.message_contact`)."""


def is_mobile(phone: str) -> bool:
    """A UK mobile: one a text can reach (a landline cannot take one)."""
    try:
        number = phonenumbers.parse(phone, "GB")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE and number.country_code == 44


def check_notify(*, notify: bool, phone: str, email: str, preference: str) -> str | None:
    """Why a resident who agreed to be sent their reference could not be ("no_contact", "not_by_message"), or None.

    The referrals service would take the referral and tell them nothing (`consent.to_notify` is a wish, acted on
    only with a mobile or an email and a preference that allows a message), so the page says so while it can be
    fixed.
    """
    if not notify:
        return None
    if preference in NOT_BY_MESSAGE:
        return "not_by_message"
    if not email and not (phone and is_mobile(phone)):
        return "no_contact"
    return None


def check_about_you(*, name: str, line1: str) -> dict[str, str]:
    errors = {}
    if not name:
        errors["name"] = MESSAGES["name.missing"]
    elif len(name) > 200:
        errors["name"] = MESSAGES["name.long"]
    if not line1:
        errors["line1"] = MESSAGES["line1.missing"]
    elif len(line1) > 200:
        errors["line1"] = MESSAGES["line1.long"]
    return errors


@dataclass(frozen=True)
class FieldError:
    page: str
    """The page of the journey that asks for the field (`postcode`, `about-you`…)."""
    field: str
    message: str


# The referrals API's fields, to the page and field that ask for them, and what to say.
_API_FIELDS = (
    ("resident.address.postcode", "postcode", "postcode", MESSAGES["postcode.invalid"]),
    ("resident.name", "about-you", "name", MESSAGES["name.missing"]),
    ("resident.address.line1", "about-you", "line1", MESSAGES["line1.missing"]),
    ("resident.address", "about-you", "line1", MESSAGES["line1.missing"]),
    ("resident.phone", "contact", "phone", MESSAGES["phone.invalid"]),
    ("resident.email", "contact", "email", MESSAGES["email.invalid"]),
    ("resident.contact_preference", "contact", "preference", MESSAGES["preference.missing"]),
    ("consent.to_notify", "consent", "notify", MESSAGES["notify.no_contact"]),
    ("consent", "consent", "consent", MESSAGES["consent.missing"]),
    ("requests", "help", "types", MESSAGES["types.unknown"]),
)
_REQUEST_DETAILS = re.compile(r"^requests\[(\d+)\]\.details")


def api_errors_to_fields(errors: list[dict], *, types: list[str]) -> list[FieldError]:
    """The API's [{field, reason}] as fields of the journey's pages, each said in a resident's words."""
    found: list[FieldError] = []
    for error in errors:
        field = str(error.get("field", ""))
        repeat = recurrence_field(field)
        if repeat is not None:
            found.append(FieldError("when", *repeat))
            continue
        details = _REQUEST_DETAILS.match(field)
        if details and int(details.group(1)) < len(types):
            found.append(FieldError("details", f"details-{types[int(details.group(1))]}", MESSAGES["details.long"]))
            continue
        for prefix, page, name, message in _API_FIELDS:
            if field == prefix or field.startswith(prefix + ".") or field.startswith(prefix + "["):
                found.append(FieldError(page, name, message))
                break
        else:
            found.append(
                FieldError(
                    "check",
                    "submit",
                    "Something in your answers could not be sent: check them, change what is wrong and send them again",
                )
            )
    unique: dict[tuple[str, str], FieldError] = {}
    for item in found:
        unique.setdefault((item.page, item.field), item)
    return list(unique.values())


def referral_body(draft: dict, *, channel: str) -> dict:
    """The referrals API's body from a resident's answers."""
    resident = {
        "name": draft["name"],
        "address": {
            "line1": draft["line1"],
            "line2": draft.get("line2") or None,
            "town": draft.get("town") or None,
            "postcode": draft["postcode"],
        },
        "contact_preference": draft.get("preference") or None,
    }
    if draft.get("phone"):
        resident["phone"] = draft["phone"]
    if draft.get("email"):
        resident["email"] = draft["email"]
    recurrence = draft.get("recurrence")
    return {
        "channel": channel,
        "resident": resident,
        "consent": {
            "to_share": bool(draft.get("consent")),
            "given_by": "resident",
            "to_notify": draft.get("notify") == "yes",
        },
        "requests": [
            {
                "type": kind,
                "details": (draft.get("details") or {}).get(kind) or None,
                "urgency": draft.get("urgency"),
                **({"recurrence": recurrence} if recurrence else {}),
            }
            for kind in draft.get("types", [])
        ],
    }
