"""Referral use cases: load, apply the rules, record events, commit once."""

from __future__ import annotations

import asyncio
import logging
from datetime import date

from services.referrals import domain, repository
from services.referrals.domain import Referral
from services.referrals.models import sealing
from services.referrals.schemas import (
    Cancellation,
    ReferralAmendment,
    ReferralOut,
    RequestTypeIn,
    RequestTypePatch,
    ResidentHistory,
)
from shared.auth import Principal
from shared.errors import Conflict, NotFound
from shared.events import (
    AssignmentStatusChangedV1,
    ReferralAmendedV1,
    RequestCancelledV1,
    RequestReceivedV1,
    ResidentErasedV1,
    ResidentsMergedV1,
)
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

REKEY_INDEXES = sealing.derived()
"""The blind indexes `kent-together rekey` remakes: read from models.sealing (shared/sealing.py).

Read by the service's SPEC (app.py) for suite/keys.py."""


class RequestTypes:
    """The request-type taxonomy, read from the database and kept for a few seconds."""

    def __init__(self, *, ttl_seconds: float = 5.0):
        self.ttl_seconds = ttl_seconds
        self._active: frozenset[str] | None = None
        self._loaded_at = 0.0
        self._loading: asyncio.Task | None = None
        self._generation = 0

    async def active(self, uow: UnitOfWork) -> frozenset[str]:
        """The active type ids, read again every `ttl_seconds`.

        Callers arriving while they are being read share that one read (under load, the
        expiry would otherwise send every request in flight to the database at once).
        """
        now = asyncio.get_running_loop().time()
        if self._active is not None and now - self._loaded_at <= self.ttl_seconds:
            return self._active
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self._load(uow, self._generation))
        return await asyncio.shield(self._loading)

    async def _load(self, uow: UnitOfWork, generation: int) -> frozenset[str]:
        started = asyncio.get_running_loop().time()
        async with uow:
            active = await uow.request_types.active()
        if generation == self._generation:  # not forgotten meanwhile (a type added or retired)
            self._active, self._loaded_at = active, started
        return active

    def forget(self) -> None:
        self._active = None
        self._loading = None
        self._generation += 1


def _out(referral: Referral) -> ReferralOut:
    return ReferralOut.model_validate(repository.out(referral))


async def get_referral(uow: UnitOfWork, referral_id: str) -> ReferralOut:
    """A referral by its id, or by its reference (what a resident quotes)."""
    async with uow:
        reference = domain.normalise_reference(referral_id)
        if domain.looks_like_reference(reference):
            return _out(await uow.referrals.get_by_reference(reference))
        return _out(await uow.referrals.get(referral_id))


async def search_referrals(
    uow: UnitOfWork,
    *,
    reference: str | None = None,
    postcode: str | None = None,
    phone: str | None = None,
    name: str | None = None,
    date_of_birth: date | None = None,
    limit: int = 50,
) -> list[dict]:
    """Referrals matching every criterion given, newest first (a date of birth is compared once opened: it has no index)."""
    async with uow:
        return await uow.referrals.search(
            reference=domain.normalise_reference(reference) if reference else None,
            postcode=postcode,
            phone=phone,
            name=name,
            date_of_birth=date_of_birth,
            limit=limit,
        )


async def amend_referral(
    uow: UnitOfWork,
    *,
    referral_id: str,
    amendment: ReferralAmendment,
    by: Principal,
    topics=None,
) -> ReferralOut:
    async with uow:
        referral = await uow.referrals.get(referral_id)
        changed = referral.amend(
            resident=amendment.resident.model_dump(exclude_unset=True) if amendment.resident is not None else None,
            consent=amendment.consent.model_dump(mode="json") if amendment.consent is not None else None,
            referrer=amendment.referrer.model_dump(mode="json") if amendment.referrer is not None else None,
            by=by.subject,
            at=uow.now(),
            note=amendment.note,
        )
        if not changed:
            return _out(referral)
        await uow.referrals.save(referral)
        uow.publish(
            ReferralAmendedV1(
                referral_id=referral.id,
                reference=referral.reference,
                amended_at=referral.updated_at,
                changed=changed,
                address_changed=any(f.startswith("address") for f in changed),
                resident=repository.resident(referral.personal),
                consent_to_share=referral.consent["to_share"],
            )
        )
        await uow.commit()
        return _out(referral)


