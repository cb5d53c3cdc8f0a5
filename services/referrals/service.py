"""Referral use cases: load, apply the rules, record events, commit once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import date, timedelta

import pydantic_core
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from services.referrals import domain
from services.referrals.models import referral_changes, referrals, request_types, requests
from services.referrals.schemas import (
    Cancellation, ReferralAmendment, ReferralIn, ReferralOut, RequestTypeIn, RequestTypePatch,
)
from shared import tracing
from shared.audit import AuditLog
from shared.auth import Principal
from shared.crypto import Keyring
from shared.db import new_id
from shared.errors import Conflict, DomainError, NotFound
from shared import privacy
from shared.events import (
    AddressV1, AssignmentStatusChangedV1, ReferralAmendedV1, ReferralReceivedV1, ReferrerV1, RequestCancelledV1, RequestReceivedV1,
    RequestV1, ResidentErasedV1, ResidentV1,
)
from shared.postcode import outward_code
from shared.rekey import DerivedColumns
from shared.privacy import ERASED
from shared.settings import Topics
from shared.idempotency import IdempotencyKeyReused
from shared.lifecycle import StopsBetweenRounds
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)




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
            rows = await uow.session.scalars(select(request_types.c.id).where(request_types.c.active))
            active = frozenset(rows)
        if generation == self._generation:  # not forgotten meanwhile (a type added or retired)
            self._active, self._loaded_at = active, started
        return active

    def forget(self) -> None:
        self._active = None
        self._loading = None
        self._generation += 1


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

    @property
    def backfilled(self) -> bool:
        """Dated by someone allowed to record the past: the hubs' part happened then too."""
        return self.referral.received_at is not None and domain.BACKFILL_SCOPE in self.by.scopes


@dataclass(frozen=True, slots=True)
class Taken:
    """A referral as intake answers it: its id, and its 201 body (ReferralOut's JSON), already serialised."""

    id: str
    body: bytes

    @classmethod
    def of(cls, out: ReferralOut) -> "Taken":
        return cls(out.id, out.model_dump_json().encode())

    def out(self) -> ReferralOut:
        return ReferralOut.model_validate_json(self.body)


async def take_referral(
    uow: UnitOfWork, *, referral: ReferralIn, by: Principal, topics: Topics, idempotency_key: str | None = None,
) -> tuple[ReferralOut, bool]:
    """Store a referral and its requests with their events; return it and whether it was a replay."""
    [result] = await take_referrals(uow, intakes=[Intake(referral, by, idempotency_key)], topics=topics)
    if isinstance(result, DomainError):
        raise result
    taken, replayed = result
    return taken.out(), replayed


async def take_referrals(
    uow: UnitOfWork, *, intakes: list[Intake], topics: Topics, audit: AuditLog | None = None,
) -> list[tuple[Taken, bool] | DomainError]:
    """Store referrals that arrived together in one transaction: one commit, one fsync.

    Group commit: each referral is still all-or-nothing with its events, and
    none is answered before the commit. A conflict (two retries racing with
    one Idempotency-Key, a reference drawn twice) rolls back and goes again,
    when the replays are found. With `audit`, each new referral's "create"
    record is written in the same transaction (a replay writes none).
    """
    fingerprints = [body_hash(i.referral) for i in intakes]
    name_keys = [domain.name_key(i.referral.resident.name) for i in intakes]
    for _ in range(3):
        async with uow:
            results: list = [None] * len(intakes)
            stored = await _by_idempotency_keys(uow, intakes)
            fresh: list[int] = []
            first_with_key: dict[tuple[str, str], int] = {}
            for index, intake in enumerate(intakes):
                key = (intake.by.subject, intake.idempotency_key)
                if intake.idempotency_key is None:
                    fresh.append(index)
                elif key in stored:
                    referral_id, stored_hash, erased_at, reference = stored[key]
                    results[index] = _anonymised(reference, erased_at) if erased_at is not None \
                        else _replay_or_refuse(referral_id, stored_hash, fingerprints[index])
                elif key in first_with_key:
                    results[index] = ("same-as", first_with_key[key])
                else:
                    first_with_key[key] = index
                    fresh.append(index)
            now = uow.now()
            earlier = await _earlier_open_requests(uow, [intakes[i].referral for i in fresh],
                                                   keys=[name_keys[i] for i in fresh])
            referral_rows, request_rows, audit_rows = [], [], []
            # Referrals taken earlier in this batch, by name key: the same person twice in one batch
            # (is_same_person needs equal name keys, so only those with the same key are compared).
            taken_so_far: dict[str, list[tuple[ReferralIn, dict[str, str]]]] = {}
            for index, open_before in zip(fresh, earlier):
                intake = intakes[index]
                same_name = taken_so_far.setdefault(name_keys[index], [])
                for previous, previous_requests in same_name:
                    if _same_resident(previous, intake.referral):
                        for request_type, request_id in previous_requests.items():
                            open_before.setdefault(request_type, request_id)
                row, rows = _new_referral_rows(intake, fingerprint=fingerprints[index], now=now, earlier=open_before)
                same_name.append((intake.referral, {r["type"]: r["id"] for r in rows}))
                referral_rows.append(row)
                request_rows += rows
                out = _taken(intake.referral, row, rows)
                with tracing.continued(intake.traceparent, intake.tracestate):
                    _publish_received_rows(uow, row, rows, topics=topics, backfilled=intake.backfilled)
                results[index] = (out, False)
                if audit is not None:
                    audit_rows += audit.rows(by=intake.by, action="create", resource="referral", ids=[out.id],
                                             request_id=intake.request_id, at=now)
            try:
                # Stored sealed: the rows above stay in clear for the answer and the events.
                await uow.insert_rows(referrals, [_sealed(row, uow.keyring) for row in referral_rows])
                await uow.insert_rows(requests, [_sealed_request(row, uow.keyring) for row in request_rows])
                if audit is not None:
                    await uow.insert_rows(audit.table, audit_rows)
                await uow.commit()
            except IntegrityError:
                continue
            for index, result in enumerate(results):
                if isinstance(result, tuple) and result[0] == "same-as":
                    first = results[result[1]][0]
                    same = fingerprints[index] == fingerprints[result[1]]
                    results[index] = (first, True) if same else _key_reused()
                elif isinstance(result, str):  # a stored referral to replay
                    results[index] = (Taken.of(await _load(uow, result)), True)
            return results
    raise Conflict("could not store the referrals; please retry")


