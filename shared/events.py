"""The CloudEvents 1.0 envelope and the versioned event contracts.

A contract only ever gains optional fields; a breaking change is a new type
(`...v2`). Events on `Topics.referrals` carry personal data; every other topic
carries ids, types, districts and times only.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.db import utcnow

TYPE_PREFIX = "uk.gov.kent.together."


class CloudEvent(BaseModel):
    """CloudEvents 1.0, structured JSON mode, as the Kafka message value."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    source: str
    type: str
    time: datetime = Field(default_factory=utcnow)
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_bytes(cls, raw: bytes) -> "CloudEvent":
        return cls.model_validate_json(raw)


class EventData(BaseModel):
    """The `data` of one event type. Subclasses set `type`; `key` orders them on Kafka."""

    model_config = ConfigDict(extra="ignore")

    type: ClassVar[str]
    personal_data: ClassVar[bool] = False

    def subject(self) -> str:
        raise NotImplementedError

    def envelope(self, *, source: str, time: datetime | None = None) -> CloudEvent:
        return CloudEvent(
            source=source,
            type=self.type,
            subject=self.subject(),
            time=time or utcnow(),
            data=self.model_dump(mode="json"),
        )


REGISTRY: dict[str, type[EventData]] = {}


def contract(cls: type[EventData]) -> type[EventData]:
    """Register a contract so consumers can parse `data` by `type`."""
    REGISTRY[cls.type] = cls
    return cls


def parse_data(event: CloudEvent) -> EventData:
    """The typed payload of an event; KeyError for a type nobody registered."""
    return REGISTRY[event.type].model_validate(event.data)


# --- Referrals -----------------------------------------------------------------


class AddressV1(BaseModel):
    line1: str
    line2: str | None = None
    town: str | None = None
    postcode: str


class ResidentV1(BaseModel):
    name: str
    date_of_birth: date | None = None
    phone: str | None = None
    email: str | None = None
    address: AddressV1
    contact_preference: str | None = None
    vulnerabilities: list[str] = []
    language: str | None = None


class ReferrerV1(BaseModel):
    name: str
    organisation: str | None = None
    relationship: str | None = None
    phone: str | None = None
    email: str | None = None


class RequestV1(BaseModel):
    request_id: uuid.UUID
    type: str
    details: str | None = None
    needed_by: date | None = None
    urgency: str
    duplicate_of: uuid.UUID | None = None


@contract
class ReferralReceivedV1(EventData):
    """A referral was taken: what fulfilment needs to route and deliver each request."""

    type: ClassVar[str] = TYPE_PREFIX + "referral.received.v1"
    personal_data: ClassVar[bool] = True

    referral_id: uuid.UUID
    reference: str
    channel: str
    received_at: datetime
    resident: ResidentV1
    referrer: ReferrerV1 | None = None
    consent_to_share: bool
    requests: list[RequestV1]

    def subject(self) -> str:
        return str(self.referral_id)


@contract
class ReferralAmendedV1(EventData):
    """The resident's details changed; `address_changed` means open requests need re-routing."""

    type: ClassVar[str] = TYPE_PREFIX + "referral.amended.v1"
    personal_data: ClassVar[bool] = True

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

    referral_id: uuid.UUID
    request_id: uuid.UUID
    request_type: str
    channel: str
    postcode_district: str
    """The outward code only ("CT9"), never the full postcode."""
    urgency: str
    received_at: datetime
    possible_duplicate: bool = False

    def subject(self) -> str:
        return str(self.referral_id)
