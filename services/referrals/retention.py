"""Retention: cases closed for the retention period anonymised, open ones past it flagged for review."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from services.referrals.service import erase_resident
from shared.audit import AuditLog
from shared.auth import Principal
from shared.db import utcnow
from shared.lifecycle import StopsBetweenRounds
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


RETENTION = Principal(subject="retention", role="admin", scopes=frozenset())
"""Who anonymises cases at the end of the retention period: the service itself."""


async def anonymise_expired(
    uow_factory,
    *,
    now,
    closed_for: timedelta,
    kept_for: timedelta,
    batch: int = 200,
    audit: AuditLog | None = None,
    topics=None,
) -> list[str]:
    """Anonymise the referrals past retention; return their ids (each audited with its erasure, given `audit`).

    Past retention: closed or cancelled (every request fulfilled, unable to be
    fulfilled, passed on or cancelled: fulfilment's status events say so) for
    `closed_for`, counted from the later of its closing and its arrival here, so a
    migrated case closed years ago is kept a full period after it was migrated.
    An open case is never anonymised: `flag_for_review` lists it. Each is erased
    in its own transaction, as an erasure on request is, and fulfilment hears of
    it the same way.
    """
    async with uow_factory() as uow:
        ids = await uow.referrals.past_retention(cutoff=now - closed_for, limit=batch)
    for referral_id in ids:
        uow = uow_factory()
        async with (
            audit.changing(uow, by=RETENTION, action="anonymise", resource="referral", ids=[referral_id])
            if audit is not None
            else contextlib.nullcontext(uow)
        ) as uow:
            await erase_resident(uow, referral_id=referral_id, by=RETENTION, reason="retention")
    return ids


async def flag_for_review(uow: UnitOfWork, *, now, kept_for: timedelta) -> int:
    """Mark the open referrals taken more than `kept_for` ago for an administrator's review; return how many."""
    async with uow:
        flagged = await uow.referrals.flag_open_taken_before(now - kept_for, at=now)
        await uow.commit()
    return flagged


async def retention_review(uow: UnitOfWork, *, limit: int = 500) -> list[dict]:
    """The open referrals past retention, oldest first: each needs a person to close, cancel or erase it."""
    async with uow:
        return await uow.referrals.flagged_for_review(limit=limit)


class RetentionScheduler(StopsBetweenRounds):
    """Anonymises expired cases now and then, in the service process (safe in several: erasure is idempotent)."""

    def __init__(
        self, *, uow_factory, closed_for: timedelta, kept_for: timedelta, poll_seconds: float, audit=None, topics=None
    ):
        self.uow_factory = uow_factory
        self.closed_for = closed_for
        self.kept_for = kept_for
        self.poll_seconds = poll_seconds
        self.audit = audit

    async def run_once(self, *, now=None) -> list[str]:
        anonymised = []
        while True:
            at = now or utcnow()
            ids = await anonymise_expired(
                self.uow_factory, now=at, closed_for=self.closed_for, kept_for=self.kept_for, audit=self.audit
            )
            anonymised += ids
            if len(ids) < 200:
                flagged = await flag_for_review(self.uow_factory(), now=at, kept_for=self.kept_for)
                if flagged:
                    log.warning(
                        "retention: %d open referrals are past retention and need review "
                        "(GET /v1/retention/review); none was anonymised",
                        flagged,
                    )
                return anonymised

    async def run(self) -> None:
        self.started()
        while True:
            try:
                with self.working():
                    count = len(await self.run_once())
                if count:
                    log.info("retention: anonymised %d referrals", count)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention: a run failed; trying again at the next poll")
            await asyncio.sleep(self.poll_seconds)