class IntakeQueue:
    """Referrals posted at the same moment share one transaction (group commit).

    While one batch is being written the next gathers, so under load the
    database does one commit for many referrals; alone, a referral is written
    at once. Each caller still gets its 201 only after its commit.
    """

    def __init__(self, *, uow_factory, topics: Topics, max_batch: int = 100, audit: AuditLog | None = None):
        self.uow_factory = uow_factory
        self.topics = topics
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
                results = await take_referrals(
                    self.uow_factory(), intakes=[i for i, _ in batch], topics=self.topics, audit=self.audit,
                )
            except Exception as error:  # the database is down, say: every caller hears it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)


async def get_referral(uow: UnitOfWork, referral_id: str) -> ReferralOut:
    """A referral by its id, or by its reference (what a resident quotes)."""
    async with uow:
        reference = domain.normalise_reference(referral_id)
        if domain.looks_like_reference(reference):
            found = await uow.session.scalar(select(referrals.c.id).where(referrals.c.reference == reference))
            if found is None:
                raise NotFound(f"no referral with the reference {reference}")
            referral_id = found
        return await _load(uow, referral_id)


async def search_referrals(
    uow: UnitOfWork, *, reference: str | None = None, postcode: str | None = None,
    phone: str | None = None, name: str | None = None, date_of_birth: date | None = None, limit: int = 50,
) -> list[dict]:
    """Referrals matching every criterion given, newest first (a date of birth is compared once opened: it has no index)."""
    keyring = uow.keyring
    query = select(referrals).order_by(referrals.c.received_at.desc()).limit(limit)
    if reference:
        query = query.where(referrals.c.reference == domain.normalise_reference(reference))
    # A blind index under the current key, or the previous one while the index key is rotated (crypto.Keyring).
    if postcode:
        query = query.where(referrals.c.postcode_index.in_(keyring.blind_indexes("postcode", postcode)))
    if phone:
        query = query.where(referrals.c.phone_index.in_(keyring.blind_indexes("phone", phone)))
    if name:
        # Every word of the name given, in any order, whole words only: 'smith' finds 'Jo Smith', 'smi' does not.
        for word in domain.name_key(name).split():
            query = query.where(or_(*(
                referrals.c.name_words.like(f"%{index}%") for index in keyring.blind_indexes("name-word", word)
            )))
    async with uow:
        rows = [_opened(r, keyring) for r in (await uow.session.execute(query)).mappings()]
        if date_of_birth is not None:
            rows = [r for r in rows if r["date_of_birth"] == date_of_birth]
        types: dict[str, list[str]] = {}
        if rows:
            for referral_id, request_type in (
                await uow.session.execute(
                    select(requests.c.referral_id, requests.c.type)
                    .where(requests.c.referral_id.in_([r["id"] for r in rows]))
                    .order_by(requests.c.position)
                )
            ).all():
                types.setdefault(referral_id, []).append(request_type)
    return [
        {
            "id": r["id"], "reference": r["reference"], "status": r["status"], "received_at": r["received_at"],
            "name": r["name"], "postcode": r["postcode"], "request_types": types.get(r["id"], []),
        }
        for r in rows
    ]


async def amend_referral(
    uow: UnitOfWork, *, referral_id: str, amendment: ReferralAmendment, by: Principal, topics: Topics,
) -> ReferralOut:
    async with uow:
        current = await _row(uow, referral_id)
        if current["erased_at"] is not None:
            raise Conflict("the resident's personal data was erased; take a new referral instead")
        if current["status"] != domain.OPEN:
            raise Conflict(f"referral is {current['status']}; only an open referral can be amended")
        changes: dict = {}
        if amendment.resident is not None:
            given = amendment.resident.model_dump(exclude_unset=True)
            for column, value in _resident_columns(given).items():
                if current[column] != value:
                    changes[column] = value
        if amendment.consent is not None and amendment.consent.model_dump(mode="json") != current["consent"]:
            changes["consent"] = amendment.consent.model_dump(mode="json")
        if amendment.referrer is not None and amendment.referrer.model_dump(mode="json") != current["referrer"]:
            changes["referrer"] = amendment.referrer.model_dump(mode="json")
        if not changes:
            return await _load(uow, referral_id)
        now = uow.now()
        values = {c: v for c, v in changes.items() if c not in PERSONAL_FIELDS}
        if len(values) < len(changes):  # the resident or referrer changed: seal them again, with their indexes
            personal = {field: changes.get(field, current[field]) for field in PERSONAL_FIELDS}
            values.update(_sealed_personal(personal, uow.keyring))
        await uow.session.execute(
            update(referrals)
            .where(referrals.c.id == referral_id)
            .values(**values, updated_at=now, version=current["version"] + 1)
        )
        changed = sorted({_FIELD_OF_COLUMN.get(c, c) for c in changes})
        await _record_change(uow, referral_id=referral_id, by=by, kind="amended", fields=changed, note=amendment.note)
        out = await _load(uow, referral_id)
        uow.publish(
            ReferralAmendedV1(
                referral_id=out.id, reference=out.reference, amended_at=now, changed=changed,
                address_changed=any(f.startswith("address") for f in changed),
                resident=_resident_event(out), consent_to_share=out.consent.to_share,
            ),
            topic=topics.referrals,
        )
        await uow.commit()
        return out


