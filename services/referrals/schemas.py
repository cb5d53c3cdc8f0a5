"""Request and response bodies of the referrals API."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
)

from services.referrals import domain
from shared.postcode import normalise_postcode
from shared.schemas import Patch, Strict

Channel = Literal["phone", "online", "partner", "email"]
Urgency = Literal["today", "within-48-hours", "this-week", "routine"]
Vulnerability = Literal[domain.VULNERABILITIES]  # type: ignore[valid-type]
ContactPreference = Literal[domain.CONTACT_PREFERENCES]  # type: ignore[valid-type]
CancelReason = Literal["no-longer-needed", "resident-request", "duplicate", "entered-in-error", "other"]

Text200 = Annotated[str, Field(min_length=1, max_length=200)]
Phone = Annotated[str, Field(max_length=40), AfterValidator(domain.normalise_phone)]
Postcode = Annotated[str, Field(max_length=12), AfterValidator(normalise_postcode)]


class AddressIn(Strict):
    line1: Text200
    line2: Annotated[str, Field(max_length=200)] | None = None
    town: Annotated[str, Field(max_length=100)] | None = None
    postcode: Postcode


class ResidentIn(Strict):
    name: Text200
    date_of_birth: date | None = None
    phone: Phone | None = None
    email: EmailStr | None = None
    address: AddressIn
    contact_preference: ContactPreference | None = None
    vulnerabilities: Annotated[list[Vulnerability], Field(max_length=len(domain.VULNERABILITIES))] = []
    language: Annotated[str, Field(max_length=50)] | None = None
    """The language to speak with the resident, if not English."""

    @field_validator("date_of_birth")
    @classmethod
    def _dob(cls, value: date | None) -> date | None:
        if value is not None:
            domain.check_date_of_birth(value, today=datetime.now(UTC).date())
        return value

    @field_validator("contact_preference")
    @classmethod
    def _reachable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in ("phone", "text") and not info.data.get("phone"):
            raise ValueError(f"is {value!r} but no valid phone is given")
        if value == "email" and not info.data.get("email"):
            raise ValueError("is 'email' but no valid email is given")
        return value


class ReferrerIn(Strict):
    """Someone referring on the resident's behalf (a GP surgery, a neighbour, a charity)."""

    name: Text200
    organisation: Annotated[str, Field(max_length=200)] | None = None
    relationship: Annotated[str, Field(max_length=100)] | None = None
    phone: Phone | None = None
    email: EmailStr | None = None


class ConsentIn(Strict):
    to_share: bool
    """The resident agrees their details go to the district hub and its partners."""
    given_by: Literal["resident", "referrer-on-behalf", "best-interests"] = "resident"
    to_notify: bool = False
    """The resident agrees to be sent their reference, and word when help is arranged, by text (a mobile) or
    email (GOV.UK Notify), as their contact preference allows."""


Frequency = Literal["weekly", "fortnightly", "monthly"]


