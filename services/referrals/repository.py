"""Loads and saves `Referral` aggregates: sealing, blind indexes and row mapping live here (shared/sealing.py).

`uow.referrals` (a `Referrals` made per unit of work) is the only code that reads or
writes the referrals' tables for a use case. What it stores is sealed as
`models.sealing` declares; what it answers is in clear. `out(referral)` is the one
shape of a referral an API answer has (ReferralOut's, as plain data): intake's 201 is
`to_json(referral)`, written without building the model (tests/unit/referrals checks
the bytes are the model's).
"""

from __future__ import annotations

from datetime import date

import pydantic_core
from sqlalchemy import bindparam, func, insert, or_, select, update

from services.referrals import domain
from services.referrals.domain import Change, Progress, Referral, Request
from services.referrals.models import (
    referral_changes,
    referrals,
    request_types,
    requests,
    resident_merges,
    sealing,
    tables,
)
from shared.errors import NotFound
from shared.privacy import ERASED, redact_stored_event

_REFERRALS = sealing["referrals"]
_REQUESTS = sealing["requests"]
_CHANGES = sealing["referral_changes"]

_REQUEST_COLUMNS = tuple(Request.__slots__)
_PROGRESS_COLUMNS = ("status", "cancelled_at", "progress", "hub", "progress_at", "outcome", "closed_at", "occurrence")
"""What fulfilment's status events change of a request (`Progress`); a referral's: status and closed_at."""
_ERASED_INDEXES = {"name_index": ERASED, "name_words": "", "phone_index": None, "postcode_index": None}
"""An erased resident's lookup columns: markers nothing matches (rekey leaves them: `indexes_frozen_when`)."""


def out(referral: Referral) -> dict:
    """The referral as the API answers it: ReferralOut's fields, as plain data."""
    p = referral.personal
    return {
        "id": referral.id,
        "reference": referral.reference,
        "channel": referral.channel,
        "status": referral.status,
        "received_at": referral.received_at,
        "created_at": referral.created_at,
        "updated_at": referral.updated_at,
        "resident": resident(p),
        "referrer": p["referrer"],
        "consent": referral.consent,
        "requests": [
            {
                "id": r.id,
                "type": r.type,
                "details": r.details,
                "needed_by": r.needed_by,
                "urgency": r.urgency,
                "status": r.status,
                "duplicate_of": r.duplicate_of,
                "cancel_reason": r.cancel_reason,
                "progress": r.progress,
                "hub": r.hub,
                "progress_at": r.progress_at,
                "outcome": r.outcome,
                "closed_at": r.closed_at,
                "recurrence": r.recurrence,
                "occurrence": r.occurrence,
            }
            for r in referral.requests
        ],
        "possible_duplicate": referral.possible_duplicate,
        "version": referral.version,
        "closed_at": referral.closed_at,
        "erased_at": referral.erased_at,
        "resident_id": referral.resident_id,
    }


def resident(p: dict) -> dict:
    """The resident as the API and the events (ResidentV1) give it: the address nested."""
    return {
        "name": p["name"],
        "date_of_birth": p["date_of_birth"],
        "phone": p["phone"],
        "email": p["email"],
        "address": {
            "line1": p["address_line1"],
            "line2": p["address_line2"],
            "town": p["town"],
            "postcode": p["postcode"],
        },
        "contact_preference": p["contact_preference"],
        "vulnerabilities": p["vulnerabilities"] or [],
        "language": p["language"],
    }


def to_json(referral: Referral) -> bytes:
    """`out(referral)` as ReferralOut's JSON, in one pydantic-core step (the intake hot path)."""
    return pydantic_core.to_json(out(referral))


def _row(referral: Referral) -> dict:
    """The referral's columns, its personal fields in clear (sealed by `_REFERRALS.seal`)."""
    return {
        "id": referral.id,
        "reference": referral.reference,
        "channel": referral.channel,
        "status": referral.status,
        "received_at": referral.received_at,
        "created_at": referral.created_at,
        "updated_at": referral.updated_at,
        "created_by": referral.created_by,
        "created_by_role": referral.created_by_role,
        **referral.personal,
        "district": referral.district,
        "consent": referral.consent,
        "possible_duplicate": referral.possible_duplicate,
        "idempotency_client": referral.idempotency_client,
        "idempotency_key": referral.idempotency_key,
        "body_hash": referral.body_hash,
        "version": referral.version,
        "erased_at": referral.erased_at,
        "closed_at": referral.closed_at,
        "resident_id": referral.resident_id,
    }