async def cancel_requests(
    uow: UnitOfWork, *, referral_id: str, request_id: str | None, cancellation: Cancellation,
    by: Principal, topics: Topics,
) -> ReferralOut:
    """Cancel one request, or (no request id) every open request and the referral."""
    async with uow:
        current = await _row(uow, referral_id)
        query = select(requests).where(requests.c.referral_id == referral_id)
        if request_id is not None:
            query = query.where(requests.c.id == request_id)
        targets = (await uow.session.execute(query)).mappings().all()
        if request_id is not None and not targets:
            raise NotFound(f"no request {request_id} on referral {referral_id}")
        open_targets = [r for r in targets if r["status"] == domain.OPEN]
        if not open_targets:
            raise Conflict("nothing open to cancel: " + ", ".join(f"{r['type']} is {r['status']}" for r in targets))
        now = uow.now()
        await uow.session.execute(
            update(requests)
            .where(requests.c.id.in_([r["id"] for r in open_targets]))
            .values(status=domain.CANCELLED, cancel_reason=cancellation.reason, cancelled_at=now)
        )
        values = {"updated_at": now, "version": current["version"] + 1, **await _closing(uow, referral_id, at=now)}
        await uow.session.execute(update(referrals).where(referrals.c.id == referral_id).values(**values))
        await _record_change(
            uow, referral_id=referral_id, by=by, kind="cancelled",
            fields=[f"requests.{r['type']}" for r in open_targets], note=cancellation.note,
        )
        for request in open_targets:
            event = RequestCancelledV1(
                referral_id=referral_id, request_id=request["id"], request_type=request["type"],
                reason=cancellation.reason, cancelled_at=now,
            )
            uow.publish(event, topic=topics.referrals)
            uow.publish(event, topic=topics.request_stats)
        await uow.commit()
        return await _load(uow, referral_id)


async def record_progress(uow: UnitOfWork, event: AssignmentStatusChangedV1) -> None:
    """Fulfilment moved a request on: note where it is, and close it (and its referral) when the hub closed it.

    In the consumer's transaction (the consumer commits). Events of one referral
    arrive in order (they are keyed by it); one older than what is held (a
    republish) is ignored.
    """
    request_id = str(event.request_id)
    row = (await uow.session.execute(
        select(requests.c.status, requests.c.progress_at, requests.c.referral_id).where(requests.c.id == request_id)
    )).first()
    if row is None:
        log.warning("status of request %s, which referrals never took; ignored", request_id)
        return
    if row.progress_at is not None and event.changed_at < row.progress_at:
        return
    status = domain.request_status_after(event.status, current=row.status)
    values = {"progress": event.status, "hub": event.hub, "progress_at": event.changed_at,
              "outcome": event.outcome, "status": status}
    if status != row.status:
        values["closed_at" if status == domain.CLOSED else "cancelled_at"] = event.closed_at or event.changed_at
    await uow.session.execute(update(requests).where(requests.c.id == request_id).values(**values))
    if status != row.status:
        referral = await uow.session.scalar(select(referrals.c.status).where(referrals.c.id == row.referral_id))
        if referral == domain.OPEN:
            closing = await _closing(uow, row.referral_id, at=values.get("closed_at") or values.get("cancelled_at"))
            if closing:
                await uow.session.execute(update(referrals).where(referrals.c.id == row.referral_id).values(**closing))


async def _closing(uow: UnitOfWork, referral_id: str, *, at) -> dict:
    """The referral's new status and `closed_at` if none of its requests is open any more; else {}."""
    statuses = list(await uow.session.scalars(select(requests.c.status).where(requests.c.referral_id == referral_id)))
    status = domain.referral_status(statuses)
    return {} if status == domain.OPEN else {"status": status, "closed_at": at}


