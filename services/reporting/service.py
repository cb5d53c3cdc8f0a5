"""Use cases: fold events into the read models, and rebuild them by replaying topics (the figures: figures.py)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.reporting import domain
from services.reporting.models import (
    action_facts,
    projection_state,
    referral_facts,
    request_counts,
    request_facts,
)
from shared.bus import topic_partitions
from shared.events import (
    REGISTRY,
    AssignmentEscalatedV1,
    AssignmentStatusChangedV1,
    CloudEvent,
    RequestCancelledV1,
    RequestReceivedV1,
    parse_data,
)
from shared.events.actions import ActionEvent
from shared.kafka_security import KafkaSecurity, client_options
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

REQUEST_EVENTS = (
    RequestReceivedV1.type,
    RequestCancelledV1.type,
    AssignmentStatusChangedV1.type,
    AssignmentEscalatedV1.type,
)
ACTION_EVENTS = tuple(cls.type for cls in REGISTRY.values() if issubclass(cls, ActionEvent))
EVENT_TYPES = REQUEST_EVENTS + ACTION_EVENTS
REQUEST_FACT_COLUMNS = [c.name for c in request_facts.columns]


def _upsert(uow: UnitOfWork, table):
    return (pg_insert if uow.db.dialect == "postgresql" else sqlite_insert)(table)


async def project(uow: UnitOfWork, events: Sequence[CloudEvent]) -> None:
    """Fold events into facts and counts, in this unit of work (the caller commits).

    Works on a batch: facts are loaded once, changed in memory in event order,
    and written back with their count differences in a few statements. The
    facts are locked as they are read (PostgreSQL; SQLite takes the whole
    database at BEGIN), so two projections at once (several instances, or a
    replay beside the live consumer) never lose each other's change; two that
    both create a fact collide on its key, and the consumer retries.
    """
    now = uow.now()
    if uow.db.dialect == "postgresql":
        # Plan the fact lookups for this batch's keys, not once for all: a generic plan
        # cached while the tables were small kept scanning them whole as they grew.
        await uow.session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    request_events = [e for e in events if e.type in REQUEST_EVENTS]
    action_events = [e for e in events if e.type in ACTION_EVENTS]
    if request_events:
        await _project_requests(uow, [(e, parse_data(e)) for e in request_events], now=now)
        await _touch(uow, "requests", now)
    if action_events:
        await _project_actions(uow, [parse_data(e) for e in action_events], now=now)
        await _touch(uow, "actions", now)


async def _project_requests(uow: UnitOfWork, parsed: list, *, now: datetime) -> None:
    request_ids = {str(data.request_id) for _, data in parsed}
    referral_ids = {str(data.referral_id) for _, data in parsed}
    facts = {
        row.request_id: dict(row._mapping)
        for row in (
            await uow.session.execute(
                select(request_facts)
                .where(request_facts.c.request_id.in_(request_ids))
                .order_by(request_facts.c.request_id)
                .with_for_update()
            )
        ).all()
    }
    referrals = {
        row.referral_id: dict(row._mapping)
        for row in (
            await uow.session.execute(
                select(referral_facts)
                .where(referral_facts.c.referral_id.in_(referral_ids))
                .order_by(referral_facts.c.referral_id)
                .with_for_update()
            )
        ).all()
    }
    before = {key: domain.request_keys(fact) for key, fact in facts.items()}
    referrals_before = {key: domain.referral_keys(fact) for key, fact in referrals.items()}
    existing, existing_referrals = set(facts), set(referrals)
    changed_referrals: set[str] = set()

    for _event, data in parsed:
        request_id, referral_id = str(data.request_id), str(data.referral_id)
        fact = facts.get(request_id)
        if fact is None:
            fact = facts[request_id] = domain.new_request_fact(request_id, referral_id)
            before[request_id] = []
        referral = referrals.get(referral_id)
        if referral is None:
            referral = referrals[referral_id] = domain.new_referral_fact(referral_id)
            referrals_before[referral_id] = []
        if isinstance(data, RequestReceivedV1):
            domain.apply_request_received(fact, data)
            referral.update(channel=data.channel, received_at=data.received_at, received_day=data.received_at.date())
        elif isinstance(data, RequestCancelledV1):
            domain.apply_request_cancelled(fact, data)
        elif isinstance(data, AssignmentStatusChangedV1):
            domain.apply_status_changed(fact, data)
        elif isinstance(data, AssignmentEscalatedV1):
            domain.apply_escalated(fact, data)
        if referral["district"] == domain.UNKNOWN and fact["district"] != domain.UNKNOWN:
            referral["district"] = fact["district"]
        fact["updated_at"] = now
        changed_referrals.add(referral_id)

    deltas: Counter = Counter()
    for key, fact in facts.items():
        domain.count_changes(before[key], domain.request_keys(fact), deltas)
    for key in changed_referrals:
        domain.count_changes(referrals_before[key], domain.referral_keys(referrals[key]), deltas)

    session = uow.session
    new_facts = [f for k, f in facts.items() if k not in existing]
    if new_facts:
        await session.execute(insert(request_facts), [_columns(f) for f in new_facts])
    changed = [{"b_" + k: v for k, v in _columns(facts[key]).items()} for key in facts.keys() & existing]
    if changed:
        await session.execute(
            update(request_facts)
            .where(request_facts.c.request_id == bindparam("b_request_id"))
            .values({c: bindparam("b_" + c) for c in REQUEST_FACT_COLUMNS if c != "request_id"}),
            changed,
        )
    referral_columns = [c.name for c in referral_facts.columns]
    rows = [{c: referrals[key].get(c) for c in referral_columns} | {"updated_at": now} for key in changed_referrals]
    new_referrals = [row for row in rows if row["referral_id"] not in existing_referrals]
    if new_referrals:
        await session.execute(insert(referral_facts), new_referrals)
    changed_referral_rows = [
        {"b_" + k: v for k, v in row.items()} for row in rows if row["referral_id"] in existing_referrals
    ]
    if changed_referral_rows:
        await session.execute(
            update(referral_facts)
            .where(referral_facts.c.referral_id == bindparam("b_referral_id"))
            .values({c: bindparam("b_" + c) for c in referral_columns if c != "referral_id"}),
            changed_referral_rows,
        )
    changes = [
        {"day": k[0], "district": k[1], "dimension": k[2], "value": k[3], "count": n}
        for k, n in sorted(deltas.items())
        if n
    ]
    if changes:
        statement = _upsert(uow, request_counts)
        statement = statement.on_conflict_do_update(
            index_elements=["day", "district", "dimension", "value"],
            set_={"count": request_counts.c.count + statement.excluded.count},
        )
        await session.execute(statement, changes)


def _columns(fact: dict) -> dict:
    return {name: fact[name] for name in REQUEST_FACT_COLUMNS}


async def _project_actions(uow: UnitOfWork, actions: list[ActionEvent], *, now: datetime) -> None:
    latest: dict[str, ActionEvent] = {}
    for data in actions:
        latest[str(data.action_id)] = data  # each event is the action's whole state
    stored = {
        row.action_id: row.changed_at
        for row in (
            await uow.session.execute(
                select(action_facts.c.action_id, action_facts.c.changed_at)
                .where(action_facts.c.action_id.in_(latest))
                .with_for_update()
            )
        ).all()
    }
    for action_id, data in latest.items():
        changed_at = _changed_at(data)
        if action_id in stored and stored[action_id] > changed_at:
            continue  # a newer state is already here
        values = dict(
            action_id=action_id,
            plan=data.plan,
            cell=data.cell,
            number=data.number,
            theme=data.theme,
            kind=data.kind,
            priority=data.priority,
            timescale=data.timescale,
            status=data.status,
            rag=data.rag,
            progress=data.progress,
            baseline_due_date=data.baseline_due_date,
            due_date=data.due_date,
            changed_at=changed_at,
            updated_at=now,
        )
        if action_id in stored:
            await uow.session.execute(update(action_facts).where(action_facts.c.action_id == action_id).values(values))
        else:
            await uow.session.execute(insert(action_facts).values(values))


def _changed_at(data: ActionEvent) -> datetime:
    for name in ("changed_at", "created_at", "recorded_at"):
        value = getattr(data, name, None)
        if value is not None:
            return value
    raise ValueError("an action event without a time")


async def _touch(uow: UnitOfWork, model: str, now: datetime) -> None:
    statement = _upsert(uow, projection_state).values(model=model, version=1, updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=["model"],
        set_={"version": projection_state.c.version + 1, "updated_at": statement.excluded.updated_at},
    )
    await uow.session.execute(statement)


async def clear(uow: UnitOfWork, *, inbox, consumer: str) -> None:
    """Drop every read model and the consumer's inbox (the start of a replay); the caller commits."""
    for table in (request_facts, referral_facts, request_counts, action_facts, projection_state):
        await uow.session.execute(delete(table))
    await uow.session.execute(delete(inbox).where(inbox.c.consumer == consumer))


