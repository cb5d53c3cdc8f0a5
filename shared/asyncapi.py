"""The AsyncAPI 3.0 document of every topic and message, made from the contracts themselves."""

from __future__ import annotations

import json

from shared.events import REGISTRY, CloudEvent
from shared.settings import Topics

DESCRIPTIONS = {
    "referrals": "Referrals with the resident's personal data. Read by fulfilment only.",
    "request_stats": "One event per request received or cancelled; no personal data. Read by reporting.",
    "assignment_status": "Every assignment transition and escalation; no personal data. Read by reporting, and by "
                         "referrals (where each request is, when it closed).",
    "hubs": "One topic per district hub, with the resident's details: read by that hub's systems only.",
}


def document() -> dict:
    topics = Topics()
    channels: dict = {}
    messages: dict = {}
    operations: dict = {}
    for type_name, contract in sorted(REGISTRY.items()):
        name = contract.__name__
        messages[name] = {
            "name": type_name,
            "title": name,
            "summary": (contract.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/cloudevents+json",
            "headers": {"type": "object", "description": "none: structured-mode CloudEvents in the value"},
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {"type": "object", "properties": {"type": {"const": type_name},
                                                       "data": contract.model_json_schema(ref_template="#/components/schemas/{model}")}},
                ]
            },
            "x-personal-data": contract.personal_data,
            "x-key": "the aggregate id (the referral id for referral events), so one referral's events stay in order",
        }
        for field in contract.topics:
            address = getattr(topics, field)
            channel = channels.setdefault(field, {
                "address": address, "description": DESCRIPTIONS.get(field, ""), "messages": {},
            })
            if "{hub}" in address:  # a per-hub topic: AsyncAPI wants the address parameter declared
                channel["parameters"] = {"hub": {"description": "The hub's slug: thanet, maidstone…"}}
            channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    for field, channel in channels.items():
        operations[f"publish_{field}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{field}"},
            "messages": [{"$ref": f"#/channels/{field}/messages/{m}"} for m in channel["messages"]],
        }
    schemas = {"CloudEvent": CloudEvent.model_json_schema()}
    for message in messages.values():
        data = message["payload"]["allOf"][1]["properties"]["data"]
        schemas.update(data.pop("$defs", {}))
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Kent Together events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 in structured JSON mode on Kafka. A contract only gains optional "
                           "fields; a breaking change is a new type (…v2). Dead letters go to "
                           f"`{topics.dead_letter_prefix}<consumer group>` with the reason in the `dlq-reason` header.",
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=False, default=str) + "\n"
