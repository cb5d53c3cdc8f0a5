"""What each consumed event does. The consumer commits (with its inbox row); handlers never do."""

from __future__ import annotations

from services.reporting import service
from shared.consumer import Handler
from shared.events import CloudEvent
from shared.uow import UnitOfWork


async def project_one(uow: UnitOfWork, event: CloudEvent) -> None:
    await service.project(uow, [event])


async def project_batch(uow: UnitOfWork, events: list[CloudEvent]) -> None:
    """A fetched batch in one transaction: the same fold, far fewer commits."""
    await service.project(uow, events)


def projection_handlers() -> dict[str, Handler]:
    """Every reporting-safe event folds into the read models the same way (replay uses it in batches)."""
    return {event_type: project_one for event_type in service.EVENT_TYPES}
