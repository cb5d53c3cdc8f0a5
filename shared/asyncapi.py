"""The AsyncAPI 3.0 document of every topic and message, made from the contracts themselves."""

from __future__ import annotations

import json
from typing import Any

from shared.events import REGISTRY, STRUCTURED, CloudEvent
from shared.settings import Topics

DESCRIPTIONS = {
    "referrals": "Referrals with the resident's personal data. Read by fulfilment only.",
    "request_stats": "One event per request received or cancelled; no personal data. Read by reporting.",
    "assignment_status": "Every assignment transition and escalation; no personal data. Read by reporting, and by "
    "referrals (where each request is, when it closed).",
    "actions": "Recovery-plan actions created and tracked; no personal data. Read by reporting.",
    "hubs": "One topic per district hub, with the resident's details: read by that hub's systems only.",
}

CONSUMERS = {
    "fulfilment": ("referrals",),
    "referrals": ("assignment_status",),
    "reporting": ("request_stats", "assignment_status", "actions"),
}
"""Each consumer group of the platform and the `Topics` fields it reads (the services' defaults)."""

KAFKA_BINDING = "0.5.0"

HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "Kafka record headers (values are UTF-8 bytes). The CloudEvent itself is the value: "
    "structured content mode (CloudEvents Kafka protocol binding, section 3.1).",
    "required": ["content-type"],
    "properties": {
        "content-type": {
            "type": "string",
            "const": STRUCTURED,
            "description": "Structured mode: read the whole event from the value.",
        },
        "traceparent": {
            "type": "string",
            "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "W3C Trace Context of the work that published the event; "
            "the same value as the event's `traceparent` attribute.",
        },
        "tracestate": {"type": "string", "description": "W3C Trace Context vendor state, when the caller sent one."},
    },
}

DEAD_LETTER_HEADERS = {
    "type": "object",
    "description": "The original record's headers, and why it was parked.",
    "required": ["dlq-reason", "dlq-topic", "dlq-partition", "dlq-offset", "dlq-consumer"],
    "properties": {
        **HEADERS["properties"],
        "dlq-reason": {"type": "string", "description": "Why the consumer could not handle it (at most 2,000 bytes)."},
        "dlq-topic": {"type": "string", "description": "The topic it was read from."},
        "dlq-partition": {"type": "string", "description": "Its partition there, in decimal."},
        "dlq-offset": {"type": "string", "description": "Its offset there, in decimal."},
        "dlq-consumer": {"type": "string", "description": "The consumer group that parked it."},
        "dlq-value-omitted-bytes": {
            "type": "string",
            "description": "Set when the value was too big to copy: its size; read it from dlq-topic at dlq-offset.",
        },
    },
}

KEY = {
    "type": "string",
    "description": "The aggregate id (the referral id for referral and assignment events, the action id for "
    "action events), so one aggregate's events stay in order on one partition.",
}


def servers() -> dict[str, Any]:
    return {
        "production": {
            "host": "kt-kafka-kafka-bootstrap:9093",
            "protocol": "kafka-secure",
            "description": "The Strimzi cluster: TLS with the cluster CA, SASL SCRAM-SHA-512 per client user "
            "(KAFKA_* settings, docs/security.md).",
            "security": [{"$ref": "#/components/securitySchemes/scram"}],
        },
        "development": {
            "host": "127.0.0.1:9092",
            "protocol": "kafka",
            "description": "`make run`'s embedded broker: PLAINTEXT, no authentication, forgets everything on stop.",
        },
    }


def document() -> dict[str, Any]:
    topics = Topics()
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for type_name, contract in sorted(REGISTRY.items()):
        name = contract.__name__
        messages[name] = {
            "name": type_name,
            "title": name,
            "summary": (contract.__doc__ or "").strip().splitlines()[0],
            "contentType": STRUCTURED,
            "headers": HEADERS,
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": type_name},
                            "data": contract.model_json_schema(ref_template="#/components/schemas/{model}"),
                        },
                    },
                ]
            },
            "bindings": {"kafka": {"key": KEY, "bindingVersion": KAFKA_BINDING}},
            "x-personal-data": contract.personal_data,
        }
        for field in contract.topics:
            address = getattr(topics, field)
            channel = channels.setdefault(
                field,
                {
                    "address": address,
                    "description": DESCRIPTIONS.get(field, ""),
                    "messages": {},
                },
            )
            if "{hub}" in address:  # a per-hub topic: AsyncAPI wants the address parameter declared
                channel["parameters"] = {"hub": {"description": "The hub's slug: thanet, maidstone…"}}
            channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    for field, channel in channels.items():
        operations[f"publish_{field}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{field}"},
            "messages": [{"$ref": f"#/channels/{field}/messages/{m}"} for m in channel["messages"]],
        }
    messages["DeadLetter"] = {
        "name": "dead-letter",
        "title": "DeadLetter",
        "summary": "A record a consumer could not handle, copied as it was read, with the reason in its headers.",
        "headers": DEAD_LETTER_HEADERS,
        "payload": {
            "description": "The original value, byte for byte (a CloudEvent, or whatever arrived); "
            "empty when dlq-value-omitted-bytes is set."
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original record's key."},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }
    for group, fields in CONSUMERS.items():
        for field in fields:
            operations[f"{group}_receive_{field}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{field}"},
                "summary": f"The {group} service reads every event on this topic, at least once; "
                "it records each event id it handled, so a redelivery changes nothing.",
                "messages": [{"$ref": f"#/channels/{field}/messages/{m}"} for m in channels[field]["messages"]],
                "bindings": {"kafka": {"groupId": {"type": "string", "const": group}, "bindingVersion": KAFKA_BINDING}},
            }
        dead_letters = f"dead_letters_{group}"
        channels[dead_letters] = {
            "address": topics.dead_letter_prefix + group,
            "description": f"Records the {group} consumer could not handle after its retries; "
            "`kent-together replay-dead-letters` sends them back to their topic.",
            "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        }
        operations[f"{group}_park"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{dead_letters}"},
            "messages": [{"$ref": f"#/channels/{dead_letters}/messages/DeadLetter"}],
        }
    schemas = {"CloudEvent": CloudEvent.model_json_schema()}
    for message in messages.values():
        if "allOf" not in message["payload"]:
            continue
        data = message["payload"]["allOf"][1]["properties"]["data"]
        schemas.update(data.pop("$defs", {}))
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Kent Together events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 in structured JSON mode on Kafka (`content-type: "
            f"{STRUCTURED}`). A contract only gains optional fields; a breaking change is a new "
            "type (…v2). Dead letters go to "
            f"`{topics.dead_letter_prefix}<consumer group>` with the reason in the `dlq-reason` header.",
        },
        "defaultContentType": STRUCTURED,
        "servers": servers(),
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {
                "scram": {
                    "type": "scramSha512",
                    "description": "One Kafka user per service, credentials from the cluster's secrets.",
                },
            },
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=False, default=str) + "\n"