async def publish_state_page(uow: UnitOfWork, after: str | None, limit: int, *, topics: Topics) -> tuple[str | None, int]:
    """`kent-together republish referrals`: each request as it is now, for reporting (no personal data).

    A `request.received` for every request, and a `request.cancelled` for those
    cancelled, in request id order after `after`; returns the last id and how many.
    """
    query = (select(requests.c.id, requests.c.referral_id, requests.c.type, requests.c.urgency, requests.c.status,
                    requests.c.duplicate_of, requests.c.cancel_reason, requests.c.cancelled_at,
                    referrals.c.channel, referrals.c.district, referrals.c.received_at)
             .join(referrals, referrals.c.id == requests.c.referral_id).order_by(requests.c.id).limit(limit))
    if after is not None:
        query = query.where(requests.c.id > after)
    rows = (await uow.session.execute(query)).all()
    for row in rows:
        uow.publish(RequestReceivedV1(
            referral_id=row.referral_id, request_id=row.id, request_type=row.type, channel=row.channel,
            postcode_district=row.district, urgency=row.urgency, received_at=row.received_at,
            possible_duplicate=row.duplicate_of is not None,
        ), topic=topics.request_stats, key=row.referral_id)
        if row.status == domain.CANCELLED and row.cancelled_at is not None:
            uow.publish(RequestCancelledV1(
                referral_id=row.referral_id, request_id=row.id, request_type=row.type,
                reason=row.cancel_reason or "unknown", cancelled_at=row.cancelled_at,
            ), topic=topics.request_stats, key=row.referral_id)
    return (rows[-1].id if rows else after), len(rows)


async def list_request_types(uow: UnitOfWork) -> list[dict]:
    async with uow:
        rows = await uow.session.execute(select(request_types).order_by(request_types.c.position, request_types.c.id))
        return [dict(r) for r in rows.mappings()]


async def add_request_type(uow: UnitOfWork, *, request_type: RequestTypeIn) -> dict:
    async with uow:
        exists = await uow.session.scalar(select(request_types.c.id).where(request_types.c.id == request_type.id))
        if exists:
            raise Conflict(f"request type {request_type.id!r} exists already")
        position = (await uow.session.scalar(select(request_types.c.position).order_by(request_types.c.position.desc()).limit(1))) or 0
        row = {**request_type.model_dump(), "active": True, "position": position + 1}
        await uow.session.execute(insert(request_types).values(**row))
        await uow.commit()
        return row


async def change_request_type(uow: UnitOfWork, *, type_id: str, patch: RequestTypePatch) -> dict:
    async with uow:
        values = patch.model_dump(exclude_unset=True)
        if values:
            result = await uow.session.execute(update(request_types).where(request_types.c.id == type_id).values(**values))
            if result.rowcount == 0:
                raise NotFound(f"no request type {type_id!r}")
        row = (await uow.session.execute(select(request_types).where(request_types.c.id == type_id))).mappings().first()
        if row is None:
            raise NotFound(f"no request type {type_id!r}")
        await uow.commit()
        return dict(row)


async def seed_request_types(uow: UnitOfWork) -> None:
    """The default taxonomy, added where missing (administrators may extend it)."""
    async with uow:
        existing = set(await uow.session.scalars(select(request_types.c.id)))
        rows = [
            {"id": type_id, "label": label, "description": description, "active": True, "position": position}
            for position, (type_id, label, description) in enumerate(domain.DEFAULT_REQUEST_TYPES)
            if type_id not in existing
        ]
        if rows:
            await uow.session.execute(insert(request_types), rows)
        await uow.commit()


# --- helpers: never commit ------------------------------------------------------

_FIELD_OF_COLUMN = {
    "address_line1": "address.line1", "address_line2": "address.line2",
    "town": "address.town", "postcode": "address.postcode",
}


PERSONAL_FIELDS = (
    "name", "date_of_birth", "phone", "email", "address_line1", "address_line2", "town", "postcode",
    "contact_preference", "vulnerabilities", "language", "referrer",
)
"""A referral's fields about the resident and referrer: stored as one sealed JSON object (`personal`)."""


def _sealed(row: dict, keyring: Keyring) -> dict:
    """A referral row (fields in clear, as built and read here) as stored: personal fields sealed, indexes beside."""
    stored = {k: v for k, v in row.items() if k not in PERSONAL_FIELDS and k != "name_key"}
    stored.update(_sealed_personal(row, keyring))
    return stored


def _sealed_personal(personal: dict, keyring: Keyring) -> dict:
    """The `personal` column and the blind indexes made from the same fields: one encryption, a few HMACs."""
    return {
        "personal": keyring.seal_json({field: personal[field] for field in PERSONAL_FIELDS}),
        **_blind_indexes(personal, keyring),
        "district": privacy.outward_code(personal["postcode"]),
    }


def _blind_indexes(personal: dict, keyring: Keyring) -> dict:
    """The lookup columns of a resident (fields in clear), with the current blind-index key."""
    name_key = personal.get("name_key") or domain.name_key(personal["name"])  # intake's row has it already
    return {
        "name_index": keyring.blind_index("name", name_key),
        "name_words": " ".join(keyring.blind_index("name-word", word) for word in name_key.split()),
        "phone_index": keyring.blind_index("phone", personal["phone"]) if personal["phone"] else None,
        "postcode_index": keyring.blind_index("postcode", personal["postcode"]),
    }


def _rekeyed_indexes(row, keyring: Keyring) -> dict:
    """`kent-together rekey`: a stored referral's blind indexes made again with the current key.

    An erased referral keeps its erased markers (`erase_resident`): there is nothing to look up.
    """
    if row["erased_at"] is not None:
        return {}
    return _blind_indexes(keyring.open_json(row["personal"]), keyring)


REKEY_INDEXES = (
    DerivedColumns(
        table=referrals, source="personal", reads=("erased_at",),
        columns=("name_index", "name_words", "phone_index", "postcode_index"), compute=_rekeyed_indexes,
    ),
)
"""What `kent-together rekey` recomputes besides re-sealing (shared/rekey.py): the blind indexes."""