class ReplayRefused(Exception):
    """The topics cannot rebuild the figures held: replaying them would lose figures. Says why and what to do."""


@dataclass(frozen=True)
class ModelSizes:
    """How much a read model holds: what a rebuild must reach at least."""

    requests: int
    referrals: int
    actions: int

    def short_of(self, other: ModelSizes) -> list[str]:
        """What `self` (rebuilt) holds less of than `other` (held now), in words."""
        return [
            f"{name}: {getattr(self, name):,} rebuilt, {getattr(other, name):,} held now"
            for name in ("requests", "referrals", "actions")
            if getattr(self, name) < getattr(other, name)
        ]


async def model_sizes(uow: UnitOfWork) -> ModelSizes:
    count = lambda table: select(func.count()).select_from(table)  # noqa: E731
    return ModelSizes(
        requests=await uow.session.scalar(count(request_facts)),
        referrals=await uow.session.scalar(count(referral_facts)),
        actions=await uow.session.scalar(count(action_facts)),
    )


REPUBLISH_ADVICE = (
    "Republish what the producing services hold (`kent-together republish referrals`, `… fulfilment`, "
    "`… actions`: each sends its current state again), then replay again; or replay with --force to accept "
    "the smaller figures."
)


async def replay(
    uow_factory,
    *,
    inbox,
    consumer: str,
    bootstrap_servers: str,
    topics: list[str],
    batch_size: int = 500,
    progress=None,
    security: KafkaSecurity | None = None,
    force: bool = False,
) -> int:
    """Rebuild the read models from the topics' beginnings up to their ends now; only if that loses nothing.

    Refused (`ReplayRefused`, nothing changed) when a topic no longer starts at its
    first event (retention dropped some), or when what the topics rebuild holds fewer
    requests, referrals or actions than the figures held now (an embedded broker
    restarted empty, say); `force` rebuilds anyway. The rebuild is one transaction:
    readers see the old figures until it commits, and a failure leaves them as they
    were. Events are recorded in the live consumer's inbox as they are projected, so
    a service running meanwhile (it waits for the rebuild to commit) neither misses
    nor double-counts one. Returns the number of events projected.
    """
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_poll_records=batch_size,
        **client_options(security),
    )
    await reader.start()
    projected = 0
    try:
        partitions = await topic_partitions(reader, topics)
        if partitions:
            starts = await reader.beginning_offsets(partitions)
            trimmed = sorted(
                f"{tp.topic}[{tp.partition}] starts at offset {offset:,}" for tp, offset in starts.items() if offset > 0
            )
            if trimmed and not force:
                raise ReplayRefused(
                    "the topics no longer reach back to their first events (" + "; ".join(trimmed) + "): the broker's "
                    "retention dropped the oldest, and a rebuild would lose what they counted. " + REPUBLISH_ADVICE
                )
        async with uow_factory() as uow:
            before = await model_sizes(uow)
            await clear(uow, inbox=inbox, consumer=consumer)
            if partitions:
                reader.assign(partitions)
                await reader.seek_to_beginning(*partitions)
                # The ends now are a floor, not a stop: the embedded broker can report one
                # short, so read on until the topics have also been quiet for a moment.
                ends = await reader.end_offsets(partitions)
                while True:
                    batches = await reader.getmany(timeout_ms=500, max_records=batch_size)
                    events = [
                        event
                        for messages in batches.values()
                        for message in messages
                        if (event := _event_of(message.value)) is not None
                    ]
                    if events:
                        projected += await _project_into(uow, events, inbox=inbox, consumer=consumer)
                        if progress is not None:
                            progress(projected)
                    if not batches and all([await reader.position(tp) >= ends[tp] for tp in partitions]):
                        break
            after = await model_sizes(uow)
            short = after.short_of(before)
            if short and not force:
                raise ReplayRefused(
                    f"the topics hold {projected:,} events, fewer than the figures were made from ("
                    + "; ".join(short)
                    + "): the broker has lost events (the embedded one forgets everything when "
                    "it stops). Nothing was changed. " + REPUBLISH_ADVICE
                )
            await uow.commit()
    finally:
        await reader.stop()
    return projected


def _event_of(raw: bytes | None) -> CloudEvent | None:
    try:
        event = CloudEvent.from_bytes(raw or b"")
    except ValueError:
        return None  # the live consumer dead-letters what is not an event
    return event if event.type in EVENT_TYPES else None


async def _project_into(uow: UnitOfWork, events: list[CloudEvent], *, inbox, consumer: str) -> int:
    """Project the events not yet in the inbox, recording them there, in `uow` (the caller commits)."""
    unique = {str(e.id): e for e in events}
    now = uow.now()
    # As the live consumer does: the ids the insert returns are the new events.
    recorded = set(
        await uow.session.scalars(
            _upsert(uow, inbox).on_conflict_do_nothing().returning(inbox.c.event_id),
            [{"consumer": consumer, "event_id": key, "processed_at": now} for key in unique],
        )
    )
    fresh = [event for key, event in unique.items() if key in recorded]
    if fresh:
        await project(uow, fresh)
    return len(fresh)
