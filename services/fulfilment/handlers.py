"""What each consumed event does. The consumer commits (with its inbox row); handlers never do."""

from __future__ import annotations

from services.fulfilment import service
from shared.consumer import Handler
from shared.events import CloudEvent, ReferralAmendedV1, ReferralReceivedV1, RequestCancelledV1, ResidentErasedV1
from shared.settings import Topics
from shared.uow import UnitOfWork

def referral_handlers(*, routing: service.Routing, topics: Topics) -> dict[str, Handler]:
    async def received(uow: UnitOfWork, event: CloudEvent) -> None:
        await service.route_referral(uow, ReferralReceivedV1.model_validate(event.data), routing=routing, topics=topics)

    async def amended(uow: UnitOfWork, event: CloudEvent) -> None:
        await service.amend_referral(uow, ReferralAmendedV1.model_validate(event.data), routing=routing, topics=topics)

    async def cancelled(uow: UnitOfWork, event: CloudEvent) -> None:
        await service.cancel_request(uow, RequestCancelledV1.model_validate(event.data), topics=topics)

    async def erased(uow: UnitOfWork, event: CloudEvent) -> None:
        await service.erase_resident(uow, ResidentErasedV1.model_validate(event.data), topics=topics)

    return {
        ReferralReceivedV1.type: received,
        ReferralAmendedV1.type: amended,
        RequestCancelledV1.type: cancelled,
        ResidentErasedV1.type: erased,
    }