def _opened(row, keyring: Keyring) -> dict:
    """A stored referral row with its personal fields opened, as the code here reads them."""
    personal = keyring.open_json(row["personal"])
    if personal["date_of_birth"] is not None:
        personal["date_of_birth"] = date.fromisoformat(personal["date_of_birth"])
    return {**row, **personal}


def _sealed_request(row: dict, keyring: Keyring) -> dict:
    return keyring.seal_field(row, "details", into="sealed_details")


def _opened_request(row, keyring: Keyring) -> dict:
    return keyring.open_field(row, "sealed_details", as_="details")


def _resident_columns(resident: dict) -> dict:
    """Resident fields (as given) as referral columns."""
    columns = {k: v for k, v in resident.items() if k != "address"}
    if "vulnerabilities" in columns and columns["vulnerabilities"] is None:
        columns["vulnerabilities"] = []
    address = resident.get("address")
    if address is not None:
        columns.update(
            address_line1=address["line1"], address_line2=address.get("line2"),
            town=address.get("town"), postcode=address["postcode"],
        )
    return columns


async def _by_idempotency_keys(uow: UnitOfWork, intakes: list[Intake]) -> dict[tuple[str, str], tuple[str, str]]:
    """Referrals already stored under these (client, key) pairs: {(client, key): (id, body hash)}."""
    wanted = {(i.by.subject, i.idempotency_key) for i in intakes if i.idempotency_key}
    if not wanted:
        return {}
    rows = await uow.session.execute(
        select(referrals.c.idempotency_client, referrals.c.idempotency_key, referrals.c.id, referrals.c.body_hash,
               referrals.c.erased_at, referrals.c.reference)
        .where(referrals.c.idempotency_key.in_({key for _, key in wanted}))
    )
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows if (r[0], r[1]) in wanted}


class ReferralAnonymised(Conflict):
    slug, title = "referral-anonymised", "The referral under this Idempotency-Key was anonymised"


def _anonymised(reference: str, erased_at) -> ReferralAnonymised:
    """A retry of a referral whose resident's details were erased since: what happened, not "another body"."""
    return ReferralAnonymised(
        f"this Idempotency-Key took referral {reference}, whose resident's personal data was erased on "
        f"{erased_at:%d %B %Y at %H:%M} UTC (on request or at the end of retention): it cannot be replayed. "
        "If help is still needed, take a new referral with a new key.", reference=reference,
        erased_at=erased_at.isoformat())


def _key_reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused("this Idempotency-Key was used with a different body; use a new key for a new referral")


def _replay_or_refuse(referral_id: str, stored_hash: str, fingerprint: str):
    return referral_id if stored_hash == fingerprint else _key_reused()


def _new_referral_rows(intake: Intake, *, fingerprint: str, now, earlier: dict[str, str]) -> tuple[dict, list[dict]]:
    """The referral row and its request rows, with duplicates linked to earlier open requests."""
    referral, by = intake.referral, intake.by
    received_at = referral.received_at or now
    referral_id = new_id()
    request_rows = [
        {
            "id": new_id(),
            "referral_id": referral_id,
            "position": position,
            "type": request.type,
            "details": request.details,
            "needed_by": request.needed_by,
            "urgency": request.urgency or domain.urgency_for(needed_by=request.needed_by, received=received_at),
            "status": domain.OPEN,
            "duplicate_of": earlier.get(request.type),
        }
        for position, request in enumerate(referral.requests)
    ]
    row = {
        "id": referral_id,
        "reference": domain.make_reference(),
        "channel": referral.channel,
        "status": domain.OPEN,
        "received_at": received_at,
        "created_at": now,
        "updated_at": now,
        "created_by": by.subject,
        "created_by_role": by.role,
        "name_key": domain.name_key(referral.resident.name),
        **_resident_columns(referral.resident.model_dump()),
        "referrer": referral.referrer.model_dump(mode="json") if referral.referrer else None,
        "consent": referral.consent.model_dump(mode="json"),
        "possible_duplicate": any(r["duplicate_of"] for r in request_rows),
        "idempotency_client": by.subject if intake.idempotency_key else None,
        "idempotency_key": intake.idempotency_key,
        "body_hash": fingerprint,
        "version": 1,
    }
    return row, request_rows


async def _earlier_open_requests(uow: UnitOfWork, batch: list[ReferralIn],
                                 keys: list[str] | None = None) -> list[dict[str, str]]:
    """For each referral, the open requests of the same person taken earlier, by type: {type: request id}.

    Earlier means stored already (the caller matches those earlier in its batch). `keys`:
    the referrals' name keys, if the caller has them.
    """
    if not batch:
        return []
    keyring = uow.keyring
    if keys is None:
        keys = [domain.name_key(r.resident.name) for r in batch]
    indexes = {index for key in keys for index in keyring.blind_indexes("name", key)}  # both keys, while rotated
    # People with these names first (an indexed lookup that is usually empty, so
    # almost nothing to open), then their open requests: one join would let the
    # planner scan every open request.
    people = [
        _opened(p, keyring) for p in (
            await uow.session.execute(
                select(referrals.c.id, referrals.c.personal)
                .where(referrals.c.name_index.in_(indexes), referrals.c.status == domain.OPEN)
                .order_by(referrals.c.received_at)
            )
        ).mappings()
    ]
    matches = [[p["id"] for p in people if _same_person(referral, p)] for referral in batch]
    open_requests: dict[str, dict[str, str]] = {}
    matched = {referral_id for ids in matches for referral_id in ids}
    if matched:
        rows = await uow.session.execute(
            select(requests.c.referral_id, requests.c.id, requests.c.type)
            .where(requests.c.referral_id.in_(matched), requests.c.status == domain.OPEN)
        )
        for row in rows:
            open_requests.setdefault(row.referral_id, {}).setdefault(row.type, row.id)
    result = []
    for index, referral in enumerate(batch):
        earlier: dict[str, str] = {}
        for referral_id in matches[index]:
            for request_type, request_id in open_requests.get(referral_id, {}).items():
                earlier.setdefault(request_type, request_id)
        result.append(earlier)
    return result


