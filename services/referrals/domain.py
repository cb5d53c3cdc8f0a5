"""The rules of referrals: intake (normalising, urgency, references, duplicates) and the `Referral` aggregate. No I/O."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import phonenumbers

from shared.errors import Conflict, NotFound
from shared.postcode import outward_code
from shared.privacy import ERASED
from shared.reference import normalise_reference  # noqa: F401  (the referrals rule, shared with fulfilment)

CHANNELS = ("phone", "online", "partner", "email")
URGENCIES = ("today", "within-48-hours", "this-week", "routine")
VULNERABILITIES = (
    "shielding",
    "lives-alone",
    "no-support-network",
    "needs-interpreter",
    "disability",
    "mental-health",
    "over-70",
    "pregnant",
    "carer",
    "no-digital-access",
    "financial-hardship",
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


def request_status_after(progress: str, *, current: str, series_continues: bool = False) -> str:
    """A request's status here once fulfilment says it is `progress` (fulfilment's assignment status).

    A recurring request stays open while its series goes on: one occurrence closing
    opens the next (`series_continues`); it closes with the series' last.
    """
    if current != OPEN:
        return current  # cancelled or closed here already: a late event does not reopen it
    if series_continues and progress in HUB_CLOSED:
        return OPEN
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
    *,
    name_a: str,
    dob_a: date | None,
    postcode_a: str,
    phone_a: str | None,
    name_b: str,
    dob_b: date | None,
    postcode_b: str,
    phone_b: str | None,
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


# --- the Referral aggregate ---------------------------------------------------------------

RESIDENT_FIELDS = (
    "name",
    "date_of_birth",
    "phone",
    "email",
    "address_line1",
    "address_line2",
    "town",
    "postcode",
    "contact_preference",
    "vulnerabilities",
    "language",
)
"""The resident's fields as a referral holds them (the address flattened); with `referrer`, what is sealed."""

ADDRESS_FIELDS = {"line1": "address_line1", "line2": "address_line2", "town": "town", "postcode": "postcode"}
"""The API's address fields -> the referral's (the changed fields are named as the API names them)."""

ERASED_PERSONAL: dict[str, Any] = {
    "name": ERASED,
    "date_of_birth": None,
    "phone": None,
    "email": None,
    "address_line1": ERASED,
    "address_line2": None,
    "town": None,
    "contact_preference": None,
    "vulnerabilities": [],
    "language": None,
    "referrer": None,
}
"""An erased resident: what is left of `personal` (the postcode keeps its outward code, for counts)."""


class ReferralErased(Conflict):
    """An erased referral cannot be amended: the resident's details are gone."""


class NotOpen(Conflict):
    """Only an open referral can be amended."""


@dataclass(slots=True)
class Request:
    """One need of a referral ('food', 'prescription'), closed by fulfilment or cancelled here."""

    id: str
    type: str
    position: int
    urgency: str
    details: str | None = None
    needed_by: date | None = None
    status: str = OPEN
    duplicate_of: str | None = None
    cancel_reason: str | None = None
    cancelled_at: datetime | None = None
    progress: str | None = None
    """Fulfilment's status of it (no personal data), with the hub and when."""
    hub: str | None = None
    progress_at: datetime | None = None
    outcome: str | None = None
    closed_at: datetime | None = None
    recurrence: dict[str, Any] | None = None
    """How the help repeats ({"frequency": "weekly", "ends_on": ..., "occurrences": ...}); None: once."""
    occurrence: int | None = None
    """A recurring request: the occurrence fulfilment's last word was about (1, 2, …)."""


@dataclass(slots=True)
class Change:
    """One entry of a referral's history: who changed what (the note is sealed at rest)."""

    kind: str
    fields: list[str]
    by: str
    at: datetime
    note: str | None = None


class _RecordsProgress:
    """What fulfilment's status events do to a referral: the same rule for the `Referral` and its `Progress`."""

    id: str
    status: str
    closed_at: datetime | None
    requests: list[Request]

    def record_progress(
        self,
        request_id: str,
        *,
        progress: str,
        hub: str | None,
        at: datetime,
        outcome: str | None,
        closed_at: datetime | None,
        occurrence: int | None = None,
        series_continues: bool = False,
    ) -> bool:
        """Fulfilment moved a request on; False for an event older than what is held (a republish).

        For a recurring request, `occurrence` says which of its occurrences moved.
        """
        request = next((r for r in self.requests if r.id == request_id), None)
        if request is None:
            raise NotFound(f"no request {request_id} on referral {self.id}")
        if request.progress_at is not None and at < request.progress_at:
            return False
        status = request_status_after(progress, current=request.status, series_continues=series_continues)
        request.progress, request.hub, request.progress_at, request.outcome = progress, hub, at, outcome
        if occurrence is not None:
            request.occurrence = occurrence
        if status != request.status:
            ended = closed_at or at
            if status == CLOSED:
                request.closed_at = ended
            else:
                request.cancelled_at = ended
            request.status = status
            if self.status == OPEN:  # the referral closes (or is cancelled) when no request is open any more
                now_status = referral_status([r.status for r in self.requests])
                if now_status != OPEN:
                    self.status, self.closed_at = now_status, ended
        return True


