"""What each consumed event does. The consumer commits (with its inbox rows); handlers never do."""

from __future__ import annotations

from services.fulfilment import residents, service
from shared.consumer import BatchHandler, Handler
from shared.events import (
    CloudEvent,
    ReferralAmendedV1,
    ReferralReceivedV1,
    RequestCancelledV1,
    ResidentErasedV1,
    ResidentsMergedV1,
)
from shared.settings import Topics
from shared.uow import UnitOfWork


def referral_handlers(*, routing: service.Routing, topics: Topics) -> dict[str, Handler]:
    """One event at a time: what the consumer falls back to when a batch fails (retries, dead letters)."""

    async def received(uow: UnitOfWork, event: CloudEvent) -> None:
        await service.route_referral(uow, ReferralReceivedV1.model_validate(event.data), routing=routing, topics=topics)

    async def amended(uow: UnitOfWork, event: CloudEvent) -> None:
        await service.amend_referral(uow, ReferralAmendedV1.model_validate(event.data), routing=routing, topics=topics)

    async def cancelled(uow: UnitOfWork, event: CloudEvent) -> None:
        await service.cancel_request(uow, RequestCancelledV1.model_validate(event.data), topics=topics)

    async def erased(uow: UnitOfWork, event: CloudEvent) -> None:
        await service.erase_resident(uow, ResidentErasedV1.model_validate(event.data), topics=topics)

    async def merged(uow: UnitOfWork, event: CloudEvent) -> None:
        await residents.follow_merge(uow, ResidentsMergedV1.model_validate(event.data))

    return {
        ReferralReceivedV1.type: received,
        ReferralAmendedV1.type: amended,
        RequestCancelledV1.type: cancelled,
        ResidentErasedV1.type: erased,
        ResidentsMergedV1.type: merged,
    }


def referral_batch(*, routing: service.Routing, topics: Topics) -> BatchHandler:
    """A fetched batch in its order: each run of `referral.received` routed at once, anything else one by one.

    A run stops at any other event, so an amendment or a cancellation still follows
    the referral it is about, as on the topic.
    """
    one_by_one = referral_handlers(routing=routing, topics=topics)

    async def handle(uow: UnitOfWork, events: list[CloudEvent]) -> None:
        run: list[ReferralReceivedV1] = []
        traces: list[tuple[str | None, str | None]] = []  # each event's caller's trace, beside it
        for event in events:
            if event.type == ReferralReceivedV1.type:
                run.append(ReferralReceivedV1.model_validate(event.data))
                traces.append((event.traceparent, event.tracestate))
                continue
            if run:
                await service.route_referrals(uow, run, routing=routing, topics=topics, traces=traces)
                run, traces = [], []
            await one_by_one[event.type](uow, event)
        if run:
            await service.route_referrals(uow, run, routing=routing, topics=topics, traces=traces)

    return handle