def _same_resident(a: ReferralIn, b: ReferralIn) -> bool:
    ra, rb = a.resident, b.resident
    return domain.is_same_person(
        name_a=ra.name, dob_a=ra.date_of_birth, postcode_a=ra.address.postcode, phone_a=ra.phone,
        name_b=rb.name, dob_b=rb.date_of_birth, postcode_b=rb.address.postcode, phone_b=rb.phone,
    )


def _same_person(referral: ReferralIn, stored) -> bool:
    resident = referral.resident
    return domain.is_same_person(
        name_a=resident.name, dob_a=resident.date_of_birth, postcode_a=resident.address.postcode,
        phone_a=resident.phone, name_b=stored["name"], dob_b=stored["date_of_birth"], postcode_b=stored["postcode"],
        phone_b=stored["phone"],
    )


async def _row(uow: UnitOfWork, referral_id: str):
    row = (await uow.session.execute(select(referrals).where(referrals.c.id == referral_id))).mappings().first()
    if row is None:
        raise NotFound(f"no referral {referral_id}")
    return _opened(row, uow.keyring)


async def _load(uow: UnitOfWork, referral_id: str) -> ReferralOut:
    row = await _row(uow, referral_id)
    request_rows = [
        _opened_request(r, uow.keyring) for r in (
            await uow.session.execute(
                select(requests).where(requests.c.referral_id == referral_id).order_by(requests.c.position)
            )
        ).mappings()
    ]
    return _referral_out(row, request_rows)


async def _record_change(uow: UnitOfWork, *, referral_id: str, by: Principal, kind: str, fields: list[str], note: str | None):
    await uow.session.execute(
        insert(referral_changes).values(
            referral_id=referral_id, at=uow.now(), by=by.subject, kind=kind, fields=fields,
            sealed_note=uow.keyring.seal_text(note),
        )
    )


def _referral_out(row, request_rows) -> ReferralOut:
    return ReferralOut(
        id=row["id"], reference=row["reference"], channel=row["channel"], status=row["status"],
        received_at=row["received_at"], created_at=row["created_at"], updated_at=row["updated_at"],
        resident={
            "name": row["name"], "date_of_birth": row["date_of_birth"], "phone": row["phone"],
            "email": row["email"],
            "address": {
                "line1": row["address_line1"], "line2": row["address_line2"],
                "town": row["town"], "postcode": row["postcode"],
            },
            "contact_preference": row["contact_preference"], "vulnerabilities": row["vulnerabilities"] or [],
            "language": row["language"],
        },
        referrer=row["referrer"], consent=row["consent"],
        requests=[
            {
                "id": r["id"], "type": r["type"], "details": r["details"], "needed_by": r["needed_by"],
                "urgency": r["urgency"], "status": r["status"], "duplicate_of": r["duplicate_of"],
                "cancel_reason": r.get("cancel_reason"), "progress": r.get("progress"), "hub": r.get("hub"),
                "progress_at": r.get("progress_at"), "outcome": r.get("outcome"), "closed_at": r.get("closed_at"),
            }
            for r in request_rows
        ],
        possible_duplicate=row["possible_duplicate"], version=row["version"], closed_at=row.get("closed_at"),
        erased_at=row.get("erased_at"),
    )


def _taken(referral: ReferralIn, row: dict, request_rows: list[dict]) -> Taken:
    """The 201 body of a referral just taken, as `_referral_out(row, request_rows).model_dump_json()` writes it.

    The intake hot path: one pydantic-core `to_json` over the validated body and the
    stored rows' generated fields, no ReferralOut model built and dumped (a unit test
    checks the bytes are the model's). The resident's fields are read from the body,
    as given; the rows give ids, reference, times, urgencies and duplicates.
    """
    resident = referral.resident
    address = resident.address
    return Taken(row["id"], pydantic_core.to_json({
        "id": row["id"], "reference": row["reference"], "channel": row["channel"], "status": row["status"],
        "received_at": row["received_at"], "created_at": row["created_at"], "updated_at": row["updated_at"],
        "resident": {
            "name": resident.name, "date_of_birth": resident.date_of_birth, "phone": resident.phone,
            "email": resident.email,
            "address": {
                "line1": address.line1, "line2": address.line2, "town": address.town, "postcode": address.postcode,
            },
            "contact_preference": resident.contact_preference, "vulnerabilities": resident.vulnerabilities or [],
            "language": resident.language,
        },
        "referrer": referral.referrer, "consent": referral.consent,
        "requests": [
            {
                "id": r["id"], "type": r["type"], "details": r["details"], "needed_by": r["needed_by"],
                "urgency": r["urgency"], "status": r["status"], "duplicate_of": r["duplicate_of"],
                "cancel_reason": None, "progress": None, "hub": None, "progress_at": None, "outcome": None,
                "closed_at": None,
            }
            for r in request_rows
        ],
        "possible_duplicate": row["possible_duplicate"], "version": row["version"], "closed_at": None,
        "erased_at": None,
    }))