@dataclass(slots=True)
class Referral(_RecordsProgress):
    """A resident and their requests: amended, cancelled, closed when no request is open, erased."""

    id: str
    reference: str
    channel: str
    received_at: datetime
    created_at: datetime
    updated_at: datetime
    created_by: str
    created_by_role: str
    personal: dict[str, Any]
    """RESIDENT_FIELDS and `referrer` (a dict or None): sealed at rest as one object."""
    consent: dict[str, Any]
    requests: list[Request]
    status: str = OPEN
    possible_duplicate: bool = False
    version: int = 1
    closed_at: datetime | None = None
    erased_at: datetime | None = None
    resident_id: str | None = None
    """The resident this referral is about: its own id at intake, another's once two residents are merged."""
    idempotency_client: str | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None
    changes: list[Change] = field(default_factory=list)
    """History entries made since it was loaded (the repository writes them)."""

    @property
    def district(self) -> str:
        """The postcode's outward code ('CT9'): a district, not a person."""
        postcode: str = self.personal["postcode"]
        return outward_code(postcode)

    @property
    def referrer(self) -> dict[str, Any] | None:
        return self.personal.get("referrer")

    def request(self, request_id: str) -> Request:
        for request in self.requests:
            if request.id == request_id:
                return request
        raise NotFound(f"no request {request_id} on referral {self.id}")

    def amend(
        self,
        *,
        resident: dict[str, Any] | None = None,
        consent: dict[str, Any] | None = None,
        referrer: dict[str, Any] | None = None,
        by: str,
        at: datetime,
        note: str | None = None,
    ) -> list[str]:
        """Change the resident's details (the API's shape, partial), consent or referrer; return what changed.

        An erased referral cannot be amended, nor a closed or cancelled one.
        """
        if self.erased_at is not None:
            raise ReferralErased("the resident's personal data was erased; take a new referral instead")
        if self.status != OPEN:
            raise NotOpen(f"referral is {self.status}; only an open referral can be amended")
        changed: list[str] = []
        for name, value in _flattened(resident or {}).items():
            if self.personal[name] != value:
                self.personal[name] = value
                changed.append(_api_name(name))
        if consent is not None and consent != self.consent:
            self.consent = consent
            changed.append("consent")
        if referrer is not None and referrer != self.personal.get("referrer"):
            self.personal["referrer"] = referrer
            changed.append("referrer")
        if changed:
            changed.sort()
            self._changed(at)
            self.changes.append(Change("amended", changed, by, at, note))
        return changed

    def cancel(
        self, *, request_id: str | None, reason: str, by: str, at: datetime, note: str | None = None
    ) -> list[Request]:
        """Cancel one request, or (no id) every open one; return those cancelled. The referral closes if none is open."""
        targets = [self.request(request_id)] if request_id is not None else self.requests
        cancelled = [r for r in targets if r.status == OPEN]
        if not cancelled:
            raise Conflict("nothing open to cancel: " + ", ".join(f"{r.type} is {r.status}" for r in targets))
        for request in cancelled:
            request.status, request.cancel_reason, request.cancelled_at = CANCELLED, reason, at
        self._changed(at)
        self._close_if_done(at)
        self.changes.append(Change("cancelled", [f"requests.{r.type}" for r in cancelled], by, at, note))
        return cancelled

    def erase(self, *, by: str, at: datetime, reason: str) -> bool:
        """Erase the resident's personal data, keeping what counts need; False if it was erased already."""
        if self.erased_at is not None:
            return False
        self.personal = {**ERASED_PERSONAL, "postcode": self.district}
        for request in self.requests:
            request.details = None
        self.body_hash = None  # a fingerprint of what the resident said: gone with it
        self.erased_at = at
        self._changed(at)
        self.changes.append(Change("erased", [reason], by, at))
        return True

    def move_to_resident(self, resident_id: str, *, by: str, at: datetime) -> None:
        """This referral is about `resident_id` (two residents recorded twice merged): its history says so."""
        self.changes.append(Change("merged", [f"resident_id:{self.resident_id}->{resident_id}"], by, at))
        self.resident_id = resident_id
        self._changed(at)

    def _changed(self, at: datetime) -> None:
        self.updated_at = at
        self.version += 1

    def _close_if_done(self, at: datetime) -> None:
        """A referral closes (or is cancelled) when no request is open any more."""
        status = referral_status([r.status for r in self.requests])
        if status != OPEN:
            self.status, self.closed_at = status, at


