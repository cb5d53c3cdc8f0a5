"""What every request body of every service shares: strictness, clean text, and what `null` means in a PATCH."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

# Refused in any text: C0 controls but tab, newline and carriage return (NUL truncates text in C
# and PostgreSQL refuses it), DEL, and the bidirectional overrides and isolates that make text
# display in another order than it is stored ("Trojan Source": a name that reads as another).
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def unsafe_character(text: str) -> str | None:
    """The first character text must not hold, as `U+0000`; None if it is clean."""
    found = _UNSAFE.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def _check_text(value: Any) -> Any:
    if isinstance(value, str):
        bad = unsafe_character(value)
        if bad is not None:
            raise ValueError(
                f"contains the control character {bad}: remove it (text is refused, not cleaned, "
                "so what is stored is what was sent)"
            )
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_text(item)
    return value


class Strict(BaseModel):
    """Unknown fields are errors, text is trimmed and holds no control or direction-override character."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _clean_text(cls, value: Any) -> Any:
        return _check_text(value)


def _null_only_where_nullable(schema: dict[str, Any], model: type[Patch]) -> None:
    """The OpenAPI of a PATCH body: `null` allowed for the fields in `nullable`, and no others."""
    for name, prop in schema.get("properties", {}).items():
        if name in model.nullable:
            continue
        options = prop.get("anyOf")
        if options:
            kept = [option for option in options if option.get("type") != "null"]
            prop.pop("anyOf")
            prop.pop("default", None)
            if len(kept) == 1:
                prop.update(kept[0])
            else:
                prop["anyOf"] = kept


class Patch(Strict):
    """A PATCH body: a field left out keeps its value; `null` only where it means "clear it" (`nullable`).

    Every field is optional, typed `X | None = None`; `nullable` names those whose
    `null` clears the value. An explicit `null` for any other field is a 422 naming
    it, and the OpenAPI document says the same, so a client never reaches the
    database with a NOT NULL it cannot keep.
    """

    nullable: ClassVar[frozenset[str]] = frozenset()
    model_config = ConfigDict(json_schema_extra=_null_only_where_nullable)

    @field_validator("*", mode="after")
    @classmethod
    def _null_means_clear(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.nullable:
            raise ValueError("may be left out (to keep it) but not null")
        return value
