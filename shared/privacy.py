"""Erasing a resident's personal data from what a service holds, keeping what counts need.

What is personal is read from where it is declared: the contracts' fields marked
PERSONAL (shared/events) give the keys of events and of the records made from them,
and the services' sealed columns (shared/sealing.py) what their tables hold. A value
under a personal key is replaced, whatever its shape. Ids,
references, request types, statuses, times and the postcode's outward code
("CT9", the district level reporting already uses) stay, so figures do not move.
See docs/privacy.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from shared.crypto import is_sealed
from shared.events import REGISTRY, personal_fields, personal_keys, personal_topics
from shared.postcode import outward_code  # noqa: F401  (the one rule, shared/postcode.py; named here too)

if TYPE_CHECKING:
    from shared.crypto import Keyring
    from shared.sealing import Sealing


ERASED = "[erased]"

# Replaced by an empty value of their kind.
DROPPED_KEYS: dict[str, Any] = {"date_of_birth": None, "vulnerabilities": [], "referrer": None}
KEPT_AS_DISTRICT = "postcode"
"""Replaced by its outward code."""
# Free text or contact details: replaced by ERASED (strings) wherever they appear.
PERSONAL_KEYS = personal_keys() - set(DROPPED_KEYS) - {KEPT_AS_DISTRICT}


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
    out: dict[str, Any] = {}
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


def redact_stored_event(payload: bytes, keyring: Keyring) -> bytes:
    """`redact_event` for an event as a table keeps it (outbox, hub feed): a sealed one is opened, redacted, sealed again.

    Returns `payload` itself when nothing personal was in it, so callers can skip the write.
    """
    if not is_sealed(payload):
        return redact_event(payload)
    opened = keyring.open(payload)
    redacted = redact_event(opened)
    return payload if redacted == opened else keyring.seal(redacted)


def inventory(sealings: dict[str, Sealing] | None = None) -> str:
    """What is personal, as docs/privacy.md lists it: events, topics, and the sealed columns of `sealings`.

    `sealings`: {service: shared.sealing.Sealing}. Made from the declarations, so the document cannot drift.
    """
    from shared.settings import Topics

    topics = Topics()
    lines = ["| Event | Personal fields |", "|---|---|"]
    for contract in sorted(REGISTRY.values(), key=lambda c: c.type):
        if contract.personal_data:
            lines.append(f"| `{contract.type}` | {', '.join(f'`{p}`' for p in personal_fields(contract))} |")
    lines += [
        "",
        "Topics carrying personal data (sealed in the outbox, read only by their consumers): "
        + ", ".join(f"`{getattr(topics, t)}`" for t in sorted(personal_topics()))
        + ".",
    ]
    if sealings:
        lines += ["", "| Service | Table | Sealed column | Fields | Blind indexes |", "|---|---|---|---|---|"]
        for service, sealing in sealings.items():
            for table in sealing:
                for column, fields in ([(table.blob.column, table.blob.fields)] if table.blob else []) + [
                    (t.column, (t.field,)) for t in table.texts
                ]:
                    indexes = ", ".join(f"`{i.column}`" for i in table.indexes) if table.blob else ""
                    lines.append(
                        f"| {service} | `{table.name}` | `{column}` | "
                        f"{', '.join(f'`{f}`' for f in fields)} | {indexes} |"
                    )
    return "\n".join(lines) + "\n"
