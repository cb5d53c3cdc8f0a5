"""Every service of the suite, as each one's `app.py` declares it (`SPEC`), in start order."""

from __future__ import annotations

from services.actions.app import SPEC as ACTIONS
from services.fulfilment.app import SPEC as FULFILMENT
from services.fulfilment.hubs import KENT_HUBS
from services.referrals.app import SPEC as REFERRALS
from services.reporting.app import SPEC as REPORTING
from services.web.app import SPEC as WEB
from shared.spec import ServiceSpec

__all__ = [
    "ACTIONS",
    "FULFILMENT",
    "HUB_SLUGS",
    "REFERRALS",
    "REPORTING",
    "RUNNABLE",
    "SERVICES",
    "WEB",
    "names",
    "personal",
    "publishing",
    "spec",
]

SERVICES: tuple[ServiceSpec, ...] = (REFERRALS, FULFILMENT, ACTIONS, REPORTING)
"""The four services with a public API and a database of business data."""
RUNNABLE: tuple[ServiceSpec, ...] = (*SERVICES, WEB)
"""What `run` starts and `migrate` migrates: the services, then the web front (pages over their APIs)."""
HUB_SLUGS: tuple[str, ...] = tuple(hub.slug for hub in KENT_HUBS)
"""The district hubs fulfilment routes to: each has a topic, a token and a place in the demo."""


def spec(name: str) -> ServiceSpec:
    for found in RUNNABLE:
        if found.name == name:
            return found
    raise LookupError(f"there is no service {name!r}; one of {', '.join(names())}")


def names(specs: tuple[ServiceSpec, ...] = RUNNABLE) -> list[str]:
    return [found.name for found in specs]


def personal() -> tuple[ServiceSpec, ...]:
    """The services that hold residents' personal data, sealed at rest (the web front's sessions too)."""
    return tuple(found for found in RUNNABLE if found.personal)


def publishing() -> tuple[ServiceSpec, ...]:
    """The services whose records `republish` can send again as events."""
    return tuple(found for found in SERVICES if found.publish_state_page is not None)
