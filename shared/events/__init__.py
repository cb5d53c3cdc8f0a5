"""The CloudEvents 1.0 envelope, the contract registry, and (in submodules) the contracts.

A contract only ever gains optional fields; a breaking change is a new type
(`...v2`). What is personal is said once, on the fields: `Annotated[str, PERSONAL]`.
From that, a contract knows whether it carries personal data (`personal_data`),
`Topics.personal` which topics do (those a personal contract declares), and
shared/privacy.py which keys erasure replaces. docs/privacy.md lists them
(`privacy.inventory()`, checked by tests/unit/shared/test_privacy_inventory.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar, Literal, get_args, get_origin

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
    data: dict[str, Any]

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_bytes(cls, raw: bytes) -> CloudEvent:
        return cls.model_validate_json(raw)


class _Personal:
    """The mark of a field holding a resident's (or referrer's) personal data."""

    def __repr__(self) -> str:
        return "PERSONAL"


PERSONAL = _Personal()
"""`name: Annotated[str, PERSONAL]`: this field is personal (a whole object, if it is one)."""


def personal_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The dotted paths of a model's personal fields, nested models included ('resident.address.line1').

    A personal object ('referrer') is listed, and so are its own personal fields."""
    found = []
    for name, info in model.model_fields.items():
        path = prefix + name
        if PERSONAL in info.metadata:
            found.append(path)
        for inner in _models_in(info.annotation):
            found += personal_fields(inner, path + ".")
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)] if get_origin(annotation) else []


class EventData(BaseModel):
    """The `data` of one event type. Subclasses set `type`; `key` orders them on Kafka."""

    model_config = ConfigDict(extra="ignore")

    type: ClassVar[str]
    personal_data: ClassVar[bool] = False
    """Whether any field is marked PERSONAL: set by `contract`, never by hand."""
    topics: ClassVar[tuple[str, ...]] = ()
    """The `Topics` fields this event is published on: where `uow.publish` sends it, and the AsyncAPI document."""

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
    """Register a contract so consumers can parse `data` by `type` (and the uow route it by its `topics`)."""
    cls.personal_data = bool(personal_fields(cls))
    REGISTRY[cls.type] = cls
    return cls


def personal_topics() -> frozenset[str]:
    """The `Topics` fields that carry personal data: those a contract with a personal field is published on."""
    return frozenset(topic for c in REGISTRY.values() if c.personal_data for topic in c.topics)


def personal_keys() -> frozenset[str]:
    """The last names of every personal field of every contract ('line1', 'phone', 'referrer', …)."""
    return frozenset(path.rsplit(".", 1)[-1] for c in REGISTRY.values() for path in personal_fields(c))


def parse_data(event: CloudEvent) -> EventData:
    """The typed payload of an event; KeyError for a type nobody registered."""
    return REGISTRY[event.type].model_validate(event.data)


# The contracts, one module per producing service; importing them registers them.
from shared.events.actions import *  # noqa: E402,F401,F403
from shared.events.fulfilment import *  # noqa: E402,F401,F403
from shared.events.referrals import *  # noqa: E402,F401,F403
