"""UK postcodes: validation and the one canonical form every service stores ("CT9 1AB")."""

from __future__ import annotations

import re
from typing import overload

# The GOV.UK / ONS shape: outward code (area, district, optional letter), inward code.
_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")


def normalise_postcode(value: str) -> str:
    """'ct91ab', ' CT9  1AB ' -> 'CT9 1AB'; ValueError if it is not a UK postcode."""
    compact = re.sub(r"\s+", "", value or "").upper()
    match = _POSTCODE.match(compact)
    if not match:
        raise ValueError("not a valid UK postcode (for example CT9 1AB)")
    return f"{match.group(1)} {match.group(2)}"


_OUTWARD = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")


@overload
def outward_code(postcode: str) -> str: ...
@overload
def outward_code(postcode: None) -> None: ...
@overload
def outward_code(postcode: str | None) -> str | None: ...
def outward_code(postcode: str | None) -> str | None:
    """The postcode district ('CT9 2RN' -> 'CT9'): coarse enough to carry where personal data may not.

    The one rule for every row, event and erasure: an outward code alone (an erased
    resident's) is kept as it is, None or '' as given, and anything else that is not a
    postcode loses its last three characters, so a full postcode is never kept whole.
    """
    if not postcode:
        return postcode
    compact = re.sub(r"\s+", "", postcode).upper()
    match = _POSTCODE.match(compact)
    if match:
        return match.group(1)
    if _OUTWARD.match(compact):
        return compact
    return compact[:-3] if len(compact) > 3 else compact


# Checked against the November 2025 directory: ME 23,138, TN 20,513, CT 20,409, DA 7,073, BR 706 —
# 71,839 in all; BR is Swanley and the Sevenoaks villages, plus 4 in Dartford. RH, SE and CR hold none.
KENT_AND_MEDWAY_AREAS = frozenset({"BR", "CT", "DA", "ME", "TN"})
"""The postcode areas holding every postcode of a Kent or Medway district (with some of their neighbours'):
a postcode outside them is certainly out of area; inside, fulfilment's directory says which council."""


def in_kent_and_medway_areas(postcode: str) -> bool:
    """Whether a (normalised) postcode's area is one of Kent and Medway's ('CT9 2RN' yes, 'SW1A 1AA' no)."""
    area = re.match(r"^[A-Z]{1,2}", postcode)
    assert area is not None  # a normalised postcode starts with its area's letters
    return area.group(0) in KENT_AND_MEDWAY_AREAS