def _resident_event(out: ReferralOut) -> ResidentV1:
    r = out.resident
    return ResidentV1(
        name=r.name, date_of_birth=r.date_of_birth, phone=r.phone, email=r.email,
        address=AddressV1(**r.address.model_dump()), contact_preference=r.contact_preference,
        vulnerabilities=r.vulnerabilities, language=r.language,
    )


def _publish_received_rows(uow: UnitOfWork, row: dict, request_rows: list[dict], *, topics: Topics,
                           backfilled: bool = False) -> None:
    """What `_publish_received` publishes, made straight from the rows just built (the intake hot path).

    The same events, byte for byte but ids and times: tests/unit/referrals checks
    both against the contracts.
    """
    referral_id, received_at, channel = row["id"], row["received_at"], row["channel"]
    referrer = row["referrer"]
    uow.publish_data(
        ReferralReceivedV1.type, subject=referral_id, topic=topics.referrals,
        data={
            "referral_id": referral_id, "reference": row["reference"], "channel": channel,
            "received_at": received_at,
            "resident": {
                "name": row["name"], "date_of_birth": row["date_of_birth"], "phone": row["phone"],
                "email": row["email"],
                "address": {
                    "line1": row["address_line1"], "line2": row["address_line2"], "town": row["town"],
                    "postcode": row["postcode"],
                },
                "contact_preference": row["contact_preference"], "vulnerabilities": row["vulnerabilities"] or [],
                "language": row["language"],
            },
            "referrer": None if referrer is None else {
                "name": referrer["name"], "organisation": referrer.get("organisation"),
                "relationship": referrer.get("relationship"), "phone": referrer.get("phone"),
                "email": referrer.get("email"),
            },
            "consent_to_share": row["consent"]["to_share"],
            "requests": [
                {
                    "request_id": r["id"], "type": r["type"], "details": r["details"], "needed_by": r["needed_by"],
                    "urgency": r["urgency"], "duplicate_of": r["duplicate_of"],
                }
                for r in request_rows
            ],
            "backfilled": backfilled,
        },
    )
    district = outward_code(row["postcode"])
    for r in request_rows:
        uow.publish_data(
            RequestReceivedV1.type, subject=referral_id, topic=topics.request_stats, key=referral_id,
            data={
                "referral_id": referral_id, "request_id": r["id"], "request_type": r["type"], "channel": channel,
                "postcode_district": district, "urgency": r["urgency"], "received_at": received_at,
                "possible_duplicate": r["duplicate_of"] is not None,
            },
        )


def _publish_received(uow: UnitOfWork, out: ReferralOut, *, topics: Topics, backfilled: bool = False) -> None:
    uow.publish(
        ReferralReceivedV1(
            referral_id=out.id, reference=out.reference, channel=out.channel, received_at=out.received_at,
            resident=_resident_event(out),
            referrer=ReferrerV1(**out.referrer.model_dump()) if out.referrer else None,
            consent_to_share=out.consent.to_share,
            backfilled=backfilled,
            requests=[
                RequestV1(
                    request_id=r.id, type=r.type, details=r.details, needed_by=r.needed_by,
                    urgency=r.urgency, duplicate_of=r.duplicate_of,
                )
                for r in out.requests
            ],
        ),
        topic=topics.referrals,
    )
    district = outward_code(out.resident.address.postcode)
    for r in out.requests:
        uow.publish(
            RequestReceivedV1(
                referral_id=out.id, request_id=r.id, request_type=r.type, channel=out.channel,
                postcode_district=district, urgency=r.urgency, received_at=out.received_at,
                possible_duplicate=r.duplicate_of is not None,
            ),
            topic=topics.request_stats,
            key=out.id,
        )


# --- erasure and retention --------------------------------------------------------------

async def erase_resident(
    uow: UnitOfWork, *, referral_id: str, by: Principal, topics: Topics, reason: str = "request",
) -> ReferralOut:
    """Erase the resident's personal data from this referral, its history and the outbox; tell fulfilment.

    Kept: ids, the reference, channel, dates, request types, urgencies and statuses,
    and the postcode's outward code, so every count stays as it was. Idempotent.
    """
    async with uow:
        row = await _row(uow, referral_id)
        if row["erased_at"] is not None:
            return await _load(uow, referral_id)
        now = uow.now()
        erased = {
            "name": ERASED, "date_of_birth": None, "phone": None, "email": None, "address_line1": ERASED,
            "address_line2": None, "town": None, "postcode": privacy.outward_code(row["postcode"]),
            "contact_preference": None, "vulnerabilities": [], "language": None, "referrer": None,
        }
        await uow.session.execute(
            update(referrals).where(referrals.c.id == referral_id).values(
                personal=uow.keyring.seal_json(erased), name_index=ERASED, name_words="", phone_index=None,
                postcode_index=None, body_hash=None, erased_at=now, updated_at=now, version=row["version"] + 1,
            )
        )
        await uow.session.execute(
            update(requests).where(requests.c.referral_id == referral_id).values(sealed_details=None)
        )
        await uow.session.execute(
            update(referral_changes).where(referral_changes.c.referral_id == referral_id).values(sealed_note=None)
        )
        await _record_change(uow, referral_id=referral_id, by=by, kind="erased", fields=[reason], note=None)
        # Events still held for republishing carry the resident too: erase them in place.
        outbox = uow.outbox
        held = (await uow.session.execute(
            select(outbox.c.id, outbox.c.payload).where(outbox.c.key == referral_id)
        )).all()
        for outbox_id, payload in held:
            redacted = privacy.redact_stored_event(payload, uow.keyring)
            if redacted != payload:
                await uow.session.execute(update(outbox).where(outbox.c.id == outbox_id).values(payload=redacted))
        uow.publish(ResidentErasedV1(referral_id=referral_id, erased_at=now, reason=reason), topic=topics.referrals)
        await uow.commit()
        return await _load(uow, referral_id)


