"""docs/events.md, the event catalogue, written from the contracts in shared/events (as docs/asyncapi.json is)."""

from __future__ import annotations

from typing import Any

from shared.asyncapi import CONSUMERS, DESCRIPTIONS
from shared.events import REGISTRY, TYPE_PREFIX, EventData
from shared.settings import Topics

INTRODUCTION = """\
# Event catalogue

<!-- Written by `kent-together docs` from the contracts in shared/events/ (suite/events_doc.py): edit those. -->

Every event is a [CloudEvents 1.0](https://cloudevents.io) envelope in
structured JSON mode, as the Kafka message value; the message key is the
aggregate id (the referral id, the action id), so one aggregate's events stay in
order on one partition. The machine-readable catalogue is
[`asyncapi.json`](asyncapi.json) (AsyncAPI 3.0), generated from the same
contracts; a test fails if either is out of date.

```json
{"specversion": "1.0", "id": "9df2bd89-…", "source": "/kent-together/referrals",
 "type": "uk.gov.kent.together.referral.received.v1", "time": "2026-11-22T21:35:45.671Z",
 "subject": "36f365b8-…", "datacontenttype": "application/json", "data": {…}}
```

Each message carries the Kafka header `content-type: application/cloudevents+json`
(the CloudEvents Kafka binding's structured mode, §3.1), so the CloudEvents SDKs
read it as it is: Java's `KafkaMessageFactory.createReader(record)`, .NET's
`ToCloudEvent(new JsonEventFormatter())`, Python's
`cloudevents.core.bindings.kafka.from_kafka(..., JSONFormat())` (tested in
`tests/integration/fulfilment/test_cloudevents.py`). It also carries
`traceparent` (and `tracestate` when there is one) as headers, the same values
as the event's `traceparent` attribute.

Rules: a contract only ever gains optional fields; a breaking change is a new
type (`….v2`); consumers ignore fields they do not know. All types are prefixed
`uk.gov.kent.together.`. Events marked personal are sealed in the outbox and
travel only on the topics their readers are allowed.

Where an event goes and whether it is personal are said by the contract itself:
its `topics` (the `Topics` fields it is published on) and its fields marked
`PERSONAL` (`Annotated[str, PERSONAL]`). `uow.publish(event)` sends it to its
declared topics, one envelope each (a per-hub topic is the one case a caller names,
`topic=topics.hub(slug)`); a topic carries personal data, and its outbox rows are
sealed, when a personal contract is declared on it (`Topics.personal`).
docs/privacy.md lists them, generated from the same declarations.

Recurring requests were added to the v1 contracts as optional fields, so no
type changed. `referral.received` may give a request a `recurrence`
(`frequency`: weekly, fortnightly or monthly; `ends_on` or `occurrences`).
Fulfilment makes each occurrence an assignment of its own, with its own
`assignment_id` and `request_id`: the first keeps the request's, a later one's
is derived from the series and its number. `assignment.status-changed` names
the series (`series_id`, the request's id as referrals took it), the
`occurrence` (1, 2, …) and the `frequency`. On a closing status it also says
whether another occurrence follows (`series_continues`). `assignment.routed`
tells the hub the same in `series`. Referrals keeps the request open while the
series continues. Reporting counts each occurrence as a request, and each
series once (`/v1/figures/series`).
"""


def _topics(contract: type[EventData], topics: Topics) -> str:
    return ", ".join(f"`{getattr(topics, field)}`" for field in contract.topics)


def _readers(contract: type[EventData]) -> str:
    readers = sorted({group for group, fields in CONSUMERS.items() if set(fields) & set(contract.topics)})
    if "hubs" in contract.topics:
        readers.append("each hub's systems")
    return ", ".join(readers) or "—"


def _producer(contract: type[EventData]) -> str:
    return contract.__module__.rsplit(".", 1)[-1]


def _summary(contract: type[EventData]) -> str:
    return (contract.__doc__ or "").strip().splitlines()[0]


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type_of(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_type_of(schema.get('items', {}))}"
    if "format" in schema:
        return f"{schema.get('type', '')} ({schema['format']})"
    return str(schema.get("type", "any"))


def _fields(contract: type[EventData]) -> list[str]:
    schema = contract.model_json_schema()
    required = set(schema.get("required", ()))
    rows = ["| field | type | |", "|---|---|---|"]
    for name, field in schema.get("properties", {}).items():
        rows.append(f"| `{name}` | {_type_of(field)} | {'required' if name in required else 'optional'} |")
    return rows


def render_catalogue() -> str:
    topics = Topics()
    contracts = sorted(REGISTRY.values(), key=lambda c: (_producer(c), c.type))
    lines = [
        INTRODUCTION,
        "## Every event",
        "",
        "| type | what happened | topic | personal data | producer → readers |",
        "|---|---|---|---|---|",
    ]
    for contract in contracts:
        lines.append(
            f"| [`{contract.type.removeprefix(TYPE_PREFIX)}`](#{contract.__name__.lower()}) | "
            f"{_summary(contract)} | {_topics(contract, topics)} | "
            f"{'yes' if contract.personal_data else 'no'} | {_producer(contract)} → {_readers(contract)} |"
        )
    lines.append(
        f"| `{topics.dead_letter_prefix}<group>` | A record a consumer could not handle after its retries, as "
        "it was read, with headers `dlq-reason`, `dlq-topic`, `dlq-partition`, `dlq-offset`, `dlq-consumer` | "
        f"`{topics.dead_letter_prefix}<group>` | as the original | any consumer → operators "
        "(`kent-together replay-dead-letters`) |"
    )
    lines += ["", "## Topics", "", "| topic | what it carries |", "|---|---|"]
    for field, description in DESCRIPTIONS.items():
        lines.append(f"| `{getattr(topics, field)}` | {description} |")
    for contract in contracts:
        lines += ["", f"### {contract.__name__}", "", f"`{contract.type}` — {_summary(contract)}", ""]
        lines += _fields(contract)
    return "\n".join(lines) + "\n"
