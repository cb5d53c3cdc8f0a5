"""Referral intake: referrals taken one by one or in batches, each with its requests and events, committed together.

The hot path of the service (POST /v1/referrals; the bulk import, services/referrals/imports.py):
a `Referral` aggregate is built from the validated body, stored sealed by the repository
(`uow.referrals.add_all`), answered with the repository's serialiser and published
from the aggregate, without building a Pydantic model on the way.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError

from services.referrals import domain, repository
from services.referrals.domain import Referral, Request
from services.referrals.schemas import ReferralIn, ReferralOut
from shared import tracing
from shared.audit import AuditLog
from shared.auth import Principal
from shared.db import new_id
from shared.errors import Conflict, DomainError
from shared.events import ReferralReceivedV1, RequestReceivedV1
from shared.idempotency import IdempotencyKeyReused
from shared.uow import UnitOfWork


def body_hash(referral: ReferralIn) -> str:
    return hashlib.sha256(referral.model_dump_json().encode()).hexdigest()


@dataclass(frozen=True)
class Intake:
    """One validated referral to take, with who sent it and their Idempotency-Key."""

    referral: ReferralIn
    by: Principal
    idempotency_key: str | None = None
    traceparent: str | None = field(default_factory=tracing.current_traceparent)
    tracestate: str | None = field(default_factory=tracing.current_tracestate)
    """The caller's trace: a batch is written in one task, each referral's events keep their own."""
    request_id: str | None = None
    """The HTTP request's id, for the audit record written with the referral."""
    idempotency_client: str | None = None
    """Whose keys `idempotency_key` is among: the caller's own unless said (a bulk import's keys are the file's)."""

    @property
    def backfilled(self) -> bool:
        """Dated by someone allowed to record the past: the hubs' part happened then too."""
        return self.referral.received_at is not None and domain.BACKFILL_SCOPE in self.by.scopes

    @property
    def client(self) -> str:
        return self.idempotency_client or self.by.subject


@dataclass(frozen=True, slots=True)
class Taken:
    """A referral as intake answers it: its id, and its 201 body (ReferralOut's JSON), already serialised."""

    id: str
    body: bytes

    @classmethod
    def of(cls, referral: Referral) -> Taken:
        return cls(referral.id, repository.to_json(referral))

    def out(self) -> ReferralOut:
        return ReferralOut.model_validate_json(self.body)


async def take_referrals(
    uow: UnitOfWork,
    *,
    intakes: list[Intake],
    audit: AuditLog | None = None,
    topics=None,
) -> list[tuple[Taken, bool] | DomainError]:
    """Store referrals that arrived together in one transaction: one commit, one fsync.

    Group commit: each referral is still all-or-nothing with its events, and
    none is answered before the commit. What is stored already is read first,
    in a reading unit of work; then the new referrals, their events and audit
    records are only inserted, in one go at commit. A conflict (two retries
    racing with one Idempotency-Key, a reference drawn twice) fails that insert
    and goes again, when the replays are found. With `audit`, each new
    referral's "create" record is written in the same transaction (a replay
    writes none).
    """
    fingerprints = [body_hash(i.referral) for i in intakes]
    name_keys = [domain.name_key(i.referral.resident.name) for i in intakes]
    for _ in range(3):
        results: list = [None] * len(intakes)
        # What is stored already, read first with no write lock: the keys seen before, the person's
        # open requests. A batch another instance stores meanwhile with one of these keys (or a
        # reference drawn twice) fails the insert below on its unique constraint, and this goes again.
        async with uow.like(reading=True) as reading:
            stored = await reading.referrals.by_idempotency_keys(
                {(i.client, i.idempotency_key) for i in intakes if i.idempotency_key}
            )
            fresh: list[int] = []
            first_with_key: dict[tuple[str, str], int] = {}
            replays: dict[str, Taken] = {}
            for index, intake in enumerate(intakes):
                key = (intake.client, intake.idempotency_key)
                if intake.idempotency_key is None:
                    fresh.append(index)
                elif key in stored:
                    referral_id, stored_hash, erased_at, reference = stored[key]
                    if erased_at is not None:
                        results[index] = _anonymised(reference, erased_at)
                    elif stored_hash == fingerprints[index]:
                        if referral_id not in replays:
                            replays[referral_id] = Taken.of(await reading.referrals.get(referral_id))
                        results[index] = (replays[referral_id], True)
                    else:
                        results[index] = _key_reused()
                elif key in first_with_key:
                    results[index] = ("same-as", first_with_key[key])
                else:
                    first_with_key[key] = index
                    fresh.append(index)
            earlier = await _earlier_open_requests(
                reading, [intakes[i].referral for i in fresh], keys=[name_keys[i] for i in fresh]
            )
        if not fresh:
            return _same_as_resolved(results, fingerprints)
        # Then only inserts, sent to the database at commit in one go (on SQLite the write lock is held
        # for the inserts themselves, not for the Python work of building and sealing them).
        async with uow.like(inserts_at_commit=True) as writing:
            now = writing.now()
            taken, audit_rows = [], []
            # Referrals taken earlier in this batch, by name key: the same person twice in one batch
            # (is_same_person needs equal name keys, so only those with the same key are compared).
            taken_so_far: dict[str, list[tuple[ReferralIn, Referral]]] = {}
            for index, (open_before, resident_id) in zip(fresh, earlier):
                intake = intakes[index]
                same_name = taken_so_far.setdefault(name_keys[index], [])
                for previous, previous_referral in same_name:
                    if _same_resident(previous, intake.referral):
                        for request in previous_referral.requests:
                            open_before.setdefault(request.type, request.id)
                        resident_id = resident_id or previous_referral.resident_id
                referral = _new_referral(
                    intake, fingerprint=fingerprints[index], now=now, earlier=open_before, resident_id=resident_id
                )
                same_name.append((intake.referral, referral))
                taken.append(referral)
                # Each caller's own trace (a new one for a caller outside any): the batch is written in one task.
                trace = (intake.traceparent or tracing.new_trace().traceparent, intake.tracestate)
                _publish_received(writing, referral, backfilled=intake.backfilled, trace=trace)
                results[index] = (Taken.of(referral), False)
                if audit is not None:
                    audit_rows += audit.rows(
                        by=intake.by,
                        action="create",
                        resource="referral",
                        ids=[referral.id],
                        request_id=intake.request_id,
                        at=now,
                    )
            try:
                await writing.referrals.add_all(taken)
                if audit is not None:
                    await writing.insert_rows(audit.table, audit_rows)
                await writing.commit()
            except IntegrityError:
                continue
        return _same_as_resolved(results, fingerprints)
    raise Conflict("could not store the referrals; please retry")


