"""Erasing a resident's personal data from what a service holds, keeping what counts need.

What is personal is named once, here, by the keys the platform's records and
events use: a value under one of them is replaced, whatever its shape. Ids,
references, request types, statuses, times and the postcode's outward code
("CT9", the district level reporting already uses) stay, so figures do not move.
See docs/privacy.md.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared.crypto import is_sealed

ERASED = "[erased]"

# Free text or contact details: replaced by ERASED (strings) wherever they appear.
PERSONAL_KEYS = frozenset({
    "name", "phone", "email", "line1", "line2", "town", "details", "note", "text", "organisation",
    "relationship", "language", "contact_preference",
})
# Replaced by an empty value of their kind.
DROPPED_KEYS = {"date_of_birth": None, "vulnerabilities": [], "referrer": None}


def outward_code(postcode: str | None) -> str | None:
    """`CT9 2RN` -> `CT9`: the district part, shared by thousands of addresses."""
    if not postcode:
        return postcode
    compact = postcode.replace(" ", "").upper()
    return compact[:-3] if len(compact) > 3 else compact


def erase_value(value: Any) -> Any:
    """Every string inside `value` replaced by ERASED, keeping its shape."""
    if isinstance(value, str):
        return ERASED
    if isinstance(value, list):
        return [erase_value(v) for v in value]
    if isinstance(value, dict):
        return {k: erase_value(v) for k, v in value.items()}
    return value


def redact(value: Any) -> Any:
    """`value` (JSON-like) with every personal field erased, at any depth."""
    if isinstance(value, list):
        return [redact(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, inner in value.items():
        if key in DROPPED_KEYS and inner is not None:
            out[key] = DROPPED_KEYS[key]
        elif key == "postcode" and isinstance(inner, str):
            out[key] = outward_code(inner)
        elif key in PERSONAL_KEYS and inner is not None:
            out[key] = erase_value(inner)
        else:
            out[key] = redact(inner)
    return out


def redact_event(payload: bytes) -> bytes:
    """A stored CloudEvent (bytes) with the personal fields of its `data` erased; other bytes unchanged."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        return payload
    event["data"] = redact(event["data"])
    return orjson.dumps(event)


def redact_stored_event(payload: bytes, keyring) -> bytes:
    """`redact_event` for an event as a table keeps it (outbox, hub feed): a sealed one is opened, redacted, sealed again.

    Returns `payload` itself when nothing personal was in it, so callers can skip the write.
    """
    if not is_sealed(payload):
        return redact_event(payload)
    opened = keyring.open(payload)
    redacted = redact_event(opened)
    return payload if redacted == opened else keyring.seal(redacted)