def _request_row(referral_id: str, r: Request) -> dict:
    return {
        "referral_id": referral_id,
        "id": r.id,
        "type": r.type,
        "position": r.position,
        "urgency": r.urgency,
        "details": r.details,
        "needed_by": r.needed_by,
        "status": r.status,
        "duplicate_of": r.duplicate_of,
        "cancel_reason": r.cancel_reason,
        "cancelled_at": r.cancelled_at,
        "progress": r.progress,
        "hub": r.hub,
        "progress_at": r.progress_at,
        "outcome": r.outcome,
        "closed_at": r.closed_at,
        "recurrence": r.recurrence,
        "occurrence": r.occurrence,
    }


def _progress_row(r: Request) -> dict:
    return {c: getattr(r, c) for c in _PROGRESS_COLUMNS}


def _referral(row, request_rows, keyring) -> Referral:
    opened = _REFERRALS.open(row, keyring)
    return Referral(
        id=row["id"],
        reference=row["reference"],
        channel=row["channel"],
        received_at=row["received_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        created_by=row["created_by"],
        created_by_role=row["created_by_role"],
        personal={f: opened[f] for f in _REFERRALS.blob.fields},
        consent=row["consent"],
        status=row["status"],
        possible_duplicate=row["possible_duplicate"],
        version=row["version"],
        closed_at=row["closed_at"],
        erased_at=row["erased_at"],
        resident_id=row["resident_id"],
        idempotency_client=row["idempotency_client"],
        idempotency_key=row["idempotency_key"],
        body_hash=row["body_hash"],
        requests=[
            Request(
                **{n: r[n] for n in _REQUEST_COLUMNS if n != "details"}, details=keyring.open_text(r["sealed_details"])
            )
            for r in request_rows
        ],
    )


class Referrals:
    """The referrals of one unit of work."""

    def __init__(self, uow):
        self.uow = uow
        self._loaded: dict[str, tuple[dict, dict[str, dict]]] = {}
        self._progress_loaded: dict[str, tuple[tuple, dict[str, dict]]] = {}
        """What `progress_of` read, by referral id: (status, closed_at) and each request's progress columns."""
        """What was read, by id: the row (clear) and each request's row, so `save` writes only what changed."""

    @property
    def _session(self):
        return self.uow.session

    async def add_all(self, new: list[Referral]) -> None:
        """Store referrals just taken, sealed, in bulk (one COPY per table on PostgreSQL)."""
        keyring = self.uow.keyring
        await self.uow.insert_rows(referrals, [_REFERRALS.seal(_row(r), keyring) for r in new])
        await self.uow.insert_rows(
            requests, [_REQUESTS.seal(_request_row(r.id, q), keyring) for r in new for q in r.requests]
        )

    async def get(self, referral_id: str) -> Referral:
        """A referral by its id; NotFound."""
        row = (await self._session.execute(select(referrals).where(referrals.c.id == referral_id))).mappings().first()
        if row is None:
            raise NotFound(f"no referral {referral_id}")
        request_rows = (
            (
                await self._session.execute(
                    select(requests).where(requests.c.referral_id == referral_id).order_by(requests.c.position)
                )
            )
            .mappings()
            .all()
        )
        referral = _referral(row, request_rows, self.uow.keyring)
        self._loaded[referral.id] = (_row(referral), {q.id: _request_row(referral.id, q) for q in referral.requests})
        return referral

    async def get_by_reference(self, reference: str) -> Referral:
        found = await self._session.scalar(select(referrals.c.id).where(referrals.c.reference == reference))
        if found is None:
            raise NotFound(f"no referral with the reference {reference}")
        return await self.get(found)

    async def of_request(self, request_id: str) -> Referral | None:
        """The referral holding a request, or None if this service never took it."""
        found = await self._session.scalar(select(requests.c.referral_id).where(requests.c.id == request_id))
        return None if found is None else await self.get(found)

    async def progress_of(self, request_ids: set[str]) -> dict[str, Progress]:
        """The progress of the referrals holding these requests, by request id (one read, nothing unsealed).

        Requests this service never took are not in the answer.
        """
        if not request_ids:
            return {}
        owners = select(requests.c.referral_id).where(requests.c.id.in_(request_ids))
        rows = (
            await self._session.execute(
                select(
                    *(requests.c[n] for n in _REQUEST_COLUMNS if n != "details"),
                    requests.c.referral_id,
                    referrals.c.status.label("referral_status"),
                    referrals.c.closed_at.label("referral_closed_at"),
                )
                .join(referrals, referrals.c.id == requests.c.referral_id)
                .where(requests.c.referral_id.in_(owners))
                .order_by(requests.c.referral_id, requests.c.position)
            )
        ).mappings()
        cases: dict[str, Progress] = {}
        for row in rows:
            case = cases.get(row["referral_id"])
            if case is None:
                case = cases[row["referral_id"]] = Progress(
                    row["referral_id"], row["referral_status"], row["referral_closed_at"], []
                )
            case.requests.append(Request(**{n: row[n] for n in _REQUEST_COLUMNS if n != "details"}))
        self._progress_loaded = {
            case.id: ((case.status, case.closed_at), {r.id: _progress_row(r) for r in case.requests})
            for case in cases.values()
        }
        return {r.id: case for case in cases.values() for r in case.requests if r.id in request_ids}

    async def save_progress(self, cases: list[Progress]) -> None:
        """Write what changed since `progress_of`: one UPDATE of many rows per set of columns changed."""
        request_rows: dict[tuple[str, ...], list[dict]] = {}
        referral_rows: list[dict] = []
        for case in cases:
            (status, closed_at), before = self._progress_loaded[case.id]
            if (case.status, case.closed_at) != (status, closed_at):
                referral_rows.append({"b_id": case.id, "b_status": case.status, "b_closed_at": case.closed_at})
            for request in case.requests:
                row = _progress_row(request)
                changed = tuple(c for c in _PROGRESS_COLUMNS if row[c] != before[request.id][c])
                if changed:
                    request_rows.setdefault(changed, []).append(
                        {"b_id": request.id, **{"b_" + c: row[c] for c in changed}}
                    )
        for columns, rows in request_rows.items():
            await self._session.execute(
                update(requests)
                .where(requests.c.id == bindparam("b_id"))
                .values({c: bindparam("b_" + c) for c in columns}),
                rows,
            )
        if referral_rows:
            await self._session.execute(
                update(referrals)
                .where(referrals.c.id == bindparam("b_id"))
                .values(status=bindparam("b_status"), closed_at=bindparam("b_closed_at")),
                referral_rows,
            )

    async def save(self, referral: Referral) -> None:
        """Write what changed since `get` (sealed again if the resident did), and the new history entries."""
        keyring = self.uow.keyring
        before, requests_before = self._loaded[referral.id]
        now = _row(referral)
        changed = {k: v for k, v in now.items() if before.get(k) != v}
        personal_changed = any(f in changed for f in _REFERRALS.blob.fields)
        values = {k: v for k, v in changed.items() if k not in _REFERRALS.blob.fields}
        if referral.erased_at is not None:
            if personal_changed:
                values.update(personal=keyring.seal_json(referral.personal), **_ERASED_INDEXES)
        elif personal_changed:
            values.update(_REFERRALS.seal_fields(referral.personal, keyring))
        if values:
            await self._session.execute(update(referrals).where(referrals.c.id == referral.id).values(**values))
        for request in referral.requests:
            row = _request_row(referral.id, request)
            delta = {k: v for k, v in row.items() if requests_before[request.id].get(k) != v}
            if "details" in delta:
                delta["sealed_details"] = keyring.seal_text(delta.pop("details"))
            if delta:
                await self._session.execute(update(requests).where(requests.c.id == request.id).values(**delta))
        if referral.changes:
            await self._session.execute(
                insert(referral_changes),
                [
                    _CHANGES.seal(
                        {
                            "referral_id": referral.id,
                            "at": c.at,
                            "by": c.by,
                            "kind": c.kind,
                            "fields": c.fields,
                            "note": c.note,
                        },
                        keyring,
                    )
                    for c in referral.changes
                ],
            )
            referral.changes = []
        self._loaded[referral.id] = (now, {q.id: _request_row(referral.id, q) for q in referral.requests})

    async def erase_history(self, referral: Referral) -> None:
        """An erased referral's notes, and the events still held in the outbox about it, erased in place."""
        await self._session.execute(
            update(referral_changes).where(referral_changes.c.referral_id == referral.id).values(sealed_note=None)
        )
        outbox = self.uow.outbox
        held = (
            await self._session.execute(select(outbox.c.id, outbox.c.payload).where(outbox.c.key == referral.id))
        ).all()
        for outbox_id, payload in held:
            redacted = redact_stored_event(payload, self.uow.keyring)
            if redacted != payload:
                await self._session.execute(update(outbox).where(outbox.c.id == outbox_id).values(payload=redacted))

    async def by_idempotency_keys(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
        """Referrals already stored under these (client, key) pairs: {(client, key): (id, body hash, erased_at, reference)}."""
        if not wanted:
            return {}
        rows = await self._session.execute(
            select(
                referrals.c.idempotency_client,
                referrals.c.idempotency_key,
                referrals.c.id,
                referrals.c.body_hash,
                referrals.c.erased_at,
                referrals.c.reference,
            ).where(referrals.c.idempotency_key.in_({key for _, key in wanted}))
        )
        return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows if (r[0], r[1]) in wanted}

    async def open_people_named(self, name_keys: list[str]) -> list[dict]:
        """Open referrals of people with these name keys (opened: id and personal fields), oldest first.

        An indexed lookup that is usually empty, so almost nothing to open.
        """
        keyring = self.uow.keyring
        indexes = {i for key in name_keys for i in _REFERRALS.lookup("name_index", key, keyring)}
        rows = (
            await self._session.execute(
                select(referrals.c.id, referrals.c.personal, referrals.c.resident_id)
                .where(referrals.c.name_index.in_(indexes), referrals.c.status == domain.OPEN)
                .order_by(referrals.c.received_at)
            )
        ).mappings()
        return [_REFERRALS.open(r, keyring) for r in rows]

    async def open_requests_of(self, referral_ids: set[str]) -> dict[str, dict[str, str]]:
        """{referral id: {type: open request id}}."""
        found: dict[str, dict[str, str]] = {}
        if referral_ids:
            rows = await self._session.execute(
                select(requests.c.referral_id, requests.c.id, requests.c.type).where(
                    requests.c.referral_id.in_(referral_ids), requests.c.status == domain.OPEN
                )
            )
            for row in rows:
                found.setdefault(row.referral_id, {}).setdefault(row.type, row.id)
        return found

    async def requests_described(self, request_ids: list[str]) -> list[dict]:
        """What an adviser is told of earlier open requests: type, urgency, and their referral's reference and channel."""
        rows = (
            (
                await self._session.execute(
                    select(
                        requests.c.id,
                        requests.c.type,
                        requests.c.urgency,
                        referrals.c.id.label("referral_id"),
                        referrals.c.reference,
                        referrals.c.received_at,
                        referrals.c.channel,
                    )
                    .select_from(requests.join(referrals, referrals.c.id == requests.c.referral_id))
                    .where(requests.c.id.in_(request_ids))
                )
            )
            .mappings()
            .all()
        )
        return [
            {
                "type": r["type"],
                "request_id": r["id"],
                "referral_id": r["referral_id"],
                "reference": r["reference"],
                "received_at": r["received_at"],
                "channel": r["channel"],
                "urgency": r["urgency"],
            }
            for r in rows
        ]

    async def search(
        self,
        *,
        reference: str | None,
        postcode: str | None,
        phone: str | None,
        name: str | None,
        date_of_birth: date | None,
        limit: int,
    ) -> list[dict]:
        """Summaries of the referrals matching every criterion given, newest first."""
        keyring = self.uow.keyring
        query = select(referrals).order_by(referrals.c.received_at.desc()).limit(limit)
        if reference:
            query = query.where(referrals.c.reference == reference)
        if postcode:
            query = query.where(referrals.c.postcode_index.in_(_REFERRALS.lookup("postcode_index", postcode, keyring)))
        if phone:
            query = query.where(referrals.c.phone_index.in_(_REFERRALS.lookup("phone_index", phone, keyring)))
        if name:
            # Every word of the name given, in any order, whole words only: 'smith' finds 'Jo Smith', 'smi' does not.
            for word in domain.name_key(name).split():
                query = query.where(
                    or_(
                        *(
                            referrals.c.name_words.like(f"%{index}%")
                            for index in _REFERRALS.lookup("name_words", word, keyring)
                        )
                    )
                )
        rows = [_REFERRALS.open(r, keyring) for r in (await self._session.execute(query)).mappings()]
        if date_of_birth is not None:  # compared once opened: it has no index
            rows = [r for r in rows if r["date_of_birth"] == date_of_birth]
        return await self._summaries(rows)

    async def _summaries(self, rows: list[dict]) -> list[dict]:
        types: dict[str, list[str]] = {}
        if rows:
            for referral_id, request_type in (
                await self._session.execute(
                    select(requests.c.referral_id, requests.c.type)
                    .where(requests.c.referral_id.in_([r["id"] for r in rows]))
                    .order_by(requests.c.position)
                )
            ).all():
                types.setdefault(referral_id, []).append(request_type)
        return [
            {
                "id": r["id"],
                "reference": r["reference"],
                "status": r["status"],
                "received_at": r["received_at"],
                "name": r["name"],
                "postcode": r["postcode"],
                "request_types": types.get(r["id"], []),
            }
            for r in rows
        ]

    async def resident_of(self, identifier: str) -> str:
        """The resident an id names: a resident's id (one merged away names the one it was merged into),
        or one of their referrals' id or reference. NotFound."""
        reference = domain.normalise_reference(identifier)
        column = referrals.c.reference if domain.looks_like_reference(reference) else None
        if column is not None:
            found = await self._session.scalar(select(referrals.c.resident_id).where(column == reference))
        else:
            found = await self._session.scalar(
                select(referrals.c.resident_id)
                .where(or_(referrals.c.resident_id == identifier, referrals.c.id == identifier))
                .limit(1)
            )
        if found is None:
            merged_into = await self._session.scalar(
                select(resident_merges.c.into_id)
                .where(resident_merges.c.merged_id == identifier)
                .order_by(resident_merges.c.id.desc())
                .limit(1)
            )
            if merged_into is not None:
                return await self.resident_of(merged_into)
            raise NotFound(f"no resident or referral {identifier}")
        return found

    async def of_resident(self, resident_id: str) -> list[Referral]:
        """Every referral of a resident, oldest first."""
        ids = (
            await self._session.scalars(
                select(referrals.c.id).where(referrals.c.resident_id == resident_id).order_by(referrals.c.received_at)
            )
        ).all()
        return [await self.get(referral_id) for referral_id in ids]

    async def record_merge(self, *, merged_id: str, into_id: str, referral_ids: list[str], by: str, at) -> None:
        await self._session.execute(
            insert(resident_merges).values(
                merged_id=merged_id, into_id=into_id, referral_ids=referral_ids, by=by, at=at
            )
        )

    async def merges_into(self, resident_id: str) -> list[dict]:
        """The residents merged into this one (ids, when, by whom), oldest first; merges into those too."""
        rows = (
            (
                await self._session.execute(
                    select(
                        resident_merges.c.merged_id,
                        resident_merges.c.into_id,
                        resident_merges.c.referral_ids,
                        resident_merges.c.by,
                        resident_merges.c.at,
                    )
                    .where(resident_merges.c.into_id == resident_id)
                    .order_by(resident_merges.c.id)
                )
            )
            .mappings()
            .all()
        )
        found = [dict(r) for r in rows]
        for row in list(found):
            found += await self.merges_into(row["merged_id"])
        return sorted(found, key=lambda r: r["at"])

    async def past_retention(self, *, cutoff, limit: int) -> list[str]:
        """Ids of the closed or cancelled referrals unchanged since `cutoff` (and taken before it), oldest first."""
        return list(
            (
                await self._session.scalars(
                    select(referrals.c.id)
                    .where(
                        referrals.c.erased_at.is_(None),
                        referrals.c.status != domain.OPEN,
                        func.coalesce(referrals.c.closed_at, referrals.c.updated_at) < cutoff,
                        referrals.c.created_at < cutoff,
                    )
                    .order_by(referrals.c.received_at)
                    .limit(limit)
                )
            ).all()
        )

    async def flag_open_taken_before(self, cutoff, *, at) -> int:
        """Mark the open referrals taken before `cutoff` for review; return how many."""
        result = await self._session.execute(
            update(referrals)
            .where(
                referrals.c.erased_at.is_(None),
                referrals.c.status == domain.OPEN,
                referrals.c.retention_review_at.is_(None),
                referrals.c.created_at < cutoff,
            )
            .values(retention_review_at=at)
        )
        return result.rowcount or 0

    async def flagged_for_review(self, *, limit: int) -> list[dict]:
        rows = (
            (
                await self._session.execute(
                    select(
                        referrals.c.id,
                        referrals.c.reference,
                        referrals.c.received_at,
                        referrals.c.created_at,
                        referrals.c.retention_review_at,
                        referrals.c.district,
                    )
                    .where(
                        referrals.c.retention_review_at.is_not(None),
                        referrals.c.status == domain.OPEN,
                        referrals.c.erased_at.is_(None),
                    )
                    .order_by(referrals.c.created_at)
                    .limit(limit)
                )
            )
            .mappings()
            .all()
        )
        return [dict(r) for r in rows]

    async def requests_after(self, after: str | None, *, limit: int) -> list:
        """Every request (no personal data) with its referral's channel, district and time, in id order."""
        query = (
            select(
                requests.c.id,
                requests.c.referral_id,
                requests.c.type,
                requests.c.urgency,
                requests.c.status,
                requests.c.duplicate_of,
                requests.c.cancel_reason,
                requests.c.cancelled_at,
                referrals.c.channel,
                referrals.c.district,
                referrals.c.received_at,
                referrals.c.resident_id,
            )
            .join(referrals, referrals.c.id == requests.c.referral_id)
            .order_by(requests.c.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(requests.c.id > after)
        return list((await self._session.execute(query)).all())

    async def history(self, referral_id: str) -> list[Change]:
        rows = (
            await self._session.execute(
                select(referral_changes)
                .where(referral_changes.c.referral_id == referral_id)
                .order_by(referral_changes.c.id)
            )
        ).mappings()
        return [
            Change(r["kind"], r["fields"], r["by"], r["at"], self.uow.keyring.open_text(r["sealed_note"])) for r in rows
        ]


class RequestTypes:
    """The request-type taxonomy: `uow.request_types`."""

    def __init__(self, uow):
        self.uow = uow

    async def active(self) -> frozenset[str]:
        return frozenset(await self.uow.session.scalars(select(request_types.c.id).where(request_types.c.active)))

    async def all(self) -> list[dict]:
        rows = await self.uow.session.execute(
            select(request_types).order_by(request_types.c.position, request_types.c.id)
        )
        return [dict(r) for r in rows.mappings()]

    async def get(self, type_id: str) -> dict | None:
        row = (
            (await self.uow.session.execute(select(request_types).where(request_types.c.id == type_id)))
            .mappings()
            .first()
        )
        return None if row is None else dict(row)

    async def add(self, rows: list[dict]) -> None:
        if rows:
            await self.uow.session.execute(insert(request_types), rows)

    async def last_position(self) -> int:
        return (
            await self.uow.session.scalar(
                select(request_types.c.position).order_by(request_types.c.position.desc()).limit(1)
            )
        ) or 0

    async def change(self, type_id: str, values: dict) -> None:
        await self.uow.session.execute(update(request_types).where(request_types.c.id == type_id).values(**values))


# `uow.referrals`, `uow.request_types` in every unit of work of this service.
tables.repositories.update(referrals=Referrals, request_types=RequestTypes)
