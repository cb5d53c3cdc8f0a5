"""The reference a resident quotes ('KT-7F3K-9QX2'): read the same way by every service that is asked for one."""

from __future__ import annotations

import re


def normalise_reference(value: str) -> str:
    """Whatever an adviser or resident types ('kt7f3k9qx2', 'KT-7F3K-9QX2') to the stored form."""
    compact = re.sub(r"[^0-9A-Za-z]", "", value).upper()
    compact = compact.removeprefix("KT")
    compact = compact.translate(str.maketrans({"O": "0", "I": "1", "L": "1"}))  # type: ignore[arg-type]  # typeshed wants an invariant dict[str, str | int | None]; a dict[str, str] works
    if len(compact) != 8:
        return value.strip().upper()
    return f"KT-{compact[:4]}-{compact[4:]}"