RETENTION = Principal(subject="retention", role="admin", scopes=frozenset())
"""Who anonymises cases at the end of the retention period: the service itself."""


async def anonymise_expired(
    uow_factory, *, topics: Topics, now, closed_for: timedelta, kept_for: timedelta, batch: int = 200,
    audit: AuditLog | None = None,
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
    cutoff = now - closed_for
    async with uow_factory() as uow:
        ids = list((await uow.session.scalars(
            select(referrals.c.id).where(
                referrals.c.erased_at.is_(None),
                referrals.c.status != domain.OPEN,
                func.coalesce(referrals.c.closed_at, referrals.c.updated_at) < cutoff,
                referrals.c.created_at < cutoff,
            ).order_by(referrals.c.received_at).limit(batch)
        )).all())
    for referral_id in ids:
        uow = uow_factory()
        async with (audit.changing(uow, by=RETENTION, action="anonymise", resource="referral", ids=[referral_id])
                    if audit is not None else contextlib.nullcontext(uow)) as uow:
            await erase_resident(uow, referral_id=referral_id, by=RETENTION, topics=topics, reason="retention")
    return ids


async def flag_for_review(uow: UnitOfWork, *, now, kept_for: timedelta) -> int:
    """Mark the open referrals taken more than `kept_for` ago for an administrator's review; return how many."""
    async with uow:
        result = await uow.session.execute(
            update(referrals).where(
                referrals.c.erased_at.is_(None), referrals.c.status == domain.OPEN,
                referrals.c.retention_review_at.is_(None), referrals.c.created_at < now - kept_for,
            ).values(retention_review_at=now)
        )
        await uow.commit()
    return result.rowcount or 0


async def retention_review(uow: UnitOfWork, *, limit: int = 500) -> list[dict]:
    """The open referrals past retention, oldest first: each needs a person to close, cancel or erase it."""
    async with uow:
        rows = (await uow.session.execute(
            select(referrals.c.id, referrals.c.reference, referrals.c.received_at, referrals.c.created_at,
                   referrals.c.retention_review_at, referrals.c.district)
            .where(referrals.c.retention_review_at.is_not(None), referrals.c.status == domain.OPEN,
                   referrals.c.erased_at.is_(None))
            .order_by(referrals.c.created_at).limit(limit)
        )).mappings().all()
    return [dict(r) for r in rows]


class RetentionScheduler(StopsBetweenRounds):
    """Anonymises expired cases now and then, in the service process (safe in several: erasure is idempotent)."""

    def __init__(self, *, uow_factory, topics: Topics, closed_for: timedelta, kept_for: timedelta,
                 poll_seconds: float, audit=None):
        self.uow_factory = uow_factory
        self.topics = topics
        self.closed_for = closed_for
        self.kept_for = kept_for
        self.poll_seconds = poll_seconds
        self.audit = audit

    async def run_once(self, *, now=None) -> list[str]:
        from shared.db import utcnow

        anonymised = []
        while True:
            at = now or utcnow()
            ids = await anonymise_expired(self.uow_factory, topics=self.topics, now=at,
                                          closed_for=self.closed_for, kept_for=self.kept_for, audit=self.audit)
            anonymised += ids
            if len(ids) < 200:
                flagged = await flag_for_review(self.uow_factory(), now=at, kept_for=self.kept_for)
                if flagged:
                    log.warning("retention: %d open referrals are past retention and need review "
                                "(GET /v1/retention/review); none was anonymised", flagged)
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


async def find_duplicates(uow: UnitOfWork, *, referral: ReferralIn) -> list[dict]:
    """The open requests this referral would be linked to as duplicates if taken now, one per type it asks for.

    What intake does when it stores a referral, asked first: an adviser can tell
    the caller "you already have a food request open from 2 days ago" before saving.
    """
    async with uow:
        [earlier] = await _earlier_open_requests(uow, [referral])
        asked = {request.type for request in referral.requests}
        wanted = {request_id: kind for kind, request_id in earlier.items() if kind in asked}
        if not wanted:
            return []
        rows = (await uow.session.execute(
            select(requests.c.id, requests.c.type, requests.c.urgency, referrals.c.id.label("referral_id"),
                   referrals.c.reference, referrals.c.received_at, referrals.c.channel)
            .select_from(requests.join(referrals, referrals.c.id == requests.c.referral_id))
            .where(requests.c.id.in_(list(wanted)))
        )).mappings().all()
    return sorted(({"type": r["type"], "request_id": r["id"], "referral_id": r["referral_id"],
                    "reference": r["reference"], "received_at": r["received_at"], "channel": r["channel"],
                    "urgency": r["urgency"]} for r in rows), key=lambda d: d["received_at"])
