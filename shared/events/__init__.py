"""The CloudEvents 1.0 envelope, the contract registry, and (in submodules) the contracts.

A contract only ever gains optional fields; a breaking change is a new type
(`...v2`). Events on `Topics.referrals` carry personal data; every other topic
carries ids, types, districts and times only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.db import utcnow

TYPE_PREFIX = "uk.gov.kent.together."
STRUCTURED = "application/cloudevents+json"
"""The Kafka `content-type` header of every message: CloudEvents structured mode (kafka-protocol-binding §3.1).

Without it a receiver must read the message in binary mode (§3), and the SDKs' readers refuse it."""


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
    traceparent: str | None = None
    """CloudEvents distributed-tracing extension: the W3C trace the event was published in."""
    tracestate: str | None = None
    """The same extension: the trace's vendor state, when the caller sent one."""
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
    topics: ClassVar[tuple[str, ...]] = ()
    """The `Topics` fields this event is published on (for the AsyncAPI document)."""

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


# The contracts, one module per producing service; importing them registers them.
from shared.events.referrals import *  # noqa: E402,F401,F403
from shared.events.actions import *  # noqa: E402,F401,F403
from shared.events.fulfilment import *  # noqa: E402,F401,F403
