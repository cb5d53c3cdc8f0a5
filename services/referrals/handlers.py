"""What each consumed event does. The consumer commits (with its inbox row); handlers never do."""

from __future__ import annotations

from services.referrals import service
from shared.consumer import BatchHandler, Handler
from shared.events import AssignmentStatusChangedV1, CloudEvent
from shared.uow import UnitOfWork


def status_handlers() -> dict[str, Handler]:
    async def status_changed(uow: UnitOfWork, event: CloudEvent) -> None:
        await service.record_progress(uow, AssignmentStatusChangedV1.model_validate(event.data))

    return {AssignmentStatusChangedV1.type: status_changed}


def status_batch() -> BatchHandler:
    """A fetch of status events at once, in the consumer's one transaction (one read, one write per batch)."""

    async def status_changed(uow: UnitOfWork, events: list[CloudEvent]) -> None:
        await service.record_progress_batch(
            uow,
            [
                AssignmentStatusChangedV1.model_validate(e.data)
                for e in events
                if e.type == AssignmentStatusChangedV1.type
            ],
        )

    return status_changed
