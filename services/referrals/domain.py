"""The rules of referral intake: normalising, urgency, references, duplicates. No I/O."""

from __future__ import annotations

import re
import secrets
import unicodedata
from datetime import date, datetime, timedelta

import phonenumbers

from shared.reference import normalise_reference  # noqa: F401  (the referrals rule, shared with fulfilment)

CHANNELS = ("phone", "online", "partner", "email")
URGENCIES = ("today", "within-48-hours", "this-week", "routine")
VULNERABILITIES = (
    "shielding", "lives-alone", "no-support-network", "needs-interpreter", "disability",
    "mental-health", "over-70", "pregnant", "carer", "no-digital-access", "financial-hardship",
)
CONTACT_PREFERENCES = ("phone", "text", "email", "post", "via-referrer")
DEFAULT_REQUEST_TYPES = (
    ("food", "Food", "Food parcels, shopping or meals"),
    ("prescription", "Prescription collection", "Collecting and delivering prescriptions"),
    ("befriending", "Befriending / social isolation", "Regular calls or visits for someone isolated"),
    ("financial", "Financial hardship", "Help with money, benefits or bills"),
    ("practical", "Practical help", "Errands, dog walking, post, small jobs"),
    ("other", "Other", "Anything else: describe it in the details"),
)
OPEN, CANCELLED, CLOSED = "open", "cancelled", "closed"

HUB_CLOSED = frozenset({"fulfilled", "unable_to_fulfil", "passed_on"})
"""Fulfilment's statuses after which no hub will act on the request: it is closed here."""
HUB_CANCELLED = "cancelled"


def request_status_after(progress: str, *, current: str) -> str:
    """A request's status here once fulfilment says it is `progress` (fulfilment's assignment status)."""
    if current != OPEN:
        return current  # cancelled or closed here already: a late event does not reopen it
    if progress in HUB_CLOSED:
        return CLOSED
    if progress == HUB_CANCELLED:
        return CANCELLED
    return OPEN


def referral_status(request_statuses: list[str]) -> str:
    """Open while any request is; cancelled if every one was; else closed."""
    if OPEN in request_statuses:
        return OPEN
    if request_statuses and all(s == CANCELLED for s in request_statuses):
        return CANCELLED
    return CLOSED

# Crockford's base32 without I, L, O, U: nothing a resident can misread on the phone.
_REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_REQUEST_TYPE_ID = re.compile(r"^[a-z][a-z0-9-]{1,39}$")


def make_reference() -> str:
    """A reference a resident can quote: 'KT-7F3K-9QX2'."""
    chars = "".join(_REFERENCE_ALPHABET[b % 32] for b in secrets.token_bytes(8))  # 256 = 8 × 32: unbiased
    return f"KT-{chars[:4]}-{chars[4:]}"


_REFERENCE = re.compile(r"^KT-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")


def looks_like_reference(value: str) -> bool:
    """A reference as `normalise_reference` writes it (never an id: ids are UUIDs)."""
    return bool(_REFERENCE.match(value))


def normalise_phone(value: str) -> str:
    """A UK or international number in E.164 ('+441843123456'); ValueError if invalid."""
    try:
        number = phonenumbers.parse(value, "GB")
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number (for example 01843 577000 or 07911 123456)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def name_key(name: str) -> str:
    """A name for matching people: no accents, case, punctuation or word order ('Smith, Jo' = 'jo smith')."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", plain.lower())
    return " ".join(sorted(words))


def is_request_type_id(value: str) -> bool:
    return bool(_REQUEST_TYPE_ID.match(value))


def urgency_for(*, needed_by: date | None, received: datetime) -> str:
    """How soon help is needed, from the date it is needed by (no date: routine)."""
    if needed_by is None:
        return "routine"
    days = (needed_by - received.date()).days
    if days <= 0:
        return "today"
    if days <= 2:
        return "within-48-hours"
    if days <= 7:
        return "this-week"
    return "routine"


def check_date_of_birth(value: date, *, today: date) -> date:
    if value > today:
        raise ValueError("is in the future")
    if value < today - timedelta(days=365 * 125):
        raise ValueError("is more than 125 years ago")
    return value


def is_same_person(
    *, name_a: str, dob_a: date | None, postcode_a: str, phone_a: str | None,
    name_b: str, dob_b: date | None, postcode_b: str, phone_b: str | None,
) -> bool:
    """Same normalised name, and the same date of birth, postcode or phone."""
    if name_key(name_a) != name_key(name_b):
        return False
    return (
        (dob_a is not None and dob_a == dob_b)
        or postcode_a == postcode_b
        or (phone_a is not None and phone_a == phone_b)
    )


BACKFILL_SCOPE = "referrals:backfill"
PAPER_FORM_WINDOW = timedelta(days=7)
"""How far back any writer may date a referral: a paper form, a partner's weekly batch."""


def needs_backfill_scope(received_at: datetime | None, *, now: datetime) -> bool:
    """Dated further back than a paper form can be: a migration from a legacy system (or a demo)."""
    return received_at is not None and received_at < now - PAPER_FORM_WINDOW