@dataclass(slots=True)
class Progress(_RecordsProgress):
    """What fulfilment's status events change of a referral: its requests' progress and its status.

    No personal data: the status consumer folds a fetch of events into these without
    opening any resident's sealed details (services/referrals/service.py `record_progress_batch`).
    """

    id: str
    status: str
    closed_at: datetime | None
    requests: list[Request]


def _flattened(resident: dict[str, Any]) -> dict[str, Any]:
    """Resident fields as the API gives them (address nested) as the referral's fields."""
    fields = {k: v for k, v in resident.items() if k != "address"}
    if "vulnerabilities" in fields and fields["vulnerabilities"] is None:
        fields["vulnerabilities"] = []
    address = resident.get("address")
    if address is not None:  # a new address replaces the whole of the old one
        fields.update({name: address.get(api_name) for api_name, name in ADDRESS_FIELDS.items()})
    return fields


def _api_name(name: str) -> str:
    for api_name, own in ADDRESS_FIELDS.items():
        if own == name:
            return f"address.{api_name}"
    return name


class SameResident(Conflict):
    """A resident cannot be merged into itself."""


def merge_residents(*, into: str, merged: str, referrals: list[Referral], by: str, at: datetime) -> list[Referral]:
    """Merge resident `merged` into `into`: each of `merged`'s referrals moves, keeping its history; return them.

    Both residents' referrals are then one resident's history, and erasing that resident reaches all of them.
    """
    if into == merged:
        raise SameResident("a resident cannot be merged into itself")
    moving = [r for r in referrals if r.resident_id == merged]
    if not moving:
        raise NotFound(f"no resident {merged}")
    for referral in moving:
        referral.move_to_resident(into, by=by, at=at)
    return moving


# --- telling residents ------------------------------------------------------------------------

NOT_BY_MESSAGE = ("post", "via-referrer")
"""Contact preferences that rule out a text or an email to the resident."""


def message_contact(*, phone: str | None, email: str | None, preference: str | None) -> tuple[str, str] | None:
    """How to send the resident a message ("sms" and a mobile, or "email" and an address), or None.

    Their contact preference first (a text needs a mobile: a landline cannot take one); with
    none, a mobile before an email. Someone who asked for post, or to be reached through their
    referrer, is not messaged.
    """
    if preference in NOT_BY_MESSAGE:
        return None
    mobile = phone if phone and is_uk_mobile(phone) else None
    if preference == "email" and email:
        return "email", email
    if mobile:
        return "sms", mobile
    if email:
        return "email", email
    return None


def is_uk_mobile(phone: str) -> bool:
    """A UK mobile number in E.164 ('+447…', as `normalise_phone` stores it): one a text can reach."""
    return phone.startswith("+447") and len(phone) == 13


# --- recurring requests ---------------------------------------------------------------

FREQUENCIES = ("weekly", "fortnightly", "monthly")
MAX_OCCURRENCES = 104
"""Two years of a weekly shop: a longer need is reviewed and referred again."""
LONGEST_SERIES = timedelta(days=2 * 366)


def recurrence_errors(requests: list[Any], *, received: date) -> list[dict[str, str]]:
    """Field errors of each request's recurrence against its own dates; [] if every one is sound.

    The first occurrence is due on `needed_by`, or on the day the referral is
    received: an end date before it would make a series of none. Any request type
    may recur: shopping, prescriptions, befriending calls and money advice all come
    back week after week for the people these hubs help.
    """
    errors = []
    for index, request in enumerate(requests):
        recurrence = request.recurrence
        if recurrence is None or recurrence.ends_on is None:
            continue
        first = request.needed_by or received
        where = f"requests[{index}].recurrence.ends_on"
        if recurrence.ends_on < first:
            what = "the date it is needed by" if request.needed_by else "the day the referral is received"
            errors.append(
                {
                    "field": where,
                    "reason": f"is before the first occurrence ({first.isoformat()}, {what}): "
                    "the end date must be on or after it",
                }
            )
        elif recurrence.ends_on > first + LONGEST_SERIES:
            errors.append({"field": where, "reason": "is more than two years after the first occurrence"})
    return errors
