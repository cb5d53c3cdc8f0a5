"""Who may call what: written by hand, route by route, from the design's "Security" section.

Independent of the scopes the code declares, so the role walk can catch a route
opened by mistake. A new route fails the walk until it is written down here.
"""

from __future__ import annotations

PUBLIC = {
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "GET /v1/public/plans/{plan}/progress",
}  # the plan's figures, for anyone: no personal data

REFERRAL_WRITERS = {"call-centre", "online-form", "partner", "admin"}
ADVISERS = {"call-centre", "admin"}
HUB_STAFF = {"hub", "admin"}
ACTION_READERS = {"recovery-lead", "analyst", "admin"}
ACTION_WRITERS = {"recovery-lead", "admin"}
ADMIN = {"admin"}
STATUS_READERS = {"call-centre", "online-form", "partner", "hub", "admin"}

# Who may call each route: written by hand, from the design's "Security" section.
CALLERS: dict[str, dict[str, set[str]]] = {
    "referrals": {
        "POST /v1/referrals": REFERRAL_WRITERS,
        "GET /v1/referrals": ADVISERS,
        "GET /v1/referrals/{referral_id}": ADVISERS,
        "POST /v1/referrals/duplicate-check": ADVISERS,
        "PATCH /v1/referrals/{referral_id}": ADVISERS,
        "POST /v1/referrals/{referral_id}/cancel": ADVISERS,
        "POST /v1/referrals/{referral_id}/requests/{request_id}/cancel": ADVISERS,
        "GET /v1/request-types": REFERRAL_WRITERS,
        "POST /v1/request-types": ADMIN,
        "PATCH /v1/request-types/{type_id}": ADMIN,
        "GET /v1/audit": ADMIN,
        "POST /v1/referrals/{referral_id}/erasure": ADMIN,
        "POST /v1/retention/anonymise": ADMIN,
        "GET /v1/retention/review": ADMIN,
        "GET /v1/residents/{resident}": ADVISERS,
        "GET /v1/notifications": ADMIN,
        "POST /v1/residents/{resident}/merge": ADMIN,
        "POST /v1/residents/{resident}/erasure": ADMIN,
        "GET /v1/referrals/imports/template": ADMIN,
        "POST /v1/referrals/imports": ADMIN,
    },
    "fulfilment": {
        "GET /v1/hubs": HUB_STAFF,
        "GET /v1/hubs/{hub}": HUB_STAFF,
        "PATCH /v1/hubs/{hub}": ADMIN,
        "GET /v1/hubs/{hub}/assignments": HUB_STAFF,
        "GET /v1/hubs/{hub}/rejected": HUB_STAFF,
        "GET /v1/hubs/{hub}/feed": HUB_STAFF,
        "GET /v1/hubs/{hub}/webhook-deliveries": HUB_STAFF,
        "GET /v1/notifications": ADMIN,
        "GET /v1/hubs/{hub}/queue": HUB_STAFF,
        "GET /v1/hubs/{hub}/colleagues": HUB_STAFF,
        "GET /v1/hubs/{hub}/staff": HUB_STAFF,
        "GET /v1/assignments/{assignment_id}/holder": HUB_STAFF,
        "POST /v1/assignments/{assignment_id}/take": HUB_STAFF,
        "POST /v1/assignments/{assignment_id}/hand-over": HUB_STAFF,
        "POST /v1/assignments/{assignment_id}/release": HUB_STAFF,
        "PUT /v1/assignments/{assignment_id}/next-contact": HUB_STAFF,
        "GET /v1/assignments/{assignment_id}": HUB_STAFF,
        "PATCH /v1/assignments/{assignment_id}": HUB_STAFF,
        "POST /v1/assignments/{assignment_id}/transitions": HUB_STAFF,
        "POST /v1/assignments/{assignment_id}/notes": HUB_STAFF,
        "POST /v1/assignments/{assignment_id}/contact-attempts": HUB_STAFF,
        "GET /v1/queues/out-of-area": ADMIN,
        "GET /v1/queues/triage": ADMIN,
        "GET /v1/areas/{postcode}": STATUS_READERS,
        "GET /v1/request-status": STATUS_READERS,
        "GET /v1/audit": ADMIN,
    },
    "actions": {
        "POST /v1/plans/{plan}/import": ACTION_WRITERS,
        "GET /v1/plans": ACTION_READERS,
        "GET /v1/plans/{plan}": ACTION_READERS,
        "PATCH /v1/plans/{plan}": ACTION_WRITERS,
        "GET /v1/plans/{plan}/snapshot": ACTION_READERS,
        "GET /v1/actions": ACTION_READERS,
        "GET /v1/actions/export.csv": ACTION_READERS,
        "GET /v1/actions/export.xlsx": ACTION_READERS,
        "POST /v1/actions/import": ACTION_WRITERS,
        "GET /v1/actions/{action_id}": ACTION_READERS,
        "PATCH /v1/actions/{action_id}": ACTION_WRITERS,
        "POST /v1/actions/{action_id}/updates": ACTION_WRITERS,
        "POST /v1/actions/{action_id}/links": ACTION_WRITERS,
        "DELETE /v1/actions/{action_id}/links/{link_id}": ACTION_WRITERS,
    },
}
# A service with no table of its own yet (reporting, when it lands): figures are for
# analysts and administrators, read only. Anything wider must be written down above.
DEFAULT_CALLERS = {"reporting": {"analyst", "admin"}}

OWN_HUB = "thanet"


def callers(service: str, operation: str) -> set[str]:
    table = CALLERS.get(service)
    if table is not None:
        assert operation in table, f"{service}: {operation} has no hand-written expectation of who may call it"
        return table[operation]
    return DEFAULT_CALLERS.get(service, ADMIN)
