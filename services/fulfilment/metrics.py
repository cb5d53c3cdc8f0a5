"""Fulfilment's own Prometheus figures: assignments by status and hub, and SLA breaches."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from services.fulfilment.models import assignments, escalations
from shared.db import Database

NO_HUB = "none"
"""The label of assignments in a queue (out of area, triage) rather than at a hub."""


async def assignment_families(db: Database) -> list:
    """`kt_assignments{status,hub}` now, and `kt_sla_breaches_total{deadline,hub}` so far."""
    async with db.sessions() as session:
        by_status = (
            await session.execute(
                select(assignments.c.status, assignments.c.hub, func.count()).group_by(
                    assignments.c.status, assignments.c.hub
                )
            )
        ).all()
        breaches = (
            await session.execute(
                select(escalations.c.deadline, escalations.c.hub, func.count()).group_by(
                    escalations.c.deadline, escalations.c.hub
                )
            )
        ).all()
    current = GaugeMetricFamily("kt_assignments", "Assignments by status and hub", labels=["status", "hub"])
    for status, hub, count in by_status:
        current.add_metric([status, hub or NO_HUB], count)
    missed = CounterMetricFamily(
        "kt_sla_breaches", "Deadlines missed and escalated (accept, fulfil…) by hub", labels=["deadline", "hub"]
    )
    for deadline, hub, count in breaches:
        missed.add_metric([deadline, hub or NO_HUB], count)
    return [current, missed]
