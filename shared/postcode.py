"""UK postcodes: validation and the one canonical form every service stores ("CT9 1AB")."""

from __future__ import annotations

import re

# The GOV.UK / ONS shape: outward code (area, district, optional letter), inward code.
_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")


def normalise_postcode(value: str) -> str:
    """'ct91ab', ' CT9  1AB ' -> 'CT9 1AB'; ValueError if it is not a UK postcode."""
    compact = re.sub(r"\s+", "", value or "").upper()
    match = _POSTCODE.match(compact)
    if not match:
        raise ValueError("not a valid UK postcode (for example CT9 1AB)")
    return f"{match.group(1)} {match.group(2)}"


def outward_code(postcode: str) -> str:
    """The postcode district ('CT9'): coarse enough to carry where personal data may not."""
    return normalise_postcode(postcode).split(" ")[0]
