"""SLA escalation: one escalation for each missed deadline (the stage rule is `domain.DEADLINES`), fired once."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import insert, or_, select, update

from services.fulfilment.announcements import Outgoing, escalated_event
from services.fulfilment.domain import DEADLINE, DEADLINES
from services.fulfilment.models import assignments, escalations
from services.fulfilment.repository import assignment_of, unescalated_clause
from shared.lifecycle import StopsBetweenRounds
from shared.settings import Topics
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


async def escalate_overdue(uow: UnitOfWork, *, topics: Topics, batch: int = 200) -> int:
    """Raise one escalation for each missed deadline not escalated yet; return how many.

    Safe with several schedulers: each claim is a conditional UPDATE (... WHERE
    escalated_at IS NULL) whose row count says whether this instance won it, so
    a deadline is escalated once however many instances look. On PostgreSQL the
    candidates are also taken with SKIP LOCKED, so instances share the work.
    """
    a = assignments.c
    async with uow:
        now = uow.now()
        query = (
            select(assignments).where(or_(*[unescalated_clause(now, d) for d in DEADLINES])).order_by(a.id).limit(batch)
        )
        if uow.db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = (await uow.session.execute(query)).mappings().all()
        out = Outgoing(topics)
        raised = 0
        for row in rows:
            for name in assignment_of(row).overdue_deadlines(now):
                deadline = DEADLINE[name]
                if row[deadline.escalated] is not None or row[deadline.due] <= row["created_at"]:
                    continue
                claimed = await uow.session.execute(
                    update(assignments)
                    .where(a.id == row["id"], unescalated_clause(now, deadline))
                    .values({deadline.escalated: now})
                )
                if claimed.rowcount != 1:
                    continue  # another instance escalated it, or it moved on meanwhile
                raised += 1
                await uow.session.execute(
                    insert(escalations).values(
                        assignment_id=row["id"],
                        deadline=name,
                        due_at=row[deadline.due],
                        escalated_at=now,
                        status=row["status"],
                        hub=row["hub"],
                    )
                )
                event = escalated_event(
                    row, deadline=name, due_at=row[deadline.due], escalated_at=now, status=row["status"], hub=row["hub"]
                )
                out.status(uow, event, key=row["referral_id"])
                if row["hub"]:
                    out.to_hub(uow, event, hub=row["hub"], key=row["referral_id"], assignment_id=row["id"])
        await out.flush(uow)
        await uow.commit()
        return raised


class EscalationScheduler(StopsBetweenRounds):
    """Looks for missed deadlines every `poll_seconds`, in every instance; the claim makes it fire once.

    Its state is the assignments' own columns, so a restart picks up where it left off.
    """

    def __init__(self, *, uow_factory, topics: Topics, poll_seconds: float = 30.0):
        self.uow_factory = uow_factory
        self.topics = topics
        self.poll_seconds = poll_seconds
        self.escalated_total = 0

    async def run(self) -> None:
        self.started()
        while True:
            try:
                with self.working():
                    self.escalated_total += await escalate_overdue(self.uow_factory(), topics=self.topics)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database blip: the next round tries again
                if asyncio.current_task().cancelling():
                    raise  # a cancellation the driver turned into another error: stop all the same
                log.warning("escalation round failed", exc_info=True)
            await asyncio.sleep(self.poll_seconds)