async def cancel_requests(
    uow: UnitOfWork,
    *,
    referral_id: str,
    request_id: str | None,
    cancellation: Cancellation,
    by: Principal,
    topics=None,
) -> ReferralOut:
    """Cancel one request, or (no request id) every open request and the referral."""
    async with uow:
        referral = await uow.referrals.get(referral_id)
        now = uow.now()
        cancelled = referral.cancel(
            request_id=request_id, reason=cancellation.reason, by=by.subject, at=now, note=cancellation.note
        )
        await uow.referrals.save(referral)
        for request in cancelled:
            uow.publish(
                RequestCancelledV1(
                    referral_id=referral_id,
                    request_id=request.id,
                    request_type=request.type,
                    reason=cancellation.reason,
                    cancelled_at=now,
                )
            )
        await uow.commit()
        return _out(referral)


async def record_progress(uow: UnitOfWork, event: AssignmentStatusChangedV1) -> None:
    """One status event (the consumer's one-at-a-time path): as `record_progress_batch` of one."""
    await record_progress_batch(uow, [event])


async def record_progress_batch(uow: UnitOfWork, events: list[AssignmentStatusChangedV1]) -> None:
    """Fulfilment moved requests on: note where each is, and close it (and its referral) when the hub closed it.

    In the consumer's transaction (the consumer commits), a whole fetch at once:
    one read of the referrals concerned (their requests and status, nothing
    unsealed), the events applied in their order in memory, one UPDATE of many
    rows per set of columns changed. Events of one referral arrive in order (they
    are keyed by it); one older than what is held (a republish) is ignored.
    """
    # An occurrence of a recurring request after the first has its own request id: the series' is ours.
    ours = [(str(e.series_id or e.request_id), e) for e in events]
    cases = await uow.referrals.progress_of({request_id for request_id, _ in ours})
    for request_id, event in ours:
        case = cases.get(request_id)
        if case is None:
            log.warning("status of request %s, which referrals never took; ignored", request_id)
            continue
        case.record_progress(
            request_id,
            progress=event.status,
            hub=event.hub,
            at=event.changed_at,
            outcome=event.outcome,
            closed_at=event.closed_at,
            occurrence=event.occurrence,
            series_continues=bool(event.series_continues),
        )
    await uow.referrals.save_progress(list({case.id: case for case in cases.values()}.values()))


async def publish_state_page(uow: UnitOfWork, after: str | None, limit: int, *, topics=None) -> tuple[str | None, int]:
    """`kent-together republish referrals`: each request as it is now, for reporting (no personal data).

    A `request.received` for every request, and a `request.cancelled` for those
    cancelled, in request id order after `after`; returns the last id and how many.
    Only reporting's topic: fulfilment has (and routed) every referral already.
    """
    rows = await uow.referrals.requests_after(after, limit=limit)
    stats = uow.topics.request_stats
    for row in rows:
        uow.publish(
            RequestReceivedV1(
                referral_id=row.referral_id,
                request_id=row.id,
                request_type=row.type,
                channel=row.channel,
                postcode_district=row.district,
                urgency=row.urgency,
                received_at=row.received_at,
                possible_duplicate=row.duplicate_of is not None,
                resident_id=row.resident_id,
            )
        )
        if row.status == domain.CANCELLED and row.cancelled_at is not None:
            uow.publish(
                RequestCancelledV1(
                    referral_id=row.referral_id,
                    request_id=row.id,
                    request_type=row.type,
                    reason=row.cancel_reason or "unknown",
                    cancelled_at=row.cancelled_at,
                ),
                topic=stats,
            )
    return (rows[-1].id if rows else after), len(rows)


async def list_request_types(uow: UnitOfWork) -> list[dict]:
    async with uow:
        return await uow.request_types.all()


async def add_request_type(uow: UnitOfWork, *, request_type: RequestTypeIn) -> dict:
    async with uow:
        if await uow.request_types.get(request_type.id) is not None:
            raise Conflict(f"request type {request_type.id!r} exists already")
        row = {**request_type.model_dump(), "active": True, "position": await uow.request_types.last_position() + 1}
        await uow.request_types.add([row])
        await uow.commit()
        return row


