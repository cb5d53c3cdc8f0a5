"""The 12 Kent district hubs, and routing a request to one of them from its postcode."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from services.fulfilment.postcodes import Council, PostcodeDirectory, PostcodeResult
from shared.kent import KENT_COUNTY_COUNCIL_CODE, KENT_DISTRICTS

KENT_COUNTY_COUNCIL = Council(KENT_COUNTY_COUNCIL_CODE, "Kent")


@dataclass(frozen=True, slots=True)
class Hub:
    """A district council's community hub; the slug is the public id."""

    slug: str
    name: str
    district_code: str
    upper_tier_code: str = KENT_COUNTY_COUNCIL.code


KENT_HUBS: tuple[Hub, ...] = tuple(Hub(d.slug, d.name, d.code) for d in KENT_DISTRICTS)
"""A hub for each of Kent's districts (shared/kent.py, the one table of them)."""


class RoutingOutcome(StrEnum):
    HUB = "hub"
    OUT_OF_AREA = "out_of_area"
    TRIAGE = "triage"


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Where a request goes, and why: a hub, the out-of-area queue or triage."""

    outcome: RoutingOutcome
    reason: str
    postcode: str | None = None
    hub: Hub | None = None
    council: Council | None = None
    """Out of area: the council responsible (county or unitary) to name to the resident."""
    district: Council | None = None


def route(result: PostcodeResult, hubs: Iterable[Hub]) -> RoutingDecision:
    """A hub for a Kent postcode, the council responsible for any other, triage if unsure."""
    if not result.found:
        return RoutingDecision(RoutingOutcome.TRIAGE, reason=result.reason or "", postcode=result.postcode)

    district, upper_tier = result.district, result.upper_tier
    hub = next((hub for hub in hubs if hub.district_code == district.code), None)
    if hub is not None:
        return RoutingDecision(
            RoutingOutcome.HUB,
            reason=f"in {district.name} ({district.code})",
            postcode=result.postcode,
            hub=hub,
            district=district,
        )
    if upper_tier.code == KENT_COUNTY_COUNCIL.code:
        # A Kent district with no hub means the reference data or the hub list changed
        # (a new district code): a person decides rather than sending it out of Kent.
        return RoutingDecision(
            RoutingOutcome.TRIAGE,
            reason=f"Kent district {district.name} ({district.code}) has no hub",
            postcode=result.postcode,
            district=district,
        )
    # Support for residents is the county's or unitary's duty, so the queue names the
    # upper tier (East Sussex, not Wealden) and keeps the district for the detail.
    return RoutingDecision(
        RoutingOutcome.OUT_OF_AREA,
        reason=f"outside Kent: {upper_tier.name} ({upper_tier.code}) is responsible",
        postcode=result.postcode,
        council=upper_tier,
        district=district,
    )


def hub_reference_data_problems(hubs: Iterable[Hub], directory: PostcodeDirectory) -> list[str]:
    """Hubs whose district code, name or county no longer matches the ONS data; [] if none.

    Run at start-up: a district code that ONS changes (as Barnsley's and Sheffield's
    did in 2024) would otherwise silently send a district's residents to triage.
    """
    problems = []
    for hub in hubs:
        district = directory.district(hub.district_code)
        if district is None:
            problems.append(f"{hub.slug}: district code {hub.district_code} is not in the authorities data")
            continue
        if district.name != hub.name:
            problems.append(f"{hub.slug}: {hub.district_code} is named {district.name!r}, not {hub.name!r}")
        upper_tier = directory.upper_tier(hub.district_code)
        if upper_tier is None or upper_tier.code != hub.upper_tier_code:
            problems.append(f"{hub.slug}: {hub.district_code} is not under {hub.upper_tier_code}")
    return problems
