"""Routing, in one room: where a request goes (postcode → hub, council or triage), and the referrals routed in batches.

`route_referrals` is the consumer's use case for `referral.received`: it works
inside the consumer's unit of work (one transaction per fetched batch, with the
inbox rows) and never commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from services.fulfilment import domain
from services.fulfilment.announcements import Outgoing, announce
from services.fulfilment.domain import Assignment, Placement, Series, Status
from services.fulfilment.hubs import Hub, route
from services.fulfilment.postcodes import PostcodeDirectory, normalise_postcode
from services.fulfilment.repository import new_assignment_row
from shared.db import new_id
from shared.events import ReferralReceivedV1
from shared.settings import Topics
from shared.uow import UnitOfWork


class Routing:
    """Where requests go: the postcode directory held in memory, and the queues' pick-up times.

    The directory is loaded once at start-up (or given by a test) and never read
    from files per request.
    """

    def __init__(
        self,
        *,
        directory: PostcodeDirectory | None = None,
        triage_within: timedelta,
        out_of_area_within: timedelta,
        hubs_ttl_seconds: float = 5.0,
    ):
        self.directory = directory
        self.triage_within = triage_within
        self.out_of_area_within = out_of_area_within
        self.hubs_ttl_seconds = hubs_ttl_seconds
        self._hubs: dict | None = None
        self._hubs_loaded_at = 0.0
        self._routing_hubs: tuple[Mapping[str, Any], list[Hub], dict] | None = None

    async def hubs(self, uow: UnitOfWork) -> dict:
        """The hubs table, read at most every few seconds: routing every event need not ask again.

        An administrator's edit applies here at once, and in other instances within the TTL.
        """
        now = asyncio.get_running_loop().time()
        if self._hubs is None or now - self._hubs_loaded_at > self.hubs_ttl_seconds:
            self._hubs = await uow.assignments.hubs()
            self._hubs_loaded_at = now
        return self._hubs

    async def load_areas_of(self, postcodes: Iterable[str]) -> None:
        """Read the postcode areas these need that are not in memory yet, off the event loop.

        Kent and Medway are loaded at start-up; the first London or Sussex postcode
        reads its area's file (a second or more): in a thread, so it does not stall
        every other event and request meanwhile.
        """
        if self.directory is None:
            return
        loaded = self.directory.loaded_areas
        missing = []
        for postcode in postcodes:
            try:
                canonical = normalise_postcode(postcode)
            except (TypeError, ValueError):
                continue
            area = canonical[:2] if canonical[1].isalpha() else canonical[:1]
            if area not in loaded:
                missing.append(postcode)
        for postcode in missing:
            await asyncio.to_thread(self.directory.lookup, postcode)

    def _hubs_for_routing(self, hub_rows: Mapping[str, Any]) -> tuple[list[Hub], dict]:
        """The hubs as routing takes them, made once per read of the table, not once per referral."""
        cached = self._routing_hubs
        # The same read of the table (held here, so never recycled) as last time: the same hubs.
        if cached is None or cached[0] is not hub_rows:
            rows = list(hub_rows.values())
            self._routing_hubs = (
                hub_rows,
                [Hub(r.slug, r.name, r.district_code) for r in rows],
                {r.slug: r.sla or {} for r in rows},
            )
            cached = self._routing_hubs
        return cached[1], cached[2]

    def forget_hubs(self) -> None:
        self._hubs = None

    def place(self, postcode: str, *, consent_to_share: bool, hub_rows: Mapping[str, Any]) -> Placement:
        """`hub_rows`: the hubs by slug, as `hubs` gives them."""
        if self.directory is None:
            raise RuntimeError("the postcode directory is not loaded yet")
        known, sla = self._hubs_for_routing(hub_rows)
        decision = route(self.directory.lookup(postcode), known)
        return domain.placement_for(
            decision,
            hub_sla=sla,
            triage_within=self.triage_within,
            out_of_area_within=self.out_of_area_within,
            consent_to_share=consent_to_share,
        )

    def hub_placement(self, hub_row, *, reason: str) -> Placement:
        """A hub named by a person (an administrator, or the hub that rejects it)."""
        return Placement(
            Status.ROUTED,
            reason=reason,
            hub=hub_row.slug,
            district_code=hub_row.district_code,
            sla=hub_row.sla or {},
        )

    def out_of_area(self, council_name: str, *, reason: str, district_code: str | None = None) -> Placement:
        return Placement(
            Status.OUT_OF_AREA,
            reason=reason,
            district_code=district_code,
            council_name=council_name,
            pick_up_within=self.out_of_area_within,
        )


async def route_referral(uow: UnitOfWork, referral: ReferralReceivedV1, *, routing: Routing, topics: Topics) -> int:
    """One referral: see `route_referrals`."""
    return await route_referrals(uow, [referral], routing=routing, topics=topics)


async def route_referrals(
    uow: UnitOfWork,
    received: list[ReferralReceivedV1],
    *,
    routing: Routing,
    topics: Topics,
    traces: list[tuple[str | None, str | None]] | None = None,
) -> int:
    """One assignment for each request of each referral, placed from the resident's postcode; in order.

    `traces`, beside `received`: each referral event's (traceparent, tracestate), so what is
    announced for a referral belongs to its caller's trace, as when routed alone.

    A batch at once: one read of which requests are known, one insert each for the
    referrals, assignments and their history, and one feed append per hub, however
    many referrals. Returns how many assignments were made: none for a referral seen
    before (a redelivery, or a republished copy under another event id).
    """
    repo = uow.assignments
    known = await repo.known_requests([str(r.request_id) for referral in received for r in referral.requests])
    # Known already only if some of its requests are (a copy of the event that carries
    # more requests than the first): otherwise no need to look.
    stored = await repo.referrals(
        {
            str(referral.referral_id)
            for referral in received
            if any(str(r.request_id) in known for r in referral.requests)
        }
    )
    now = uow.now()
    hub_rows = await routing.hubs(uow)
    await routing.load_areas_of(referral.resident.address.postcode for referral in received)
    out = Outgoing(topics, hub_rows=hub_rows)
    new_referrals, rows, changes, announcements = [], [], [], []
    new_series: list[Series] = []
    for index, referral in enumerate(received):
        trace = traces[index] if traces is not None else None
        fresh = [r for r in referral.requests if str(r.request_id) not in known]
        if not fresh:
            continue
        known.update(str(r.request_id) for r in fresh)  # the same referral twice in one batch: once
        referral_id = str(referral.referral_id)
        referral_row = stored.get(referral_id)
        if referral_row is None:
            referral_row = stored[referral_id] = {
                "id": referral_id,
                "reference": referral.reference,
                "channel": referral.channel,
                "received_at": referral.received_at,
                "resident": referral.resident.model_dump(mode="json"),
                "referrer": referral.referrer.model_dump(mode="json") if referral.referrer else None,
                "consent_to_share": referral.consent_to_share,
                "updated_at": now,
                "resident_id": str(referral.resident_id or referral.referral_id),
            }
            new_referrals.append(referral_row)
        # A backfilled referral (a migration, a demo) reached its hub when it was received.
        opened_at = referral.received_at if referral.backfilled else now
        placement = routing.place(
            referral.resident.address.postcode,
            consent_to_share=referral.consent_to_share,
            hub_rows=hub_rows,
        )
        for request in fresh:
            recurs = None
            if request.recurrence is not None:
                # A recurring request is its series' first occurrence; the series' id is the request's.
                recurs = Series(
                    id=str(request.request_id),
                    referral_id=referral_id,
                    frequency=request.recurrence.frequency,
                    starts_at=opened_at,
                    ends_on=request.recurrence.ends_on,
                    occurrences=request.recurrence.occurrences,
                )
                new_series.append(recurs)
            a, change = Assignment.open(
                id=new_id(),
                request_id=str(request.request_id),
                referral_id=referral_id,
                request_type=request.type,
                urgency=request.urgency,
                received_at=referral.received_at,
                placement=placement,
                at=opened_at,
                series_id=recurs.id if recurs else None,
                occurrence=1 if recurs else None,
            )
            request_row = {
                "details": request.details,
                "needed_by": request.needed_by,
                "duplicate_of": str(request.duplicate_of) if request.duplicate_of else None,
            }
            rows.append(new_assignment_row(a, request_row=request_row, now=now))
            changes.append((a.id, change))
            announcements.append((a, change, request_row, referral_row, trace, recurs))
    if not rows:
        return 0
    await repo.add_referrals(new_referrals)
    await repo.add_series(new_series)
    await repo.add(rows)
    await repo.record(changes)
    for a, change, request_row, referral_row, trace, recurs in announcements:
        announce(
            uow,
            out,
            a=a,
            changes=[change],
            request_row=request_row,
            referral_row=referral_row,
            series=recurs,
            trace=trace,
        )
    await out.flush(uow)
    return len(rows)