class IntakeQueue:
    """Referrals posted at the same moment share one transaction (group commit).

    While one batch is being written the next gathers, so under load the
    database does one commit for many referrals; alone, a referral is written
    at once. Each caller still gets its 201 only after its commit.
    """

    def __init__(self, *, uow_factory, max_batch: int = 100, audit: AuditLog | None = None, topics=None):
        self.uow_factory = uow_factory
        self.audit = audit
        self.max_batch = max_batch
        self._waiting: list[tuple[Intake, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def take(self, intake: Intake) -> tuple[Taken, bool]:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((intake, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_while_waiting())
        # No shield needed: a caller that goes away cancels only its own future, which the writer skips.
        result = await future
        if isinstance(result, DomainError):
            raise result
        return result

    async def _write_while_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            try:
                results = await take_referrals(self.uow_factory(), intakes=[i for i, _ in batch], audit=self.audit)
            except Exception as error:  # the database is down, say: every caller hears it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)


async def find_duplicates(uow: UnitOfWork, *, referral: ReferralIn) -> list[dict]:
    """The open requests this referral would be linked to as duplicates if taken now, one per type it asks for.

    What intake does when it stores a referral, asked first: an adviser can tell
    the caller "you already have a food request open from 2 days ago" before saving.
    """
    async with uow:
        [(earlier, _)] = await _earlier_open_requests(uow, [referral])
        asked = {request.type for request in referral.requests}
        wanted = [request_id for kind, request_id in earlier.items() if kind in asked]
        found = await uow.referrals.requests_described(wanted) if wanted else []
    return sorted(found, key=lambda d: d["received_at"])


# --- helpers: never commit ------------------------------------------------------


def _same_as_resolved(results: list, fingerprints: list[str]) -> list:
    """A referral sent twice in one batch under one key: the second answered as a replay of the first."""
    for index, result in enumerate(results):
        if isinstance(result, tuple) and result[0] == "same-as":
            first = results[result[1]][0]
            same = fingerprints[index] == fingerprints[result[1]]
            results[index] = (first, True) if same else _key_reused()
    return results


class ReferralAnonymised(Conflict):
    slug, title = "referral-anonymised", "The referral under this Idempotency-Key was anonymised"


def _anonymised(reference: str, erased_at) -> ReferralAnonymised:
    """A retry of a referral whose resident's details were erased since: what happened, not "another body"."""
    return ReferralAnonymised(
        f"this Idempotency-Key took referral {reference}, whose resident's personal data was erased on "
        f"{erased_at:%d %B %Y at %H:%M} UTC (on request or at the end of retention): it cannot be replayed. "
        "If help is still needed, take a new referral with a new key.",
        reference=reference,
        erased_at=erased_at.isoformat(),
    )


def _key_reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused("this Idempotency-Key was used with a different body; use a new key for a new referral")


def _new_referral(
    intake: Intake, *, fingerprint: str, now, earlier: dict[str, str], resident_id: str | None
) -> Referral:
    """A referral just taken, its requests linked as duplicates to the same person's earlier open ones."""
    referral, by = intake.referral, intake.by
    received_at = referral.received_at or now
    referral_id = new_id()
    resident, address = referral.resident, referral.resident.address
    requests = [
        Request(
            id=new_id(),
            type=r.type,
            position=position,
            details=r.details,
            needed_by=r.needed_by,
            urgency=r.urgency or domain.urgency_for(needed_by=r.needed_by, received=received_at),
            duplicate_of=earlier.get(r.type),
            recurrence=r.recurrence.model_dump(mode="json") if r.recurrence else None,
        )
        for position, r in enumerate(referral.requests)
    ]
    return Referral(
        id=referral_id,
        reference=domain.make_reference(),
        channel=referral.channel,
        received_at=received_at,
        created_at=now,
        updated_at=now,
        created_by=by.subject,
        created_by_role=by.role,
        personal={
            "name": resident.name,
            "date_of_birth": resident.date_of_birth,
            "phone": resident.phone,
            "email": resident.email,
            "address_line1": address.line1,
            "address_line2": address.line2,
            "town": address.town,
            "postcode": address.postcode,
            "contact_preference": resident.contact_preference,
            "vulnerabilities": resident.vulnerabilities or [],
            "language": resident.language,
            "referrer": referral.referrer.model_dump(mode="json") if referral.referrer else None,
        },
        consent=referral.consent.model_dump(mode="json"),
        requests=requests,
        possible_duplicate=any(r.duplicate_of for r in requests),
        resident_id=resident_id or referral_id,
        idempotency_client=intake.client if intake.idempotency_key else None,
        idempotency_key=intake.idempotency_key,
        body_hash=fingerprint,
    )


def _publish_received(
    uow: UnitOfWork,
    referral: Referral,
    *,
    backfilled: bool = False,
    trace: tuple[str | None, str | None] | None = None,
) -> None:
    """`referral.received` (fulfilment) and a `request.received` per request (reporting), from the aggregate.

    `trace`: the caller's (traceparent, tracestate), which every event carries (else the current trace's).

    The intake hot path: written as the contracts' `model_dump()` without building them
    (tests/unit/referrals checks each against its contract).
    """
    p, referral_id, received_at, channel = referral.personal, referral.id, referral.received_at, referral.channel
    uow.publish_data(
        ReferralReceivedV1.type,
        subject=referral_id,
        data={
            "referral_id": referral_id,
            "reference": referral.reference,
            "channel": channel,
            "received_at": received_at,
            "resident": repository.resident(p),
            "referrer": p["referrer"],
            "consent_to_share": referral.consent["to_share"],
            "requests": [
                {
                    "request_id": r.id,
                    "type": r.type,
                    "details": r.details,
                    "needed_by": r.needed_by,
                    "urgency": r.urgency,
                    "duplicate_of": r.duplicate_of,
                    "recurrence": r.recurrence,
                }
                for r in referral.requests
            ],
            "backfilled": backfilled,
            "resident_id": referral.resident_id,
            "consent_to_notify": bool(referral.consent.get("to_notify", False)),
        },
        trace=trace,
    )
    district = referral.district
    for r in referral.requests:
        uow.publish_data(
            RequestReceivedV1.type,
            subject=referral_id,
            key=referral_id,
            data={
                "referral_id": referral_id,
                "request_id": r.id,
                "request_type": r.type,
                "channel": channel,
                "postcode_district": district,
                "urgency": r.urgency,
                "received_at": received_at,
                "possible_duplicate": r.duplicate_of is not None,
                "resident_id": referral.resident_id,
            },
            trace=trace,
        )


async def _earlier_open_requests(
    uow: UnitOfWork, batch: list[ReferralIn], keys: list[str] | None = None
) -> list[tuple[dict[str, str], str | None]]:
    """For each referral, the open requests of the same person taken earlier, by type, and that person's resident id.

    Earlier means stored already (the caller matches those earlier in its batch). `keys`:
    the referrals' name keys, if the caller has them.
    """
    if not batch:
        return []
    if keys is None:
        keys = [domain.name_key(r.resident.name) for r in batch]
    # People with these names first, then their open requests: one join would let the planner scan every open request.
    people = await uow.referrals.open_people_named(keys)
    matches = [[p for p in people if _same_person(referral, p)] for referral in batch]
    open_requests = await uow.referrals.open_requests_of({p["id"] for found in matches for p in found})
    result = []
    for found in matches:
        earlier: dict[str, str] = {}
        for person in found:
            for request_type, request_id in open_requests.get(person["id"], {}).items():
                earlier.setdefault(request_type, request_id)
        result.append((earlier, found[0]["resident_id"] if found else None))
    return result


def _same_resident(a: ReferralIn, b: ReferralIn) -> bool:
    ra, rb = a.resident, b.resident
    return domain.is_same_person(
        name_a=ra.name,
        dob_a=ra.date_of_birth,
        postcode_a=ra.address.postcode,
        phone_a=ra.phone,
        name_b=rb.name,
        dob_b=rb.date_of_birth,
        postcode_b=rb.address.postcode,
        phone_b=rb.phone,
    )


def _same_person(referral: ReferralIn, stored) -> bool:
    resident = referral.resident
    return domain.is_same_person(
        name_a=resident.name,
        dob_a=resident.date_of_birth,
        postcode_a=resident.address.postcode,
        phone_a=resident.phone,
        name_b=stored["name"],
        dob_b=stored["date_of_birth"],
        postcode_b=stored["postcode"],
        phone_b=stored["phone"],
    )