async def change_request_type(uow: UnitOfWork, *, type_id: str, patch: RequestTypePatch) -> dict:
    async with uow:
        if await uow.request_types.get(type_id) is None:
            raise NotFound(f"no request type {type_id!r}")
        values = patch.model_dump(exclude_unset=True)
        if values:
            await uow.request_types.change(type_id, values)
        row = await uow.request_types.get(type_id)
        await uow.commit()
        return row


async def seed_request_types(uow: UnitOfWork) -> None:
    """The default taxonomy, added where missing (administrators may extend it)."""
    async with uow:
        existing = {t["id"] for t in await uow.request_types.all()}
        await uow.request_types.add(
            [
                {"id": type_id, "label": label, "description": description, "active": True, "position": position}
                for position, (type_id, label, description) in enumerate(domain.DEFAULT_REQUEST_TYPES)
                if type_id not in existing
            ]
        )
        await uow.commit()


# --- erasure and retention --------------------------------------------------------------


async def erase_resident(
    uow: UnitOfWork,
    *,
    referral_id: str,
    by: Principal,
    reason: str = "request",
    topics=None,
) -> ReferralOut:
    """Erase the resident's personal data from this referral, its history and the outbox; tell fulfilment.

    Kept: ids, the reference, channel, dates, request types, urgencies and statuses,
    and the postcode's outward code, so every count stays as it was. Idempotent.
    """
    async with uow:
        referral = await uow.referrals.get(referral_id)
        if not referral.erase(by=by.subject, at=uow.now(), reason=reason):
            return _out(referral)
        await uow.referrals.erase_history(referral)  # before save: the erasure's own entry has no note
        await uow.referrals.save(referral)
        uow.publish(ResidentErasedV1(referral_id=referral_id, erased_at=referral.erased_at, reason=reason))
        await uow.commit()
        return _out(referral)


# --- residents -------------------------------------------------------------------------------


async def resident_history(uow: UnitOfWork, *, resident: str) -> ResidentHistory:
    """Every referral and request of one resident (by their id, or a referral's id or reference), and their merges."""
    async with uow:
        resident_id = await uow.referrals.resident_of(resident)
        return ResidentHistory(
            resident_id=resident_id,
            merges=await uow.referrals.merges_into(resident_id),
            referrals=[_out(r) for r in await uow.referrals.of_resident(resident_id)],
        )


async def merge_residents(uow: UnitOfWork, *, resident: str, duplicate: str, by: Principal) -> ResidentHistory:
    """Merge the resident recorded twice (`duplicate`) into `resident`: one history, kept whole, one erasure."""
    async with uow:
        into = await uow.referrals.resident_of(resident)
        merged = await uow.referrals.resident_of(duplicate)
        now = uow.now()
        moved = domain.merge_residents(
            into=into, merged=merged, referrals=await uow.referrals.of_resident(merged), by=by.subject, at=now
        )
        for referral in moved:
            await uow.referrals.save(referral)
        await uow.referrals.record_merge(
            merged_id=merged, into_id=into, referral_ids=[r.id for r in moved], by=by.subject, at=now
        )
        uow.publish(
            ResidentsMergedV1(
                resident_id=into, merged_resident_id=merged, referral_ids=[r.id for r in moved], merged_at=now
            )
        )
        await uow.commit()
    return await resident_history(uow, resident=into)


async def erase_resident_everywhere(uow_factory, *, resident: str, by: Principal, reason: str = "request") -> list[str]:
    """Erase every referral of a resident (merged ones included), each as `erase_resident` does; return those erased."""
    async with uow_factory() as uow:
        referrals = await uow.referrals.of_resident(await uow.referrals.resident_of(resident))
    erased = []
    for referral in referrals:
        if referral.erased_at is None:
            await erase_resident(uow_factory(), referral_id=referral.id, by=by, reason=reason)
            erased.append(referral.id)
    return erased


# Intake and retention have rooms of their own; their use cases are named here too (app.py, suite/, tests).
from services.referrals.intake import (  # noqa: E402,F401
    Intake,
    IntakeQueue,
    ReferralAnonymised,
    Taken,
    body_hash,
    find_duplicates,
    take_referrals,
)
from services.referrals.retention import (  # noqa: E402,F401
    RETENTION,
    RetentionScheduler,
    anonymise_expired,
    flag_for_review,
    retention_review,
)
