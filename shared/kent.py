"""Kent's 12 districts: each one's public slug, name and ONS (GSS) code. The one table every service reads.

Fulfilment makes a hub of each (`services/fulfilment/hubs.py`); reporting names a
request's district by its code (`services/reporting/domain.py`). Codes and names are
checked against the ONS April 2021 authorities lookup and the November 2025 postcode
directory (tests/unit/fulfilment/test_routing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

KENT_COUNTY_COUNCIL_CODE = "E10000016"


@dataclass(frozen=True, slots=True)
class District:
    """A Kent district council: `slug` is the public id of its hub and of its figures."""

    slug: str
    name: str
    code: str


KENT_DISTRICTS: tuple[District, ...] = (
    District("ashford", "Ashford", "E07000105"),
    District("canterbury", "Canterbury", "E07000106"),
    District("dartford", "Dartford", "E07000107"),
    District("dover", "Dover", "E07000108"),
    District("gravesham", "Gravesham", "E07000109"),
    District("maidstone", "Maidstone", "E07000110"),
    District("sevenoaks", "Sevenoaks", "E07000111"),
    # Shepway until 1 April 2018; ONS kept the code, so older data routes here too.
    District("folkestone-hythe", "Folkestone and Hythe", "E07000112"),
    District("swale", "Swale", "E07000113"),
    District("thanet", "Thanet", "E07000114"),
    District("tonbridge-malling", "Tonbridge and Malling", "E07000115"),
    District("tunbridge-wells", "Tunbridge Wells", "E07000116"),
)