class RecurrenceIn(Strict):
    """The help repeats: every week, fortnight or month, until `ends_on`, `occurrences` times, or until cancelled.

    Each occurrence goes to the hub that met the one before, due on its own date in
    the schedule (the first's date plus one week, two weeks, a month…).
    """

    frequency: Frequency
    ends_on: date | None = None
    """The last date an occurrence may fall on: on or after the first occurrence (`needed_by`, or the day received)."""
    occurrences: int | None = None
    """How many in all, the first included: 1 to 104. Give this or `ends_on`, not both; neither: until cancelled."""

    @field_validator("occurrences")
    @classmethod
    def _count(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        if value < 1:
            raise ValueError("must be at least 1 (the first occurrence counts)")
        if value > domain.MAX_OCCURRENCES:
            raise ValueError(f"is over {domain.MAX_OCCURRENCES}: review the need and refer again then")
        if info.data.get("ends_on") is not None:
            raise ValueError("give an end date or a number of occurrences, not both")
        return value


class RequestIn(Strict):
    type: Annotated[str, Field(max_length=40)]
    details: Annotated[str, Field(max_length=2000)] | None = None
    needed_by: date | None = None
    urgency: Urgency | None = None
    """Defaults from `needed_by`: today, within 48 hours, this week, or routine."""
    recurrence: RecurrenceIn | None = None
    """Set when the help repeats (a weekly shop, a repeat prescription); none: once."""

    @field_validator("needed_by")
    @classmethod
    def _not_far_off(cls, value: date | None) -> date | None:
        if value is not None and value > datetime.now(UTC).date() + timedelta(days=366):
            raise ValueError("is more than a year ahead")
        return value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("request_types")
        if known is not None and value not in known:
            raise ValueError(f"unknown request type {value!r}; one of: {', '.join(sorted(known))}")
        if known is None and not domain.is_request_type_id(value):
            raise ValueError("not a request type id")
        return value


class ReferralIn(Strict):
    channel: Channel
    received_at: datetime | None = None
    """When the referral was taken, if not now (a paper form or a partner's batch)."""
    resident: ResidentIn
    referrer: ReferrerIn | None = Field(default=None, validate_default=True)
    consent: ConsentIn
    requests: Annotated[list[RequestIn], Field(min_length=1, max_length=20)]

    @field_validator("referrer")
    @classmethod
    def _partner_names_referrer(cls, value: ReferrerIn | None, info: ValidationInfo) -> ReferrerIn | None:
        if value is None and info.data.get("channel") == "partner":
            raise ValueError("is required for a partner referral")
        return value

    @field_validator("received_at")
    @classmethod
    def _received_at(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("needs a time zone (for example 2020-04-01T09:30:00Z)")
        if value > datetime.now(UTC) + timedelta(minutes=5):
            raise ValueError("is in the future")
        return value


class AddressOut(BaseModel):
    line1: str
    line2: str | None = None
    town: str | None = None
    postcode: str


class ResidentOut(BaseModel):
    name: str
    date_of_birth: date | None = None
    phone: str | None = None
    email: str | None = None
    address: AddressOut
    contact_preference: str | None = None
    vulnerabilities: list[str] = []
    language: str | None = None


class RecurrenceOut(BaseModel):
    frequency: str
    ends_on: date | None = None
    occurrences: int | None = None


class RequestOut(BaseModel):
    id: str
    type: str
    details: str | None = None
    needed_by: date | None = None
    urgency: str
    status: str
    duplicate_of: str | None = None
    """An open request of the same type for the same person, taken earlier."""
    cancel_reason: str | None = None
    progress: str | None = None
    """Where fulfilment has it (routed, accepted, in_progress, fulfilled, unable_to_fulfil, triage, …): has a hub
    been in touch? None until fulfilment's first word."""
    hub: str | None = None
    progress_at: datetime | None = None
    outcome: str | None = None
    closed_at: datetime | None = None
    recurrence: RecurrenceOut | None = None
    """How the help repeats; none: once. `progress` is then the latest occurrence's."""
    occurrence: int | None = None
    """A recurring request: which occurrence `progress` is about."""


class ReferralOut(BaseModel):
    id: str
    reference: str
    channel: str
    status: str
    received_at: datetime
    created_at: datetime
    updated_at: datetime
    resident: ResidentOut
    referrer: ReferrerIn | None = None
    consent: ConsentIn
    requests: list[RequestOut]
    possible_duplicate: bool
    version: int
    closed_at: datetime | None = None
    """When its last request was closed or cancelled: retention counts from then."""
    erased_at: datetime | None = None
    resident_id: str | None = None
    """The resident it is about: GET /v1/residents/{resident_id} is their whole history."""


class ReferralSummary(BaseModel):
    id: str
    reference: str
    status: str
    received_at: datetime
    name: str
    postcode: str
    request_types: list[str]


class SearchResult(BaseModel):
    results: list[ReferralSummary]
    count: int


class DuplicateOut(BaseModel):
    """An open request of the same person and type, taken earlier."""

    type: str
    request_id: str
    referral_id: str
    reference: str
    received_at: datetime
    channel: str
    urgency: str


class DuplicateCheck(BaseModel):
    duplicates: list[DuplicateOut]
    count: int


class ResidentPatch(Patch):
    """Only the fields given change; `address` is replaced whole; null clears what a resident may lack."""

    nullable = frozenset({"date_of_birth", "phone", "email", "contact_preference", "vulnerabilities", "language"})

    name: Text200 | None = None
    date_of_birth: date | None = None
    phone: Phone | None = None
    email: EmailStr | None = None
    address: AddressIn | None = None
    contact_preference: ContactPreference | None = None
    vulnerabilities: list[Vulnerability] | None = None
    language: Annotated[str, Field(max_length=50)] | None = None


class ReferralAmendment(Patch):
    nullable = frozenset({"note"})

    resident: ResidentPatch | None = None
    consent: ConsentIn | None = None
    referrer: ReferrerIn | None = None
    note: Annotated[str, Field(max_length=1000)] | None = None
    """Why it changed, kept with the change history."""


class Cancellation(Strict):
    reason: CancelReason
    note: Annotated[str, Field(max_length=1000)] | None = None


class RequestTypeOut(BaseModel):
    id: str
    label: str
    description: str | None = None
    active: bool


class RequestTypeIn(Strict):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,39}$")]
    label: Text200
    description: Annotated[str, Field(max_length=500)] | None = None


class RequestTypePatch(Patch):
    nullable = frozenset({"description"})

    label: Text200 | None = None
    description: Annotated[str, Field(max_length=500)] | None = None
    active: bool | None = None


class ResidentMerge(Strict):
    duplicate: Annotated[str, Field(max_length=40)]
    """The resident recorded twice: their resident id, or the id or reference of one of their referrals."""


class MergeOut(BaseModel):
    merged_id: str
    into_id: str
    referral_ids: list[str]
    by: str
    at: datetime


class ResidentHistory(BaseModel):
    resident_id: str
    referrals: list[ReferralOut]
    """Every referral of the resident, oldest first, with its requests: those of residents merged into it too."""
    merges: list[MergeOut]
    """The residents merged into this one, oldest first."""


class ResidentErasure(BaseModel):
    resident_id: str
    erased: list[str]
    """The referrals erased now (those erased before are not listed)."""
