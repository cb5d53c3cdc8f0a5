"""Contracts published by the referrals service."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, ClassVar

from pydantic import BaseModel

from shared.events import PERSONAL, TYPE_PREFIX, EventData, contract

__all__ = [
    "AddressV1",
    "ResidentV1",
    "ReferrerV1",
    "RequestV1",
    "RecurrenceV1",
    "FREQUENCIES",
    "ReferralReceivedV1",
    "ReferralAmendedV1",
    "RequestCancelledV1",
    "RequestReceivedV1",
    "ResidentErasedV1",
    "ResidentsMergedV1",
    "CANCEL_REASONS",
]


class AddressV1(BaseModel):
    line1: Annotated[str, PERSONAL]
    line2: Annotated[str | None, PERSONAL] = None
    town: Annotated[str | None, PERSONAL] = None
    postcode: Annotated[str, PERSONAL]
    """Erasure keeps its outward code ('CT9'): a district, not a person."""


class ResidentV1(BaseModel):
    name: Annotated[str, PERSONAL]
    date_of_birth: Annotated[date | None, PERSONAL] = None
    phone: Annotated[str | None, PERSONAL] = None
    email: Annotated[str | None, PERSONAL] = None
    address: AddressV1
    contact_preference: Annotated[str | None, PERSONAL] = None
    vulnerabilities: Annotated[list[str], PERSONAL] = []
    language: Annotated[str | None, PERSONAL] = None


class ReferrerV1(BaseModel):
    name: Annotated[str, PERSONAL]
    organisation: Annotated[str | None, PERSONAL] = None
    relationship: Annotated[str | None, PERSONAL] = None
    phone: Annotated[str | None, PERSONAL] = None
    email: Annotated[str | None, PERSONAL] = None


FREQUENCIES = ("weekly", "fortnightly", "monthly")


class RecurrenceV1(BaseModel):
    """How a request repeats (a weekly shop, a repeat prescription): a series of occurrences, no personal data.

    Until `ends_on` (the last occurrence is due on or before it), for `occurrences`
    in all (the first included), or, with neither, until it is cancelled.
    """

    frequency: str
    """`weekly`, `fortnightly` or `monthly` (the same day of the month, or the month's last day)."""
    ends_on: date | None = None
    occurrences: int | None = None


class RequestV1(BaseModel):
    request_id: uuid.UUID
    type: str
    details: Annotated[str | None, PERSONAL] = None
    needed_by: date | None = None
    urgency: str
    duplicate_of: uuid.UUID | None = None
    recurrence: RecurrenceV1 | None = None
    """Set when the help repeats: fulfilment opens each occurrence in turn (the series' id is this request's id)."""


@contract
class ReferralReceivedV1(EventData):
    """A referral was taken: what fulfilment needs to route and deliver each request."""

    type: ClassVar[str] = TYPE_PREFIX + "referral.received.v1"
    topics: ClassVar[tuple[str, ...]] = ("referrals",)

    referral_id: uuid.UUID
    reference: str
    channel: str
    received_at: datetime
    resident: ResidentV1
    referrer: Annotated[ReferrerV1 | None, PERSONAL] = None
    consent_to_share: bool
    requests: list[RequestV1]
    backfilled: bool = False
    """Recorded after the fact with `received_at` in the past (a migration, a demo): routing happened then too."""
    resident_id: uuid.UUID | None = None
    """The resident it is about (an id, not a person): `residents.merged.v1` may later fold it into another."""
    consent_to_notify: bool = False
    """The resident agreed to be sent their reference, and word when help is arranged, by text or email."""

    def subject(self) -> str:
        return str(self.referral_id)


@contract
class ReferralAmendedV1(EventData):
    """The resident's details changed; `address_changed` means open requests need re-routing."""

    type: ClassVar[str] = TYPE_PREFIX + "referral.amended.v1"
    topics: ClassVar[tuple[str, ...]] = ("referrals",)

    referral_id: uuid.UUID
    reference: str
    amended_at: datetime
    changed: list[str]
    address_changed: bool
    resident: ResidentV1
    consent_to_share: bool

    def subject(self) -> str:
        return str(self.referral_id)


CANCEL_REASONS = ("no-longer-needed", "resident-request", "duplicate", "entered-in-error", "other")


@contract
class RequestCancelledV1(EventData):
    """A request was cancelled (alone, or with its whole referral). No personal data."""

    type: ClassVar[str] = TYPE_PREFIX + "request.cancelled.v1"
    topics: ClassVar[tuple[str, ...]] = ("referrals", "request_stats")

    referral_id: uuid.UUID
    request_id: uuid.UUID
    request_type: str
    reason: str
    cancelled_at: datetime

    def subject(self) -> str:
        return str(self.referral_id)


@contract
class RequestReceivedV1(EventData):
    """One request received, for reporting: no names, contacts or full postcodes."""

    type: ClassVar[str] = TYPE_PREFIX + "request.received.v1"
    topics: ClassVar[tuple[str, ...]] = ("request_stats",)

    referral_id: uuid.UUID
    request_id: uuid.UUID
    request_type: str
    channel: str
    postcode_district: str
    """The outward code only ("CT9"), never the full postcode."""
    urgency: str
    received_at: datetime
    possible_duplicate: bool = False
    resident_id: uuid.UUID | None = None
    """The resident (an id only): counts of people helped; `residents.merged.v1` folds two into one."""

    def subject(self) -> str:
        return str(self.referral_id)


@contract
class ResidentErasedV1(EventData):
    """A resident's personal data was erased on request (or at the end of retention): erase your copy.

    No personal data: the referral id names the resident, and ids, request types and
    statuses stay everywhere so counts do not change.
    """

    type: ClassVar[str] = TYPE_PREFIX + "resident.erased.v1"
    topics: ClassVar[tuple[str, ...]] = ("referrals",)

    referral_id: uuid.UUID
    erased_at: datetime
    reason: str
    """`request` (the resident asked) or `retention` (closed longer than the retention period)."""

    def subject(self) -> str:
        return str(self.referral_id)


@contract
class ResidentsMergedV1(EventData):
    """Two residents recorded twice are one: `merged_resident_id`'s referrals are now `resident_id`'s.

    No personal data: ids only. Each referral keeps its id, requests and history; a
    consumer that keeps a resident's view (a case list, a count of people helped) folds
    the merged resident into the other. Erasing the resident afterwards erases every
    referral listed here (one `resident.erased.v1` per referral, as always).
    """

    type: ClassVar[str] = TYPE_PREFIX + "residents.merged.v1"
    topics: ClassVar[tuple[str, ...]] = ("referrals", "request_stats")

    resident_id: uuid.UUID
    """The resident kept."""
    merged_resident_id: uuid.UUID
    """The resident merged into it: no referral names it any more."""
    referral_ids: list[uuid.UUID]
    """The referrals moved to `resident_id`."""
    merged_at: datetime

    def subject(self) -> str:
        return str(self.resident_id)
